#!/usr/bin/env bash
# Shared functions of the aimms-ops host scripts, inlined where a script asks
# for them (an include line), so every script that runs or is installed is one file.

# The name of a backup: retention.NAME_RE, written in by the package when a script is
# rendered. Groups 1 and 2 are its UTC date and time, 4 its label, 5 its ending.
# shellcheck disable=SC2034  # read by the scripts that include this file
BACKUP_NAME_RE='@BACKUP_NAME_ERE@'
# The compressions a backup is made with and the file name ending of each, in the same
# order (retention.EXTENSIONS, written in the same way); the first is the default.
# shellcheck disable=SC2206  # the lists are plain words
BACKUP_COMPRESSIONS=(@BACKUP_COMPRESSIONS@) BACKUP_EXTENSIONS=(@BACKUP_EXTENSIONS@)

# backup_ext COMPRESSION: the file name ending of a backup made with COMPRESSION.
backup_ext() {
    local i
    for i in "${!BACKUP_COMPRESSIONS[@]}"; do
        if [ "${BACKUP_COMPRESSIONS[$i]}" = "$1" ]; then
            printf '%s' "${BACKUP_EXTENSIONS[$i]}"
            return 0
        fi
    done
    return 1
}

# backup_files DIR [FIND_ACTION...]: the backup files in DIR, every compression (find's
# -type f -name tests, then FIND_ACTION, e.g. -printf '%f\n'; without one, the paths).
backup_files() {
    local dir=$1 ext names=()
    shift
    for ext in "${BACKUP_EXTENSIONS[@]}"; do names+=(-o -name "aimms_postgres_*$ext"); done
    find "$dir" -maxdepth 1 -type f \( "${names[@]:1}" \) "$@"
}

# The host's lock files in the backup dir (aimms_ops.core.layout.LOCK_FILES), written in
# the same way; the host program is the one way to hold them (aimms_ops/core/lock.py).
# shellcheck disable=SC2034  # read by the scripts that include this file
CLUSTER_LOCK='@CLUSTER_LOCK@' BACKUP_LOCK='@BACKUP_LOCK@' VERIFY_LOCK='@VERIFY_LOCK@'

# sha256_stream: the sha256 of stdin, in hex, on stdout. openssl where it works (about
# three times sha256sum's speed where the CPU has SHA instructions), else sha256sum.
sha256_stream() {
    local out
    if command -v openssl >/dev/null 2>&1 && printf '' | openssl dgst -sha256 -r >/dev/null 2>&1; then
        out=$(openssl dgst -sha256 -r) || return
    else
        out=$(sha256sum) || return
    fi
    printf '%s\n' "${out%% *}"
}

# file_facts KEY PATH: KEY.sha256= and KEY.mode= of an installed file (the sha256 empty,
# and no mode, when it is absent).
file_facts() {
    if [ -f "$2" ]; then
        echo "$1.sha256=$(sha256_stream <"$2")"
        echo "$1.mode=$(stat -c %a -- "$2")"
    else
        echo "$1.sha256="
    fi
}

# missing_tools TOOL...: print those of TOOLs that are not on the PATH (space-separated).
missing_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    printf '%s' "${missing[*]}"
}

# ISO 8601 UTC timestamp.
now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# compose_project_label NAME: the project label compose puts on containers
# (lower case; characters other than a-z 0-9 - _ removed, as v1 and v2 do).
compose_project_label() {
    local p="${1,,}"
    printf '%s' "$p" | tr -cd 'a-z0-9_-'
}

# compose_cmd: set the array COMPOSE to "docker compose" (v2) or "docker-compose" (v1).
compose_cmd() {
    if docker compose version >/dev/null 2>&1; then
        # shellcheck disable=SC2034
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        # shellcheck disable=SC2034
        COMPOSE=(docker-compose)
    else
        # shellcheck disable=SC2034  # used by the scripts that include this file
        COMPOSE=()
        return 1
    fi
}

# resolve_container PROJECT SERVICE [all]: print the id of the service's container,
# found by compose's labels (v1 and v2 name containers differently). With "all",
# stopped containers count too. Prints nothing when there is none.
resolve_container() {
    local label
    label=$(compose_project_label "$1")
    local args=(ps -q --filter "label=com.docker.compose.project=$label"
                --filter "label=com.docker.compose.service=$2")
    [ "${3:-}" = all ] && args+=(-a)
    docker "${args[@]}" 2>/dev/null | sed -n 1p
}

# The host program (aimms_ops/agent, standard library only): beside this script, where
# fab install-backups installs it beside the backup script and where fab sends it with
# every script. The logic both sides share runs there: the locks, retention, pins, the
# size-drop guard, the units.
AIMMS_OPS_PROGRAM=${AIMMS_OPS_PROGRAM:-$(dirname -- "${BASH_SOURCE[0]:-$0}")/aimms-ops.pyz}
agent() { python3 "$AIMMS_OPS_PROGRAM" "$@"; }

# need_python3 WHAT: exit 69, naming WHAT, when this host has no python3.
need_python3() {
    command -v python3 >/dev/null 2>&1 && return 0
    echo "aimms-ops: python3 is not installed on this host; $1 needs it (install python3)" >&2
    exit 69
}

# pick_compressor LEVEL [auto|igzip|pigz|gzip]: set ZIP (the compressor at LEVEL, stdin
# to stdout), ZIP_NAME and ZIP_LEVEL. igzip (ISA-L) when present, else pigz, else gzip:
# all three write the same gzip format, read by any gunzip. igzip's levels are 0-3
# (ISA-L has no more); a higher LEVEL becomes 3. Fails for a named tool that is absent.
# shellcheck disable=SC2034  # ZIP* are used by the scripts that include this file
pick_compressor() {
    local level=$1 want=${2:-auto} tool
    for tool in igzip pigz gzip; do
        [ "$want" = auto ] || [ "$want" = "$tool" ] || continue
        command -v "$tool" >/dev/null 2>&1 || continue
        ZIP_NAME=$tool
        ZIP_LEVEL=$level
        if [ "$tool" = igzip ] && [ "$level" -gt 3 ]; then ZIP_LEVEL=3; fi
        ZIP=("$tool" -c -"$ZIP_LEVEL")
        return 0
    done
    return 1
}

# pick_decompressor [FILE]: set UNZIP to the decompressor of FILE (stdin to stdout):
# zstd for a .zst (a .sql.zst backup), else the fastest gzip decompressor present:
# igzip, else pigz, else gzip. Fails when there is none (UNZIP_MISSING then names what
# to install).
# shellcheck disable=SC2034,SC2120  # UNZIP is used by the scripts that include this file
pick_decompressor() {
    local tool zst
    UNZIP_MISSING=gzip
    zst=$(backup_ext zstd)
    if [[ ${1:-} == *."${zst##*.}" ]]; then
        UNZIP_MISSING=zstd
        command -v zstd >/dev/null 2>&1 || return 1
        UNZIP=(zstd -q -dc)
        return 0
    fi
    for tool in igzip pigz gzip; do
        if command -v "$tool" >/dev/null 2>&1; then
            UNZIP=("$tool" -dc)
            return 0
        fi
    done
    return 1
}

# compressor_facts: key=value lines naming the gzip compressor a backup run here would
# use (with this PATH: the settings file gives cron the same one), and which of the
# compressors are installed (zstd too, for a host whose compression is zstd).
compressor_facts() {
    local tool have=""
    for tool in igzip pigz gzip zstd; do
        if command -v "$tool" >/dev/null 2>&1; then have="$have${have:+ }$tool"; fi
    done
    if pick_compressor 1; then echo "compressor.name=$ZIP_NAME"; else echo "compressor.name="; fi
    if pick_decompressor; then echo "compressor.check=${UNZIP[0]}"; else echo "compressor.check="; fi
    echo "compressor.have=$have"
}


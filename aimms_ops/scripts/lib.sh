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

# compose_project_label NAME: the project label compose puts on containers
# (lower case; characters other than a-z 0-9 - _ removed, as v1 and v2 do).
compose_project_label() {
    local p="${1,,}"
    printf '%s' "$p" | tr -cd 'a-z0-9_-'
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

# The locks this script holds (aimms_ops/core/lock.py is the model: names, modes, notes).
LOCK_NOTES=()
LOCK_FDS=()
# shellcheck disable=SC2034  # read by the scripts that include this file
LOCK_HELD_BY=""

# need_python3 WHAT: exit 69, naming WHAT, when this host has no python3.
need_python3() {
    command -v python3 >/dev/null 2>&1 && return 0
    echo "aimms-ops: python3 is not installed on this host; $1 needs it (install python3)" >&2
    exit 69
}

# running_container PROJECT SERVICE: the id of the service's running container on
# stdout, or exit 10 saying it is not running.
running_container() {
    local id
    id=$(resolve_container "$1" "$2")
    if [ -z "$id" ]; then
        echo "aimms-ops: the $2 container of compose project $1 is not running" >&2
        exit 10
    fi
    echo "$id"
}

# lock_cluster LOCK WAIT WHAT: hold the cluster lock exclusive for WHAT, waiting up to
# WAIT seconds; exit 75 naming its holder, 73 when it cannot be opened.
lock_cluster() {
    mkdir -p -- "$(dirname -- "$1")" 2>/dev/null || true
    take_lock "$1" exclusive "$2" "$3"
    case $? in
        0) ;;
        75) echo "aimms-ops: the cluster is busy after ${2}s: another restore, rebuild or backup holds it (${LOCK_HELD_BY:-unknown holder}); wait for it to end" >&2
            exit 75 ;;
        *) echo "aimms-ops: cannot open the lock $1" >&2; exit 73 ;;
    esac
}

# take_lock LOCK shared|exclusive WAIT WHAT: hold LOCK until this script exits: the host
# program locks this script's descriptor of it (inherited by the commands it starts,
# which hold it as long as they run) and leaves the note that names WHAT. Waits up to
# WAIT seconds (0: not at all). Returns 75 with LOCK_HELD_BY set to the holders when it
# cannot have it, 73 when it cannot be locked.
take_lock() {
    local lock=$1 fd out rc=0 shared=()
    [ "$2" = shared ] && shared=(--shared)
    LOCK_HELD_BY=""
    exec {fd}>>"$lock" || return 73
    out=$(agent lock "$lock" --fd "$fd" --pid "$$" --what "$4" --wait "$3" "${shared[@]}") || rc=$?
    if [ "$rc" != 0 ]; then
        exec {fd}>&-
        # shellcheck disable=SC2034  # read by the scripts that include this file
        [ "$rc" = 75 ] && LOCK_HELD_BY=${out#held by } && return 75
        return 73
    fi
    LOCK_NOTES+=("$out")
    LOCK_FDS+=("$fd")
    return 0
}

# drop_lock_notes: remove this script's owner notes (call it from the EXIT trap).
drop_lock_notes() {
    local f
    for f in "${LOCK_NOTES[@]}"; do rm -f -- "$f" 2>/dev/null; done
    return 0
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

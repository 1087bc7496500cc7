#!/usr/bin/env bash
# Shared functions of the aimms-ops host scripts, inlined where a script asks
# for them (an include line), so every script that runs or is installed is one file.

# say LINE: print LINE on stdout, from a subshell. The operator's session may end while
# a script runs (a dropped connection, Ctrl-C): a write to it then fails (SIGPIPE), which
# kills only the subshell, so the script can go on (and clean up) without its session.
# Returns non-zero when the line could not be written.
say() { (printf '%s\n' "$1") 2>/dev/null; }

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
# the same way; take_lock below is the one way to hold them.
# shellcheck disable=SC2034  # read by the scripts that include this file
CLUSTER_LOCK='@CLUSTER_LOCK@' BACKUP_LOCK='@BACKUP_LOCK@' VERIFY_LOCK='@VERIFY_LOCK@'

# read_settings DEFAULT... -- ARG...: source the settings file of every --config FILE
# among ARGs (in order), or, when there is none, the first DEFAULT file that exists (the
# settings installed beside the script). Flags parsed after it override what it set.
# An unreadable file is a usage error (the script's usage_error).
read_settings() {
    local _defaults=() _given=0 _i _conf
    while [ $# -gt 0 ] && [ "$1" != -- ]; do _defaults+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    local _args=("$@")
    for ((_i = 0; _i < ${#_args[@]}; _i++)); do
        [ "${_args[$_i]}" = --config ] || continue
        _given=1
        _conf=${_args[$((_i + 1))]:-}
        [ -r "$_conf" ] || usage_error "cannot read config file: $_conf"
        # shellcheck source=/dev/null
        . "$_conf"
    done
    [ "$_given" = 0 ] || return 0
    for _conf in "${_defaults[@]}"; do
        [ -f "$_conf" ] || continue
        [ -r "$_conf" ] || usage_error "cannot read config file: $_conf"
        # shellcheck source=/dev/null
        . "$_conf"
        return 0
    done
}

# require_settings HINT: the settings every script needs, else a usage error (HINT says
# where they come from).
require_settings() {
    [ -n "$BACKUP_DIR" ] || usage_error "BACKUP_DIR is not set (--backup-dir, or $1)"
    [ -n "$LOG_FILE" ] || usage_error "LOG_FILE is not set (--log-file)"
    [ -n "$COMPOSE_PROJECT" ] || usage_error "COMPOSE_PROJECT is not set (--project)"
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

# release_locks: let go of every lock this script took, before it exits (e.g. before a
# slow last step that needs none, such as a ping).
release_locks() {
    local fd
    for fd in "${LOCK_FDS[@]}"; do exec {fd}>&-; done
    LOCK_FDS=()
    drop_lock_notes
}

# drop_lock_notes: remove this script's owner notes (call it from the EXIT trap).
drop_lock_notes() {
    local f
    for f in "${LOCK_NOTES[@]}"; do rm -f -- "$f" 2>/dev/null; done
    return 0
}

# unhex HEX: the bytes HEX stands for (names cross between scripts as hex).
unhex() { printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"; }

# conninfo_db NAME: a libpq connection string for database NAME, whatever it holds
# (psql -d takes a name with = in it for a connection string).
conninfo_db() {
    local v=${1//\\/\\\\}
    v=${v//\'/\\\'}
    printf "dbname='%s'" "$v"
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

# pick_zstd LEVEL: set ZIP to zstd at LEVEL with a thread per core (stdin to stdout),
# ZIP_NAME and ZIP_LEVEL. Fails when zstd is not installed.
# shellcheck disable=SC2034  # ZIP* are used by the scripts that include this file
pick_zstd() {
    command -v zstd >/dev/null 2>&1 || return 1
    ZIP_NAME=zstd
    ZIP_LEVEL=$1
    ZIP=(zstd -q -T0 -"$1" -c)
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

# human BYTES: a size in the one unit format (aimms_ops/core/units.py): 1.9 MiB.
human() { agent size "$1"; }

# --- pings ---------------------------------------------------------------------------
# ping_send KIND URL EVENT RID [MSG] [BODY_FILE] [MS]: tell a monitor how a run goes.
#   KIND healthchecks: EVENT start -> URL/start, ok -> URL/0, exit:N -> URL/N,
#     fail -> URL/fail, log -> URL/log (a message, no state change); ?rid=RID pairs the
#     start with its end; BODY_FILE (at most 100 kB) is POSTed.
#   KIND uptime-kuma: URL?status=up|down&msg=MSG&ping=MS (ok and log are up, start is
#     not sent: Uptime Kuma has no start signal).
# curl only, bounded by PING_TIMEOUT seconds (ping.timeout, default 45): each try gets a
# third of it (at most 10 s), --retry 3 (refused connections too), no new try after two
# thirds, and the whole call is killed at PING_TIMEOUT. The URL goes to curl on stdin,
# not on its command line. Prints curl's error on failure; never fails the caller's run.
ping_send() {
    local kind=$1 url=$2 event=$3 rid=$4 msg=${5:-} body=${6:-} ms=${7:-} full args err
    local bound=${PING_TIMEOUT:-@DEFAULT_PING_TIMEOUT@} try
    [[ $bound =~ ^[0-9]+$ ]] && [ "$bound" -ge 3 ] || bound=@DEFAULT_PING_TIMEOUT@
    command -v curl >/dev/null 2>&1 || { echo "curl is not installed on the host"; return 1; }
    try=$((bound / 3 < 10 ? bound / 3 : 10))
    args=(-fsS -m "$try" --retry 3 --retry-connrefused --retry-max-time $((bound * 2 / 3))
          -o /dev/null -K -)
    case $kind in
        healthchecks)
            case $event in
                start) full="${url%/}/start" ;;
                ok) full="${url%/}/0" ;;
                exit:*) full="${url%/}/${event#exit:}" ;;
                fail) full="${url%/}/fail" ;;
                log) full="${url%/}/log" ;;
                *) echo "unknown ping event $event"; return 1 ;;
            esac
            full="$full?rid=$rid"
            if [ -n "$body" ] && [ -r "$body" ]; then
                args+=(--data-binary "@$body" -H 'Content-Type: text/plain')
            fi
            ;;
        uptime-kuma)
            [ "$event" != start ] || return 0
            local state=down
            case $event in ok | log) state=up ;; esac
            full=$url
            args+=(-G --data-urlencode "status=$state" --data-urlencode "msg=${msg:0:200}")
            [ -z "$ms" ] || args+=(--data-urlencode "ping=$ms")
            ;;
        *) echo "unknown ping kind $kind"; return 1 ;;
    esac
    if err=$(printf 'url = "%s"\n' "$full" | timeout -k 2 "$bound" curl "${args[@]}" 2>&1); then
        return 0
    fi
    [ -n "$err" ] || err="no answer within ${bound}s"
    printf '%s\n' "${err//$'\n'/ }"
    return 1
}

# ping_body LOG RUN_ID FILE [FIRST_LINE]: the run's last log lines (at most 100 kB) into FILE.
ping_body() {
    {
        [ -z "${4:-}" ] || printf '%s\n' "$4"
        tail -n 5000 -- "$1" 2>/dev/null | grep -F -- " $2 " | tail -n 200
    } | tail -c 100000 >"$3" 2>/dev/null || true
}

# new_rid: a run id for the monitor (pairs a start ping with its end).
new_rid() { cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "$$-$(date +%s)"; }

# job_ping URL EVENT [MSG] [FIRST_BODY_LINE]: ping URL (nothing when empty) for the
# running job and log how that went, with the job's log (the caller's) lines as the
# body. Uses PING_KIND, PING_RID, LOG_FILE, RUN_ID and STARTED of the caller and its
# log function. Never fails the run; each ping takes at most PING_TIMEOUT seconds.
job_ping() {
    # shellcheck disable=SC2153  # STARTED, like RUN_ID, is the calling script's
    local url=$1 event=$2 body="" why ms=$((($(date +%s) - STARTED) * 1000))
    [ -n "$url" ] || return 0
    if [ "$event" != start ]; then
        body=$(mktemp "${TMPDIR:-/tmp}/aimms-ping.XXXXXX" 2>/dev/null) || body=""
        [ -z "$body" ] || ping_body "$LOG_FILE" "$RUN_ID" "$body" "${4:-}"
    fi
    if why=$(ping_send "$PING_KIND" "$url" "$event" "$PING_RID" "${3:-}" "$body" "$ms"); then
        log "ping $event: ok ($PING_KIND)"
    else
        log "ping $event: failed: $why ($PING_KIND)"
    fi
    [ -z "$body" ] || rm -f -- "$body"
    return 0
}

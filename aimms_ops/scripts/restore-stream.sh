#!/usr/bin/env bash
# restore-stream.sh PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE [LOCK [WAIT]]]
# Replays a pg_dumpall dump into the postgres container of the compose service:
#   SOURCE  "-" to read the dump from stdin (streamed from the operator's machine),
#           or the absolute path of a dump on this host (nothing crosses the network)
#   FORMAT  gz or plain
#   DATABASE  restore only that database's section (recreated first); all when empty
#   LOCK    a lock file that keeps two restores apart; none when empty
#   WAIT    seconds to wait for another restore holding LOCK to end (default 60)
# No copy of the dump anywhere: source | decompress | restore-filter.awk | psql.
# psql runs with ON_ERROR_STOP; the status of every stage is reported on stderr as
# "aimms-ops: status SOURCE UNZIP FILTER PSQL" and the exit status is non-zero when
# any stage failed.
# When the operator's session ends (Ctrl-C, a dropped connection) the restore stops:
# the source stops, the filter then makes psql roll back the table it was loading,
# and nothing goes on unobserved. The stages' messages are kept in a file until the
# end, so a session that is gone cannot kill a stage half-way (SIGPIPE).
set -uo pipefail
umask 077
# @include lib.sh

project=$1 service=$2 superuser=$3 format=$4 source=$5 only=${6:-} lock=${7:-}
lock_wait=${8:-60}

read -r -d '' FILTER <<'AWK'
# @include restore-filter.awk
AWK

cid=$(resolve_container "$project" "$service")
if [ -z "$cid" ]; then
    echo "aimms-ops: the $service container of compose project $project is not running" >&2
    exit 10
fi

case $format in
    gz) pick_decompressor; unzip=("${UNZIP[@]}") ;;  # igzip, else pigz, else gzip
    plain) unzip=(cat) ;;
    *) echo "aimms-ops: unknown format $format" >&2; exit 64 ;;
esac
if [ "$source" != - ] && [ ! -r "$source" ]; then
    echo "aimms-ops: cannot read $source" >&2
    exit 66
fi

if [ -n "$lock" ]; then
    mkdir -p -- "$(dirname -- "$lock")" 2>/dev/null || true
    exec 9>>"$lock" || { echo "aimms-ops: cannot open the restore lock $lock" >&2; exit 73; }
    if ! flock -w "$lock_wait" 9; then
        holder=$(cat -- "$lock.owner" 2>/dev/null || true)
        echo "aimms-ops: another restore is still running on this host after ${lock_wait}s (${holder:-unknown pid}); wait for it to end" >&2
        exit 75
    fi
    printf 'restore pid %s since %s\n' "$$" "$(now_utc)" >"$lock.owner"
fi

# Field N of /proc/PID/stat (2 state, 3 parent pid); the names here have no spaces.
stat_field() { local f; read -r -a f <"/proc/$1/stat" 2>/dev/null && echo "${f[$2]}"; }
# This script's parent changes when the session that started it ends.
session=$(stat_field $$ 3)

# The dump's bytes. From stdin they end with the session anyway; a file here is read
# by a reader that is stopped when the session ends.
read_source() {
    if [ "$source" = - ]; then
        exec cat
    fi
    cat -- "$source" &
    local reader=$! state
    while state=$(stat_field "$reader" 2) && [ "$state" != Z ]; do
        if [ "$(stat_field $$ 3)" != "$session" ]; then
            kill "$reader" 2>/dev/null
            break
        fi
        sleep 0.5
    done
    wait "$reader"
}

errf=$(mktemp "${TMPDIR:-/tmp}/aimms-restore.XXXXXX")
trap 'rm -f -- "$errf"' EXIT
read_source 2>>"$errf" |
    "${unzip[@]}" 2>>"$errf" |
    awk -v only="$only" "$FILTER" 2>>"$errf" |
    docker exec -i -e PGOPTIONS='-c client_min_messages=warning' "$cid" \
        psql -X -q -v ON_ERROR_STOP=1 -U "$superuser" -d postgres -f - >/dev/null 2>>"$errf"
status=("${PIPESTATUS[@]}")
echo "aimms-ops: status ${status[*]}" >>"$errf"
(cat -- "$errf" >&2)
for s in "${status[@]}"; do
    [ "$s" = 0 ] || exit 1
done
exit 0

#!/usr/bin/env bash
# restore-stream.sh PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE_HEX [LOCK [WAIT]]]
# Replays a pg_dumpall dump into the postgres container of the compose service:
#   SOURCE  "-" to read the dump from stdin (streamed from the operator's machine),
#           or the absolute path of a dump on this host (nothing crosses the network)
#   FORMAT  gz, zst or plain
#   DATABASE_HEX  restore only that database's section (its name in hex); all when empty
#   LOCK    the cluster lock (lib.sh), held exclusive; none when empty (the caller holds it)
#   WAIT    seconds to wait for whoever holds LOCK (default 60)
# No copy of the dump anywhere: source | decompress | dumpscan filter | psql. The filter
# (aimms_ops/dumpscan.py, run by python3) reads the dump's structure and changes only
# the statements it means to (see its RestoreFilter). psql runs with ON_ERROR_STOP; the
# status of every stage is reported on stderr as "aimms-ops: status SOURCE UNZIP FILTER
# PSQL" and the exit status is non-zero when any stage failed.
# Before the stream: the postgres database is created when the cluster has none (psql
# starts there), and the properties of template1 and postgres are read from the live
# cluster, for a dump that does not carry them.
# When the operator's session ends (Ctrl-C, a dropped connection) the restore stops:
# the source stops, the filter then makes psql roll back the table it was loading,
# and nothing goes on unobserved. The stages' messages are kept in a file until the
# end, so a session that is gone cannot kill a stage half-way (SIGPIPE).
set -uo pipefail
umask 077
# @include lib.sh

project=$1 service=$2 superuser=$3 format=$4 source=$5 only_hex=${6:-} lock=${7:-}
lock_wait=${8:-60}

read -r -d '' SCANNER <<'PYTHON'
# @include dumpscan.py
PYTHON

if ! command -v python3 >/dev/null 2>&1; then
    echo "aimms-ops: python3 is not installed on this host; the restore needs it to read the dump (install python3)" >&2
    exit 69
fi
cid=$(resolve_container "$project" "$service")
if [ -z "$cid" ]; then
    echo "aimms-ops: the $service container of compose project $project is not running" >&2
    exit 10
fi

case $format in
    gz | zst)  # igzip, else pigz, else gzip; zstd for zst
        if ! pick_decompressor "dump.$format"; then
            echo "aimms-ops: $UNZIP_MISSING is not installed on this host; the restore of a .$format dump needs it (install $UNZIP_MISSING)" >&2
            exit 69
        fi
        unzip=("${UNZIP[@]}") ;;
    plain) unzip=(cat) ;;
    *) echo "aimms-ops: unknown format $format" >&2; exit 64 ;;
esac
if [ "$source" != - ] && [ ! -r "$source" ]; then
    echo "aimms-ops: cannot read $source" >&2
    exit 66
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/aimms-restore.XXXXXX") || exit 73
errf=$work/stderr
trap 'drop_lock_notes; rm -rf -- "$work"' EXIT

if [ -n "$lock" ]; then
    mkdir -p -- "$(dirname -- "$lock")" 2>/dev/null || true
    take_lock "$lock" exclusive "$lock_wait" restore
    case $? in
        0) ;;
        75) echo "aimms-ops: the cluster is busy after ${lock_wait}s: another restore, rebuild or backup holds it (${LOCK_HELD_BY:-unknown holder}); wait for it to end" >&2
            exit 75 ;;
        *) echo "aimms-ops: cannot open the lock $lock" >&2; exit 73 ;;
    esac
fi

# Commands before the stream must not read stdin: it is the dump, when streamed.
pg() { docker exec -e PGOPTIONS='-c client_min_messages=warning' "$cid" "$@" </dev/null; }
q() { pg psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$superuser" -d template1 -c "$1"; }

# Where psql starts: postgres, made first when the cluster has none; template1 when
# postgres itself is the database being restored (it is dropped and recreated).
if ! has_postgres=$(q "SELECT count(*) FROM pg_database WHERE datname = 'postgres'" 2>"$errf"); then
    echo "aimms-ops: postgres does not answer: $(tail -n 1 "$errf")" >&2
    exit 1
fi
# The names in hex, as the filter is given them.
# shellcheck disable=SC2034  # read through ${!hex}
hex_template1=74656d706c61746531 hex_postgres=706f737467726573
start=postgres
if [ "$only_hex" = "$hex_postgres" ]; then
    start=template1
elif [ "$has_postgres" = 0 ]; then
    q "CREATE DATABASE postgres WITH TEMPLATE = template0" >/dev/null 2>"$errf" || {
        echo "aimms-ops: cannot create the missing postgres database: $(tail -n 1 "$errf")" >&2
        exit 1
    }
    echo "aimms-ops: the cluster had no postgres database: created it empty first" >&2
fi

# The live properties of template1 and postgres, for a dump without them in its preface.
props=()
for db in template1 postgres; do
    hex=hex_$db
    [ -z "$only_hex" ] || [ "$only_hex" = "${!hex}" ] || continue
    [ "$db" = postgres ] && [ "$has_postgres" = 0 ] && continue
    if pg pg_dump -U "$superuser" --create --schema-only --exclude-schema='*' "$db" \
        >"$work/$db.props" 2>>"$errf"; then
        props+=(--props "$db=$work/$db.props")
    fi
done

# The dump's bytes. From stdin they end with the session anyway; a file here is read
# by a reader that is stopped when the session ends.
stat_field() { local f; read -r -a f <"/proc/$1/stat" 2>/dev/null && echo "${f[$2]}"; }
session=$(stat_field $$ 3)
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

filter=(python3 -c "$SCANNER" filter "${props[@]}")
# The filter stops the stream too once the session is gone, whatever the pipes still hold.
[[ $session =~ ^[0-9]+$ ]] && filter+=(--session "$session")
[ -n "$only_hex" ] && filter+=(--only "$only_hex")
read_source 2>>"$errf" |
    "${unzip[@]}" 2>>"$errf" |
    "${filter[@]}" 2>>"$errf" |
    docker exec -i -e PGOPTIONS='-c client_min_messages=warning' "$cid" \
        psql -X -q -v ON_ERROR_STOP=1 -U "$superuser" -d "$start" -f - >/dev/null 2>>"$errf"
status=("${PIPESTATUS[@]}")
echo "aimms-ops: status ${status[*]}" >>"$errf"
(cat -- "$errf" >&2)
for s in "${status[@]}"; do
    [ "$s" = 0 ] || exit 1
done
exit 0

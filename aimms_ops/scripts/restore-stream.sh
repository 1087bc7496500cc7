#!/usr/bin/env bash
# restore-stream.sh PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE_HEX [LOCK [WAIT [KEEP [AS_HEX]]]]]
# Replays a pg_dumpall dump into the postgres container of the compose service:
#   SOURCE  "-" to read the dump from stdin (streamed from the operator's machine),
#           or the absolute path of a dump on this host (nothing crosses the network)
#   FORMAT  gz, zst or plain
#   DATABASE_HEX  restore only that database's section (its name in hex); all when empty
#   LOCK    the cluster lock (lib.sh), held exclusive; none when empty (the caller holds it)
#   WAIT    seconds to wait for whoever holds LOCK (default 60)
#   KEEP    keep: the databases replaced are kept aside (default); drop: dropped once
#           replaced (a rebuild onto a new, empty cluster)
#   AS_HEX  restore DATABASE_HEX's section as this new database (its name in hex)
# All or nothing: every database is rebuilt beside the live one, under a name no
# application uses, and only once all of them are rebuilt are they swapped in, in one
# transaction with the dump's role changes (aimms-ops.pyz dump swap). A failure before that
# removes what the restore made (dump discard): the live cluster is as it was.
# No copy of the dump anywhere: source | decompress | the dump filter | psql. The filter
# (aimms_ops/dump, in the host program) reads the dump's structure and changes only
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
lock_wait=${8:-60} keep=${9:-keep} as_hex=${10:-}

need_python3 "the restore (it reads the dump)"
cid=$(running_container "$project" "$service") || exit 10

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

[ -z "$lock" ] || lock_cluster "$lock" "$lock_wait" restore

# Commands before the stream must not read stdin: it is the dump, when streamed.
pg() { docker exec -e PGOPTIONS='-c client_min_messages=warning' "$cid" "$@" </dev/null; }
q() { pg psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$superuser" -d template1 -c "$1"; }

# Where psql starts: postgres (never replaced while the stream runs), made first when
# the cluster has none.
if ! has_postgres=$(q "SELECT count(*) FROM pg_database WHERE datname = 'postgres'" 2>"$errf"); then
    echo "aimms-ops: postgres does not answer: $(tail -n 1 "$errf")" >&2
    exit 1
fi
# The names in hex, as the filter is given them.
# shellcheck disable=SC2034  # read through ${!hex}
hex_template1=74656d706c61746531 hex_postgres=706f737467726573
start=postgres
if [ "$has_postgres" = 0 ]; then
    q "CREATE DATABASE postgres WITH TEMPLATE = template0" >/dev/null 2>"$errf" || {
        echo "aimms-ops: cannot create the missing postgres database: $(tail -n 1 "$errf")" >&2
        exit 1
    }
    echo "aimms-ops: the cluster had no postgres database: created it empty first" >&2
fi
scan() { agent dump "$@"; }
# What a killed restore left half-built goes; the roles the cluster has are noted.
if ! scan prepare "$cid" "$superuser" "$work" </dev/null 2>>"$errf"; then
    (cat -- "$errf" >&2)
    exit 1
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

# The tablespaces the cluster has: the dump's CREATE of those is left out.
if ! tablespaces=$(q "SELECT string_agg(encode(convert_to(spcname, 'UTF8'), 'hex'), ',') FROM pg_tablespace" 2>>"$errf"); then
    (cat -- "$errf" >&2)
    exit 1
fi
filter=(agent dump filter --beside "$work" --tablespaces "$tablespaces" "${props[@]}")
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
ok=1
for s in "${status[@]}"; do
    [ "$s" = 0 ] || ok=0
done
# Nothing stops the last steps once they start: not the session's end, nor its pipe.
trap '' HUP PIPE
if [ "$ok" = 1 ]; then
    scan swap "$cid" "$superuser" "$work" "$(date -u +%Y%m%d_%H%M%S)" "$as_hex" \
        </dev/null 2>>"$errf" || ok=0
fi
if [ "$ok" = 0 ]; then
    scan discard "$cid" "$superuser" "$work" </dev/null 2>>"$errf"
elif [ "$keep" = drop ]; then
    scan drop-replaced "$cid" "$superuser" "$work" </dev/null 2>>"$errf"
fi
(cat -- "$errf" >&2)
[ "$ok" = 1 ] || exit 1
exit 0

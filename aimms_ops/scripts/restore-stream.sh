#!/usr/bin/env bash
# restore-stream.sh PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE]
# Replays a pg_dumpall dump into the postgres container of the compose service:
#   SOURCE  "-" to read the dump from stdin (streamed from the operator's machine),
#           or the absolute path of a dump on this host (nothing crosses the network)
#   FORMAT  gz or plain
#   DATABASE  restore only that database's section (recreated first); all when empty
# No temporary file anywhere: source | decompress | restore-filter.awk | psql.
# psql runs with ON_ERROR_STOP; the status of every stage is reported on stderr as
# "aimms-ops: status SOURCE UNZIP FILTER PSQL" and the exit status is non-zero when
# any stage failed.
set -uo pipefail
# @include lib.sh

project=$1 service=$2 superuser=$3 format=$4 source=$5 only=${6:-}

read -r -d '' FILTER <<'AWK'
# @include restore-filter.awk
AWK

cid=$(resolve_container "$project" "$service")
if [ -z "$cid" ]; then
    echo "aimms-ops: the $service container of compose project $project is not running" >&2
    exit 10
fi

case $format in
    gz) if command -v pigz >/dev/null 2>&1; then unzip=(pigz -dc); else unzip=(gzip -dc); fi ;;
    plain) unzip=(cat) ;;
    *) echo "aimms-ops: unknown format $format" >&2; exit 64 ;;
esac
if [ "$source" = - ]; then
    src=(cat)
else
    [ -r "$source" ] || { echo "aimms-ops: cannot read $source" >&2; exit 66; }
    src=(cat -- "$source")
fi

"${src[@]}" |
    "${unzip[@]}" |
    awk -v only="$only" "$FILTER" |
    docker exec -i -e PGOPTIONS='-c client_min_messages=warning' "$cid" \
        psql -X -q -v ON_ERROR_STOP=1 -U "$superuser" -d postgres -f - >/dev/null
status=("${PIPESTATUS[@]}")
echo "aimms-ops: status ${status[*]}" >&2
for s in "${status[@]}"; do
    [ "$s" = 0 ] || exit 1
done
exit 0

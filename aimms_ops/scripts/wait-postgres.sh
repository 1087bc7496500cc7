#!/usr/bin/env bash
# wait-postgres.sh PROJECT SERVICE SUPERUSER TIMEOUT: wait, polling every half
# second, until the postgres of the compose service really accepts connections:
# pg_isready answers, a real query runs, the server listens (not the private server
# an image entrypoint runs while it initialises an empty data directory) and it is
# the same server on two polls in a row. Prints container=ID and seconds=N; after
# TIMEOUT seconds exits 1 with what it saw last on stderr.
set -uo pipefail
# @include lib.sh

project=$1 service=$2 superuser=$3 timeout=$4
label=$(compose_project_label "$project")
sql="SELECT 1, current_setting('listen_addresses') <> '', pg_postmaster_start_time()"
prev="" last="no container yet" cid=""
while :; do
    cid=$(resolve_container "$project" "$service")
    if [ -z "$cid" ]; then
        st=$(docker ps -a --filter "label=com.docker.compose.project=$label" \
            --filter "label=com.docker.compose.service=$service" --format '{{.Status}}' | head -n 1)
        last="no running $service container (${st:-none})"
        prev=""
    elif ! out=$(docker exec "$cid" pg_isready -U "$superuser" -d postgres 2>&1); then
        last="pg_isready: $(printf '%s' "$out" | tail -n 1)"
        prev=""
    elif ! row=$(docker exec "$cid" psql -X -A -t -U "$superuser" -d postgres -c "$sql" 2>&1); then
        last="psql: $(printf '%s' "$row" | tail -n 1)"
        prev=""
    else
        IFS='|' read -r one listens started <<<"$row"
        if [ "$one" != 1 ]; then
            last="psql answered: $row"
            prev=""
        elif [ "$listens" != t ]; then
            last="the server is still initialising (it does not listen yet)"
            prev=""
        elif [ "$started" = "$prev" ]; then
            echo "container=$cid"
            echo "seconds=$SECONDS"
            exit 0
        else
            last="answering since $started"
            prev=$started
        fi
    fi
    if [ "$SECONDS" -ge "$timeout" ]; then
        echo "aimms-ops: postgres did not accept connections within ${timeout}s: $last" >&2
        [ -z "$cid" ] || docker logs --tail 3 "$cid" 2>&1 | sed 's/^/aimms-ops: log: /' >&2
        exit 1
    fi
    sleep 0.5
done

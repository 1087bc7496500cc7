#!/usr/bin/env bash
# postgres-exec.sh PROJECT SERVICE COMMAND...: run COMMAND in the running container of
# the compose service (docker exec -i, stdin passed on), the container being found now:
# a plan can name it before it exists (rebuild-volume recreates it). Exit 10 when no
# container of the service is running.
set -uo pipefail
# @include lib.sh

project=$1 service=$2
shift 2
cid=$(resolve_container "$project" "$service")
if [ -z "$cid" ]; then
    echo "aimms-ops: the $service container of compose project $project is not running" >&2
    exit 10
fi
exec docker exec -i "$cid" "$@"

#!/usr/bin/env bash
# postgres-exec.sh PROJECT SERVICE COMMAND...: run COMMAND in the running container of
# the compose service (docker exec -i, stdin passed on), the container being found now:
# a plan can name it before it exists (rebuild-volume recreates it). Exit 10 when no
# container of the service is running. The host program's postgres-exec
# (aimms_ops/agent/replaced.py) finds it and becomes docker exec.
set -uo pipefail
# @include lib.sh

need_python3 "postgres-exec.sh"
exec python3 "$AIMMS_OPS_PROGRAM" postgres-exec "$@"

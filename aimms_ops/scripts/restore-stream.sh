#!/usr/bin/env bash
# restore-stream.sh PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE_HEX [LOCK [WAIT [KEEP [AS_HEX]]]]]
# Replays a pg_dumpall dump into the postgres container of the compose service, all or
# nothing: every database rebuilt beside the live one, then swapped in. The work is the
# host program's restore-stream (aimms_ops/agent/restore.py: its arguments, the stages
# source | decompress | dump filter | psql, the "aimms-ops: status ..." line and the exit
# statuses); this file is its entry point, named on its command line.
set -uo pipefail
# @include lib.sh

need_python3 "the restore (it reads the dump)"
exec python3 "$AIMMS_OPS_PROGRAM" restore-stream --script "${BASH_SOURCE[0]:-$0}" "$@"

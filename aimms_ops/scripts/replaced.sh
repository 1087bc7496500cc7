#!/usr/bin/env bash
# replaced.sh PROJECT SERVICE SUPERUSER LOCK WAIT MODE [HEX...]: the databases restores set
# aside (aimms_ops/dump/swap.py): MODE aside lists them ("HEXNAME HEXORIGINAL STAMP" lines),
# undo swaps those of the last restore back in, drop-aside drops those named (all when
# none is), both holding the cluster lock exclusive, as a restore does.
set -uo pipefail
# @include lib.sh

project=$1 service=$2 superuser=$3 lock=$4 lock_wait=$5 mode=$6
shift 6

need_python3 "$mode"
cid=$(running_container "$project" "$service") || exit 10
if [ "$mode" != aside ]; then
    trap 'drop_lock_notes' EXIT
    lock_cluster "$lock" "$lock_wait" "$mode"
fi
agent dump "$mode" "$cid" "$superuser" "$@" </dev/null

#!/usr/bin/env bash
# replaced.sh PROJECT SERVICE SUPERUSER LOCK WAIT MODE [HEX...]: the databases restores set
# aside: MODE aside lists them ("HEXNAME HEXORIGINAL STAMP" lines), undo swaps those of
# the last restore back in, drop-aside drops those named (all when none is), both holding
# the cluster lock exclusive, as a restore does. The host program's replaced
# (aimms_ops/agent/replaced.py) does the work.
set -uo pipefail
# @include lib.sh

need_python3 "${6:-replaced.sh}"
exec python3 "$AIMMS_OPS_PROGRAM" replaced "$@"

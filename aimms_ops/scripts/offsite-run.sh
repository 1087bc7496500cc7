#!/usr/bin/env bash
# offsite-run.sh: the offsite copies, outside a backup run: the host program's offsite
# command (aimms_ops/agent/offsite.py) does the work.
#
# Usage: offsite-run.sh --backup-dir DIR --log-file FILE --lock-timeout S
#                       --offsite-config FILE COMMAND [ARGS]
#   sync [--target NAME] [--dry-run]   push what each target lacks, then its retention,
#                                      under the backup lock (fab offsite-sync)
#   list [--target NAME]               the copies: "target NAME ok|failed: REASON" then
#                                      "copy NAME<TAB>fields of the copy"
#   cat NAME OBJECT                    the bytes of OBJECT (NAME.age or NAME.age.meta)
#   mark-verified NAME BACKUP          record that the copy of BACKUP was read back whole
set -uo pipefail
umask 077

# @include lib.sh

need_python3 "offsite-run.sh (the host program runs the offsite copies)"
exec python3 "$AIMMS_OPS_PROGRAM" offsite "$@"

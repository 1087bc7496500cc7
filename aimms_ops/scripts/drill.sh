#!/usr/bin/env bash
# drill.sh: how long a recovery takes and how much it loses, measured: the newest copy
# of an offsite target (or the host's newest backup) fetched, verified, restored into a
# throwaway container, checked against the live cluster, removed. Installed by
# `fab install-backups` next to the backup script when the inventory has drill.schedule
# (cron runs it) and run by `fab drill`: one code path for both, the host program's
# `drill` (aimms_ops/agent/drill.py: its options, checks, events and exit statuses).
# Without --config it reads drill.sh.conf beside this script if there is one, else
# backup-postgres.sh.conf beside it.
#
# Usage: drill.sh [--config FILE] [--target NAME|host] [--identity FILE]
#                 [--protect VOLUME]... [--wait SECONDS] [--echo] [--report] [settings flags]
set -uo pipefail
# @include lib.sh

need_python3 "the drill"
exec python3 "$AIMMS_OPS_PROGRAM" drill --script "${BASH_SOURCE[0]:-}" "$@"

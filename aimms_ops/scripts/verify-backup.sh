#!/usr/bin/env bash
# verify-backup.sh: prove that a backup restores, by restoring it into a throwaway
# PostgreSQL container. Installed by `fab install-backups` next to the backup script
# (cron runs it weekly) and run by `fab verify --deep`: one code path for both, the host
# program's `verify` (aimms_ops/agent/verify.py: its options, checks, report lines and
# exit statuses). Without --config it reads verify-backup.sh.conf beside this script if
# there is one, else backup-postgres.sh.conf beside it.
#
# Usage: verify-backup.sh [--config FILE] [--file NAME|latest] [--protect VOLUME]...
#                         [--wait SECONDS] [--echo] [--report] [settings flags]
set -uo pipefail
# @include lib.sh

need_python3 "the deep verify"
exec python3 "$AIMMS_OPS_PROGRAM" verify --script "${BASH_SOURCE[0]:-}" "$@"

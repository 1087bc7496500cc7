#!/usr/bin/env bash
# backup-postgres.sh: a backup of the whole PostgreSQL cluster of a Docker Compose
# stack that cannot lie. Installed by `fab install-backups` (cron runs it daily) and
# run by `fab backup`: one code path for both.
#
# Usage: backup-postgres.sh [--config FILE] [options]
#   --config FILE        read the settings below from FILE (shell assignments);
#                        without it, the file beside this script (its path + .conf,
#                        written by fab install-backups) when there is one, so that
#                        plain `backup-postgres.sh`, as the seed runs it, works
#   --backup-dir DIR     where backups go                     (BACKUP_DIR)
#   --log-file FILE      one line per step is appended here   (LOG_FILE)
#   --project NAME       compose project                      (COMPOSE_PROJECT)
#   --service NAME       compose service of postgres          (COMPOSE_SERVICE)
#   --superuser NAME     role pg_dumpall connects as           (PG_SUPERUSER)
#   --retention-days N   remove backups older than N days...  (RETENTION_DAYS)
#   --min-keep N         ...but never the newest N good ones  (MIN_KEEP)
#   --lock-timeout S     wait at most S seconds for a running backup (LOCK_TIMEOUT)
#   --compression NAME   gzip (default: .sql.gz) or zstd (.sql.zst)  (COMPRESSION)
#   --gzip-level N       1 (fastest) .. 9 (smallest)           (GZIP_LEVEL)
#   --compressor NAME    with gzip: auto (default: igzip, else pigz, else gzip), igzip,
#                        pigz or gzip; on the host, always the .gz format (COMPRESSOR)
#   --zstd-level N       with zstd: 1 (fastest, default) .. 19 (smallest) (ZSTD_LEVEL)
#   --retention-rules R  GFS rules, e.g. "daily=7 weekly=4 monthly=12 yearly=2" (RETENTION_RULES)
#   --safety-pin-days N  pin the safety copies of restore and rebuild N days (SAFETY_PIN_DAYS)
#   --allow-shrink       accept a backup less than half the size of those before it (ALLOW_SHRINK=1)
#   --ping-url URL       tell a monitor how the run went                 (PING_URL)
#   --settings-stdin     read secret settings (PING_URL=URL lines) from stdin: fab sends
#                        them there, never on the command line the host's ps shows
#   --ping-kind KIND     healthchecks (default) or uptime-kuma           (PING_KIND)
#   --ping-timeout S     a ping takes at most S seconds, retries included (PING_TIMEOUT)
#   --offsite-config F   push encrypted copies to the targets in F (OFFSITE_CONFIG; agent/offsite.py)
#   --label NAME         added to the file name (letters, digits, - and _)
#   --prune-only         apply retention only, make no backup
#   --dry-run            with --prune-only: print what would be removed, remove nothing
#   --expect-plan SHA    with --prune-only: remove nothing unless the decision is the one
#                        a dry run showed (sha256 of its "ACTION<TAB>NAME" lines)
#   --no-prune           make the backup, skip retention
#   --echo               also print the log lines on stderr
#   --report             print the result.* and prune.* lines below on stdout
#
# A backup is aimms_postgres_YYYYMMDD_HHMMSS[_LABEL].sql.gz (UTC; .sql.zst with zstd)
# with a .sha256 beside it. It is written under a temporary name, tested (its stream and the
# dump's completion marker), fsynced, its checksum written, and only then renamed
# into place. Any failure exits non-zero and leaves nothing that looks like a backup.
# Retention runs only after a good backup and never removes the newest MIN_KEEP.
# Pinned backups (NAME.pin beside them) are never removed. A backup less than half the
# median size of the five before it is published but logged as suspicious, and no
# retention runs then (--allow-shrink accepts it).
# With --report, stdout carries result.KEY=VALUE lines on success and the prune
# decisions as prune.keep=NAME RULE REASON / prune.remove=NAME RULE REASON (and
# result.suspicious=... when the size-drop guard fired); without it (cron)
# the script writes only to its log.
# shellcheck disable=SC2016,SC2317  # sh -c bodies are single-quoted; traps call functions
#
# The work is the host program's (aimms-ops.pyz beside this script: aimms_ops/agent/
# backup.py, under the host's python3 3.7+); this file is the entry point that cron, fab
# and the manual procedure run (the offsite push is the program's too: agent/offsite.py).
set -uo pipefail
umask 077

here=$(dirname -- "${BASH_SOURCE[0]}")
AIMMS_OPS_PROGRAM=${AIMMS_OPS_PROGRAM:-$here/aimms-ops.pyz}
if ! command -v python3 >/dev/null 2>&1; then
    echo "backup-postgres.sh: python3 is not installed on this host; aimms-ops' host program needs it (install python3)" >&2
    exit 69
fi
if [ ! -r "$AIMMS_OPS_PROGRAM" ]; then
    echo "backup-postgres.sh: the host program $AIMMS_OPS_PROGRAM is missing (install it: fab install-backups)" >&2
    exit 69
fi
exec python3 "$AIMMS_OPS_PROGRAM" backup --script "${BASH_SOURCE[0]}" "$@"

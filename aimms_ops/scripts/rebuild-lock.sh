#!/usr/bin/env bash
# rebuild-lock.sh BACKUP_DIR OWNER: hold the rebuild lock of this host while stdin
# stays open (rebuild-volume keeps it open for its whole run; it closes when the run
# ends, is killed or loses its connection). The backup lock is held too, so no backup
# (cron's included) runs on a half-rebuilt cluster: the backup script waits for it.
# Prints locked=1 once held; busy=rebuild|backup and holder=... with exit 75 when
# another run holds one of them.
set -uo pipefail
umask 077
# @include lib.sh

dir=$1 owner=$2
mkdir -p -- "$dir" || exit 1
exec 8>>"$dir/.rebuild.lock" 9>>"$dir/.backup.lock" || exit 1
if ! flock -n 8; then
    echo "busy=rebuild"
    echo "holder=$(cat -- "$dir/.rebuild.lock.owner" 2>/dev/null)"
    exit 75
fi
if ! flock -n 9; then
    echo "busy=backup"
    echo "holder=$(cat -- "$dir/.backup.lock.owner" 2>/dev/null)"
    exit 75
fi
printf '%s since %s\n' "$owner" "$(now_utc)" >"$dir/.rebuild.lock.owner"
printf '%s since %s\n' "$owner" "$(now_utc)" >"$dir/.backup.lock.owner"
echo "locked=1"
cat >/dev/null

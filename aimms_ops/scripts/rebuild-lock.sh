#!/usr/bin/env bash
# rebuild-lock.sh BACKUP_DIR OWNER: hold the host's cluster lock (lib.sh) exclusive while
# stdin stays open (rebuild-volume keeps it open for its whole run; it closes when the
# run ends, is killed or loses its connection). No backup (cron's included), restore or
# deep verify runs on a half-rebuilt cluster meanwhile: they wait for the lock.
# Prints locked=1 once held; busy=rebuild|backup|restore|verify and holder=... with exit
# 75 when another run holds it.
set -uo pipefail
umask 077
# @include lib.sh

dir=$1 owner=$2
mkdir -p -- "$dir" || exit 1
trap drop_lock_notes EXIT
take_lock "$dir/$CLUSTER_LOCK" exclusive 0 "$owner"
case $? in
    0) ;;
    75) kind=${LOCK_HELD_BY%% *}
        case $kind in rebuild-volume) kind=rebuild ;; esac
        echo "busy=${kind:-unknown}"
        echo "holder=$LOCK_HELD_BY"
        exit 75 ;;
    *) echo "cannot open $dir/$CLUSTER_LOCK" >&2; exit 1 ;;
esac
echo "locked=1"
cat >/dev/null

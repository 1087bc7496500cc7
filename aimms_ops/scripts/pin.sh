#!/usr/bin/env bash
# pin.sh pin BACKUP_DIR NAME BY REASON: pin a backup (NAME.pin beside it: by, at, why);
# pin.sh unpin BACKUP_DIR NAME: remove its pin. Under the backup lock (retention holds
# it while it decides and removes), waiting at most 60 s for a running backup.
# Prints pinned=NAME or unpinned=NAME (was=0 when there was no pin).
set -euo pipefail
umask 077
# @include lib.sh

action=$1 dir=$2 name=$3
[[ $name =~ $BACKUP_NAME_RE ]] || { echo "not a backup name: $name" >&2; exit 64; }
[ -f "$dir/$name" ] || { echo "no backup named $name in $dir" >&2; exit 66; }
trap drop_lock_notes EXIT
take_lock "$dir/$BACKUP_LOCK" exclusive 60 "$action" || {
    echo "a backup or retention run holds $dir/$BACKUP_LOCK (${LOCK_HELD_BY:-unknown holder}); try again when it ends" >&2
    exit 75
}
case $action in
    pin)
        write_pin "$dir/$name" "$4" "$5" || { echo "cannot write $dir/$name.pin" >&2; exit 1; }
        echo "pinned=$name"
        ;;
    unpin)
        was=0
        [ ! -e "$dir/$name.pin" ] || was=1
        rm -f -- "$dir/$name.pin"
        echo "unpinned=$name"
        echo "was=$was"
        ;;
    *) echo "usage: pin.sh pin|unpin DIR NAME [BY REASON]" >&2; exit 64 ;;
esac

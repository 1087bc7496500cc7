#!/usr/bin/env bash
# list-backups.sh BACKUP_DIR: one line per backup (every compression), newest first:
#   MTIME<TAB>SIZE<TAB>NAME<TAB>SHA256-or-dash<TAB>PIN-base64-or-dash
# Prints "missing" alone when the directory does not exist. Read-only.
set -euo pipefail
# @include lib.sh
dir=$1
if [ ! -d "$dir" ]; then
    echo missing
    exit 0
fi
backup_files "$dir" -printf '%T@\t%s\t%f\n' |
    sort -t $'\t' -k1,1nr |
    while IFS=$'\t' read -r mtime size name; do
        sum=-
        if [ -r "$dir/$name.sha256" ]; then
            sum=$(cut -d' ' -f1 <"$dir/$name.sha256" | head -n 1)
            [ -n "$sum" ] || sum=-
        fi
        pin=-
        if [ -r "$dir/$name.pin" ]; then pin=$(head -c 4096 -- "$dir/$name.pin" | base64 -w0); fi
        printf '%s\t%s\t%s\t%s\t%s\n' "${mtime%.*}" "$size" "$name" "$sum" "${pin:--}"
    done

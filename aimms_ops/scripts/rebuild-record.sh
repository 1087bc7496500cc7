#!/usr/bin/env bash
# rebuild-record.sh: the records of rebuild-volume on the host.
#   append STATE_FILE LINE...    append "UTC_TIMESTAMP LINE" per line to the state file
#   close STATE_FILE DEST        move the state file (when there is one) to DEST
#   audit LOG_FILE LINE          append "UTC_TIMESTAMP LINE from=SSH_CLIENT_ADDRESS"
set -euo pipefail
umask 077
# @include lib.sh

case ${1:-} in
    append)
        file=$2
        shift 2
        mkdir -p -- "$(dirname -- "$file")"
        ts=$(now_utc)
        for line in "$@"; do printf '%s %s\n' "$ts" "$line"; done >>"$file"
        ;;
    close)
        if [ -e "$2" ]; then mv -f -- "$2" "$3"; fi
        ;;
    audit)
        mkdir -p -- "$(dirname -- "$2")"
        client=${SSH_CLIENT:-}
        printf '%s %s from=%s\n' "$(now_utc)" "$3" "${client%% *}" >>"$2"
        ;;
    *)
        echo "rebuild-record.sh: unknown command ${1:-}" >&2
        exit 64
        ;;
esac

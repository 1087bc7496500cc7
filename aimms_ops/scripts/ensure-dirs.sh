#!/usr/bin/env bash
# ensure-dirs.sh BACKUP_DIR LOG_FILE: the backup dir 0700 and the log 0600.
set -euo pipefail
mkdir -p -- "$1"
chmod 700 -- "$1"
mkdir -p -- "$(dirname -- "$2")"
touch -- "$2"
chmod 600 -- "$2"

#!/usr/bin/env bash
# install-file.sh PATH MODE [KEEP_OLD]: write stdin to PATH atomically with MODE.
# With KEEP_OLD=1 an existing different file is kept as PATH.bak-UTCSTAMP first.
set -euo pipefail
umask 077
path=$1 mode=$2 keep=${3:-0}
dir=$(dirname -- "$path")
mkdir -p -- "$dir"
tmp="$path.tmp.$$"
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp"
chmod "$mode" -- "$tmp"
if [ "$keep" = 1 ] && [ -f "$path" ] && ! cmp -s -- "$tmp" "$path"; then
    old="$path.bak-$(date -u +%Y%m%d_%H%M%S)"
    cp -p -- "$path" "$old"
    echo "kept=$old"
fi
sync -- "$tmp" 2>/dev/null || true
mv -f -- "$tmp" "$path"

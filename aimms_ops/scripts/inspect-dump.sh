#!/usr/bin/env bash
# inspect-dump.sh FILE: check a dump on this host before anything is touched.
# key=value lines: exists, size, sha256 (computed), sha256_recorded (from FILE.sha256,
# or empty), format (gz|zst|plain), stream (ok|bad: the whole file decompresses), then what
# the dump scanner (aimms_ops/dump, in the host program) found reading it as psql would: header,
# complete (the completion marker at a statement boundary), db=HEX per database
# section, role=HEX per role, preface=HEX per database whose properties the dump
# carries. Read-only: the file is hashed and, at the same time, decompressed and scanned.
set -uo pipefail
# @include lib.sh

f=$1
if [ ! -f "$f" ]; then
    echo "exists=0"
    exit 0
fi
echo "exists=1"
if ! command -v python3 >/dev/null 2>&1; then
    echo "aimms-ops: python3 is not installed on this host; reading a dump needs it (install python3)" >&2
    exit 69
fi
echo "size=$(stat -c %s -- "$f")"
recorded=""
if [ -r "$f.sha256" ]; then recorded=$(cut -d' ' -f1 <"$f.sha256" | head -n 1); fi
echo "sha256_recorded=$recorded"
case $f in
    *.gz | *.zst)  # igzip, else pigz, else gzip; zstd for a .zst
        format=${f##*.}
        if ! pick_decompressor "dump.$format"; then
            echo "aimms-ops: $UNZIP_MISSING is not installed on this host; reading a .$format dump needs it (install $UNZIP_MISSING)" >&2
            exit 69
        fi
        unzip=("${UNZIP[@]}") ;;
    *) format=plain; unzip=(cat) ;;
esac
echo "format=$format"
sumf=$(mktemp)
trap 'rm -f -- "$sumf"' EXIT
# The hash reads the file beside the decompressor (a second read, from the page cache),
# not through a tee: one pipe less for the whole dump to cross.
sha256_stream <"$f" >"$sumf" &
"${unzip[@]}" <"$f" 2>/dev/null |
    agent dump inspect
status=("${PIPESTATUS[@]}")
wait
if [ "${status[0]}" = 0 ]; then echo "stream=ok"; else echo "stream=bad"; fi
echo "sha256=$(cat "$sumf")"

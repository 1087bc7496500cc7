#!/usr/bin/env bash
# inspect-dump.sh FILE: check a dump on this host before anything is touched.
# key=value lines: size, sha256 (computed), sha256_recorded (from FILE.sha256, or
# empty), format (gz|plain), stream (ok|bad: the whole file decompresses), head=
# (the first three lines), tail= (the last three non-empty lines: the completion
# marker is among them when the dump is complete) and db=NAME per database section
# (found outside COPY data). Read-only.
set -uo pipefail
f=$1
if [ ! -f "$f" ]; then
    echo "exists=0"
    exit 0
fi
echo "exists=1"
echo "size=$(stat -c %s -- "$f")"
recorded=""
if [ -r "$f.sha256" ]; then recorded=$(cut -d' ' -f1 <"$f.sha256" | head -n 1); fi
echo "sha256_recorded=$recorded"
case $f in
    *.gz) format=gz
          if command -v igzip >/dev/null 2>&1; then unzip=(igzip -dc)
          elif command -v pigz >/dev/null 2>&1; then unzip=(pigz -dc); else unzip=(gzip -dc); fi ;;
    *) format=plain; unzip=(cat) ;;
esac
echo "format=$format"
# One pass over the file: checksum it while it is decompressed and scanned.
sumf=$(mktemp)
trap 'rm -f -- "$sumf"' EXIT
tee >(sha256sum | cut -d' ' -f1 >"$sumf") <"$f" |
    "${unzip[@]}" 2>/dev/null |
    awk 'NR <= 3 { print "head=" $0 }
         in_copy { if ($0 == "\\.") in_copy = 0; next }
         /^COPY .* FROM stdin;$/ { in_copy = 1 }
         /^-- Database ".*" dump$/ { print "db=" substr($0, 14, length($0) - 19) }
         NF { t1 = t2; t2 = t3; t3 = $0 }
         END { print "tail=" t1; print "tail=" t2; print "tail=" t3 }'
status=("${PIPESTATUS[@]}")
wait
if [ "${status[1]}" = 0 ]; then echo "stream=ok"; else echo "stream=bad"; fi
echo "sha256=$(cat "$sumf")"

#!/usr/bin/env bash
# inspect-dump.sh FILE: check a dump on this host before anything is touched, read-only:
# exists, size, sha256_recorded, format, what the dump reader found (header, complete,
# db=, role=, preface=), stream and sha256, as key=value lines. The host program's
# inspect-dump (aimms_ops/agent/dumpfile.py) does the work.
set -uo pipefail
# @include lib.sh

if [ ! -f "$1" ]; then
    echo "exists=0"
    exit 0
fi
need_python3 "reading a dump"
exec python3 "$AIMMS_OPS_PROGRAM" inspect-dump "$@"

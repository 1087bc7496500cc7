#!/usr/bin/env bash
# ping-test.sh KIND URL|- [TIMEOUT]: send a test ping from this host, as the jobs would
# (healthchecks: URL/log, which changes no state; uptime-kuma: status=up). "-": the URL
# is the first line of stdin (fab sends it there, off the command line). Prints ok=1 and
# the seconds taken, or ok=0 and curl's error (the host program's ping-test).
set -uo pipefail
# @include lib.sh
need_python3 "the test ping"
exec python3 "$AIMMS_OPS_PROGRAM" ping-test "$@"

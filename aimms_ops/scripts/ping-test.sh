#!/usr/bin/env bash
# ping-test.sh KIND URL|- [TIMEOUT]: send a test ping from this host, as the backup script would
# (healthchecks: URL/log, which changes no state; uptime-kuma: status=up). Prints
# ok=1 and the seconds taken, or ok=0 and curl's error.
set -uo pipefail
# @include lib.sh

# shellcheck disable=SC2034  # PING_TIMEOUT is read by lib.sh's ping_send
kind=$1 url=$2 PING_TIMEOUT=${3:-@DEFAULT_PING_TIMEOUT@}
# "-": the URL is the first line of stdin (fab sends it there, off the command line).
[ "$url" != - ] || IFS= read -r url
started=$(date +%s)
rid=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "$$-$started")
body=$(mktemp "${TMPDIR:-/tmp}/aimms-ping.XXXXXX") || exit 1
trap 'rm -f -- "$body"' EXIT
printf '%s test ping from aimms-ops (fab doctor --ping) on %s\n' "$(now_utc)" "$(hostname)" >"$body"
if why=$(ping_send "$kind" "$url" log "$rid" "aimms-ops test ping" "$body" 0); then
    echo "ok=1"
else
    echo "ok=0"
    echo "error=$why"
fi
echo "seconds=$(($(date +%s) - started))"

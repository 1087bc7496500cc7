#!/usr/bin/env bash
# What the host scripts share, inlined where a script asks for it (an include line):
# finding the host program, which does their work.

# The host program (aimms_ops/agent, standard library only): beside this script, where
# fab install-backups installs it beside the backup script and where fab sends it with
# every script.
AIMMS_OPS_PROGRAM=${AIMMS_OPS_PROGRAM:-$(dirname -- "${BASH_SOURCE[0]:-$0}")/aimms-ops.pyz}
agent() { python3 "$AIMMS_OPS_PROGRAM" "$@"; }

# need_python3 WHAT: exit 69, naming WHAT, when this host has no python3.
need_python3() {
    command -v python3 >/dev/null 2>&1 && return 0
    echo "aimms-ops: python3 is not installed on this host; $1 needs it (install python3)" >&2
    exit 69
}

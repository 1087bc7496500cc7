#!/bin/bash
# Take a sandbox instance down: `docker-compose down` (never -v), then stop its dockerd
# and sshd. The volumes (and all the instance's state) are kept, so a later up.sh finds
# the data again, unless SANDBOX_PURGE=1: then the two volumes, the instance's state
# dir and its login user (with home) are removed. The shared image cache is kept.
#
#   bash sandbox/down.sh
#   SANDBOX_NAME=t2 SANDBOX_PURGE=1 bash sandbox/down.sh
set -euo pipefail
PROG=down.sh

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=offsite.sh
source "$(dirname "${BASH_SOURCE[0]}")/offsite.sh"

PURGE=${SANDBOX_PURGE:-0}
[[ $(id -u) == 0 ]] || die "run as root"

if [[ -d $STATE ]]; then
    exec {LOCKFD}>"$STATE/.lock"
    flock -w 600 "$LOCKFD" || die "timed out waiting for the lock on $STATE"

    # An engine killed earlier may have left containers running under its shims:
    # start it again so that it (and compose) can stop them properly.
    if ! docker_ok && [[ -n $(pids_with "$EXEC/containerd") ]]; then
        say "dockerd: restarting to clean up what a killed engine left"
        dockerd_start
    fi
    if docker_ok; then
        if [[ -f $PROJECT_DIR/$COMPOSE_FILE ]] && id -u "$LOGIN" >/dev/null 2>&1; then
            compose_as_user down >"$STATE/compose-down.log" 2>&1 ||
                die "docker-compose down failed: $(last_line "$STATE/compose-down.log") (log: $STATE/compose-down.log)"
            say "compose: $PROJECT down"
        fi
        # Anything else still running in this private engine.
        ids=$(docker ps -aq)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            docker rm -f $ids >/dev/null
            say "containers: removed $(wc -w <<<"$ids") left outside compose"
        fi
        if [[ $PURGE == 1 ]]; then
            docker volume rm -f "$VOL_PG" "$VOL_REDIS" >/dev/null
            say "volumes: removed $VOL_PG $VOL_REDIS"
        else
            say "volumes: kept $VOL_PG $VOL_REDIS"
        fi
    fi
    if [[ -n $(dockerd_pid) || -n $(pids_with "$EXEC/containerd") ]]; then
        dockerd_stop
        say "dockerd: stopped"
    else
        say "dockerd: not running"
    fi
    if [[ -n $(sshd_pid) ]]; then
        sshd_stop
        say "sshd: stopped"
    else
        say "sshd: not running"
    fi
    cron_stop_if_unused
    offsite_down
    rm -f "$SOCK" "$STATE/dockerd.pid" "$STATE/sshd.pid" "$STATE/compose.applied"
    unmount_below
else
    say "sandbox $NAME: no state in $STATE"
fi

if [[ $PURGE == 1 ]]; then
    if [[ -d $STATE ]]; then
        rm -rf --one-file-system "$STATE"
        [[ $EXEC == "$STATE"/* ]] || rm -rf --one-file-system "$EXEC"
        say "state: removed $STATE"
    fi
    offsite_purge
    # The login user, only if the sandbox made it (its home carries our marker).
    if id -u "$LOGIN" >/dev/null 2>&1 && [[ -f $HOME_DIR/.aimms-ops-sandbox ]]; then
        for pid in $(pgrep -u "$LOGIN" || true); do kill -KILL "$pid" 2>/dev/null || true; done
        rm -f -- "/var/spool/cron/crontabs/$LOGIN"  # userdel leaves it, owned by the old uid
        userdel -r "$LOGIN" >/dev/null 2>&1 || userdel -f -r "$LOGIN" >/dev/null 2>&1 ||
            die "could not remove user $LOGIN"
        say "user: $LOGIN removed with $HOME_DIR"
    fi
    # The generated files, if they point at this instance.
    if grep -qsxF "SANDBOX_STATE=$STATE" "$OUT/env"; then
        rm -f "$OUT/ssh_config" "$OUT/inventory.yml" "$OUT/env"
        say "files: removed ssh_config inventory.yml env from $OUT"
    fi
fi
say "sandbox $NAME: down"

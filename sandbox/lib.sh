# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are used by the scripts sourcing this
# Shared by sandbox/up.sh and sandbox/down.sh (sourced, never run on its own).
#
# One sandbox instance = one login user + one private dockerd + one private sshd,
# all state under $SANDBOX_ROOT/$SANDBOX_NAME. See sandbox/README.md.

export LC_ALL=C
umask 022

PROG=${PROG:-$(basename "$0")}
# A command that fails names the script, its line and itself (set -E: in functions too).
set -E
trap 'printf "%s: error: line %s: command failed: %s\n" "$PROG" "$LINENO" "$BASH_COMMAND" >&2' ERR

say() { printf '%s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# Seconds since $1 (an $EPOCHREALTIME value), "0.4" below 10 s, "31" above.
since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { d = b - a; if (d < 10) printf "%.1f", d; else printf "%.0f", d }'
}

# Last non-blank line of a log file, shortened (for one-line error messages).
last_line() { { grep -av '^[[:space:]]*$' "$1" 2>/dev/null || true; } | tail -n1 | cut -c1-300; }
# apt-get, one at a time on this machine: sandbox instances come up side by side (one per
# test worker) and apt's own locks refuse a second apt-get at once instead of waiting.
apt_get() {
    mkdir -p "$ROOT"
    flock -w 1800 "$ROOT/.apt.lock" apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# ---------------------------------------------------------------- configuration
SANDBOX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

NAME=${SANDBOX_NAME:-aidset}
ROWS=${SANDBOX_ROWS:-20000}
ROOT=${SANDBOX_ROOT:-/var/lib/aimms-ops-sandbox}
OUT=${SANDBOX_OUT:-$SANDBOX_DIR}

[[ $NAME =~ ^[a-z][a-z0-9-]{0,19}$ ]] || die "SANDBOX_NAME '$NAME' must match [a-z][a-z0-9-]{0,19}"
[[ $ROWS =~ ^[0-9]+$ ]] || die "SANDBOX_ROWS '$ROWS' must be a non-negative integer"
ROWS=$((10#$ROWS))
[[ $ROOT == /* && $ROOT =~ ^[A-Za-z0-9/._+-]+$ ]] || die "SANDBOX_ROOT '$ROOT' must be an absolute path without spaces or shell characters"
[[ $OUT =~ ^[A-Za-z0-9/._+-]+$ ]] || die "SANDBOX_OUT '$OUT' must be a path without spaces or shell characters"
[[ $OUT == /* ]] || OUT=$PWD/$OUT
ROOT=${ROOT%/}
[[ -n $ROOT ]] || die "SANDBOX_ROOT must not be /"

STATE=$ROOT/$NAME
CACHE=$ROOT/cache
SOCK=$STATE/docker.sock
# Unix socket paths must stay under ~100 bytes: containerd's socket lives at
# <exec-root>/containerd/containerd.sock.ttrpc (38 more bytes than the exec-root).
if ((${#STATE} <= 56)); then
    EXEC=$STATE/run
else
    EXEC=/run/aimms-ops-sandbox/$(printf '%s' "$STATE" | sha256sum | cut -c1-12)
fi
((${#SOCK} < 100)) || die "SANDBOX_ROOT is too long: $SOCK would exceed the 100-byte unix socket limit"

if [[ $NAME == aidset ]]; then LOGIN=ec2-user; else LOGIN=ops-$NAME; fi
HOME_DIR=/home/$LOGIN
HOST_ALIAS=aidset
PROJECT=aimms-web
PROJECT_DIR=$HOME_DIR/aimms-web
COMPOSE_FILE=docker-compose.prod.yml
VOL_PG=aimms_postgres_data_prod
VOL_REDIS=aimms_redis_data_prod
IMAGE=aimms-ops-sandbox/postgres:15
# The image with pgBackRest that PITR runs on (built offline from IMAGE; step_pitr_image).
PITR_IMAGE=aimms-ops-sandbox/postgres-pitr:15
CLIENT_KEY=$STATE/client_ed25519
HOST_KEY=$STATE/ssh_host_ed25519_key
KNOWN_HOSTS=$STATE/known_hosts
SSHD_CONFIG=$STATE/sshd_config

export DOCKER_HOST=unix://$SOCK
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export DOCKER_CONFIG=$STATE/docker-cli   # keep root's ~/.docker (contexts, creds) out of it

# ---------------------------------------------------------------- processes
# The pid stored in a pid file, or nothing.
pid_from() {
    local pid=""
    if [[ -r $1 ]]; then read -r pid <"$1" 2>/dev/null || true; fi
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
    return 0
}

# Is process $1 alive and does its command line contain the string $2?
proc_has() {
    alive "$1" || return 1
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"$2"* ]]
}

# Pids of live processes whose command line contains the string $1.
pids_with() {
    local f pid
    # grep itself matches too; it has exited by the time we test, so it drops out.
    { grep -lsaF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null || true; } | while read -r f; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
        proc_has "$pid" "$1" && printf '%s\n' "$pid"
    done
    return 0
}

# Start a command in the background, detached: own session, stdin from /dev/null, and
# none of our descriptors but 0-2 (a daemon must not keep our lock files locked).
# Redirect its stdout/stderr when calling. The pid is left in $!.
launch_detached() {
    (
        local fd
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid nohup "$@" </dev/null
    ) &
}

# Is process $1 alive? A zombie is not: PID 1 on this kind of machine does not reap
# orphans, so a dead daemon stays a zombie and `kill -0` would still succeed.
alive() {
    local stat
    [[ -n $1 ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != [ZX] ]]
}

# kill_wait PID SECONDS [SIGNAL]: signal a process, wait for it, SIGKILL it when late.
kill_wait() {
    local pid=$1 secs=$2 sig=${3:-TERM} i
    alive "$pid" || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
}

# write_if_changed FILE MODE OWNER: content from stdin; returns 0 when FILE changed.
write_if_changed() {
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file" &&
        [[ $(stat -c '%a %U:%G' "$file") == "$(stat -c '%a %U:%G' "$tmp")" ]]; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
}

# ---------------------------------------------------------------- docker engine
docker_ok() {
    [[ -S $SOCK ]] && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# pid_with PIDFILE MARK: the pid in PIDFILE when that process is alive and its command
# line holds MARK (a path of this instance), else nothing.
pid_with() {
    local pid
    pid=$(pid_from "$1")
    proc_has "$pid" "$2" && printf '%s' "$pid"
    return 0
}

# ensure_host_key FILE COMMENT: an ed25519 key in FILE with its .pub beside it; a missing
# or unreadable one is made anew (status 0 then, 1 when the key was there).
ensure_host_key() {
    if [[ ! -s $1 ]] || ! ssh-keygen -y -f "$1" >/dev/null 2>&1; then
        rm -f "$1" "$1.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
        return 0
    fi
    [[ -s $1.pub ]] || ssh-keygen -y -f "$1" >"$1.pub"
    return 1
}

# await_port PORT PIDFN: wait up to 10 s until the process PIDFN prints listens on PORT;
# prints that pid (or the last one PIDFN printed).
await_port() {
    local i pid=
    for ((i = 0; i < 100; i++)); do
        pid=$($2)
        port_is_ours "$1" "$pid" && break
        sleep 0.1
    done
    printf '%s' "$pid"
}

dockerd_pid() { pid_with "$STATE/dockerd.pid" "$SOCK"; }

# Start this instance's dockerd, clearing what a killed one left behind.
dockerd_start() {
    local pid cpid i log=$STATE/dockerd.log
    pid=$(dockerd_pid)
    if [[ -n $pid ]]; then
        # Ours, alive, not answering: maybe still starting; else replace it.
        for ((i = 0; i < 40; i++)); do
            docker_ok && return 0
            sleep 0.5
        done
        kill_wait "$pid" 20
    fi
    rm -f "$STATE/dockerd.pid" "$SOCK"
    # A containerd left by a killed dockerd: stop it (its shims, and the containers
    # they hold, survive; the new containerd reconnects to them).
    cpid=$(pid_from "$EXEC/containerd/containerd.pid")
    if [[ -n $cpid ]]; then
        if proc_has "$cpid" "$EXEC/containerd"; then kill_wait "$cpid" 10; fi
        rm -f "$EXEC/containerd/containerd.pid"
    fi
    mkdir -p "$EXEC" "$STATE/docker"
    chmod 700 "$EXEC"
    [[ -f $STATE/daemon.json ]] || echo '{}' >"$STATE/daemon.json"
    if [[ -f $log ]] && (($(stat -c %s "$log") > 20000000)); then mv -f "$log" "$log.1"; fi
    printf '\n=== %s: starting dockerd ===\n' "$(date -Is)" >>"$log"
    launch_detached /usr/sbin/dockerd \
        --config-file "$STATE/daemon.json" \
        --data-root "$STATE/docker" \
        --exec-root "$EXEC" \
        --pidfile "$STATE/dockerd.pid" \
        --host "unix://$SOCK" \
        --group docker \
        --bridge=none --iptables=false --ip6tables=false \
        >>"$log" 2>&1
    pid=$!
    for ((i = 0; i < 240; i++)); do
        docker_ok && return 0
        if ! alive "$pid"; then
            die "dockerd exited at start: $(last_line "$log") (log: $log)"
        fi
        sleep 0.25
    done
    die "dockerd did not answer on $SOCK within 60 s (log: $log)"
}

# Stop this instance's dockerd and anything its containerd left running.
dockerd_stop() {
    local pid
    pid=$(dockerd_pid)
    [[ -z $pid ]] || kill_wait "$pid" 60
    rm -f "$STATE/dockerd.pid"
    for pid in $(pids_with "$EXEC/containerd"); do kill_wait "$pid" 10; done
    rm -f "$SOCK" "$EXEC/containerd/containerd.pid"
}

# ---------------------------------------------------------------- sshd
sshd_pid() { pid_with "$STATE/sshd.pid" "$SSHD_CONFIG"; }

sshd_stop() {
    local pid
    pid=$(sshd_pid)
    [[ -z $pid ]] || kill_wait "$pid" 10
    rm -f "$STATE/sshd.pid"
}

# ---------------------------------------------------------------- cron
# The one cron daemon of the machine (shared by all instances), and the file where
# up.sh records the one it started.
CRON_MARK=$ROOT/cron.started

cron_pid() {
    local pid
    pid=$(pid_from /run/crond.pid)
    proc_has "$pid" cron && printf '%s' "$pid"
    return 0
}

# Is another instance of this root still up (its sshd alive)? Then it still needs cron.
other_instance_up() {
    local d pid
    for d in "$ROOT"/*/; do
        d=${d%/}
        [[ $d != "$STATE" && -f $d/sshd_config ]] || continue
        pid=$(pid_from "$d/sshd.pid")
        proc_has "$pid" "$d/sshd_config" && return 0
    done
    return 1
}

# Stop the cron daemon if the sandbox started it and no other instance is up.
cron_stop_if_unused() {
    local pid mine
    pid=$(cron_pid)
    mine=$(pid_from "$CRON_MARK")
    if [[ -z $pid ]]; then
        rm -f "$CRON_MARK"
        say "cron: not running"
    elif [[ $pid != "$mine" ]]; then
        say "cron: running (pid $pid), not started by the sandbox: left alone"
    elif other_instance_up; then
        say "cron: left running for the other instances that are up"
    else
        kill_wait "$pid" 10
        rm -f "$CRON_MARK"
        say "cron: stopped"
    fi
}

# ---------------------------------------------------------------- compose
# Run docker-compose in the project as the login user, as on production.
compose_as_user() {
    su - "$LOGIN" -c "cd $PROJECT_DIR && DOCKER_HOST=unix://$SOCK docker-compose -p $PROJECT -f $COMPOSE_FILE $*"
}

# Id of the running postgres container of the project, or nothing.
pg_container() {
    docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=postgres" 2>/dev/null | head -n1
}

# Unmount whatever is still mounted below the instance's directories (deepest first).
unmount_below() {
    local m
    awk -v a="$STATE/" -v b="$EXEC/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

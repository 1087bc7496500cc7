#!/bin/bash
# Bring up (or check) a sandbox host shaped like production "aidset": a login user in
# the docker group reached over SSH on 127.0.0.1, a private Docker engine running the
# aimms-web compose project (PostgreSQL 15 + Redis) on external volumes, demo data.
#
#   bash sandbox/up.sh            # as root, from anywhere
#
# Knobs: SANDBOX_NAME (aidset), SANDBOX_ROWS (20000), SANDBOX_ROOT
# (/var/lib/aimms-ops-sandbox), SANDBOX_OUT (<repo>/sandbox). Idempotent: when all is
# up it checks and changes nothing. Writes $SANDBOX_OUT/{ssh_config,inventory.yml,env}.
set -euo pipefail
PROG=up.sh

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=offsite.sh
source "$(dirname "${BASH_SOURCE[0]}")/offsite.sh"

T_START=$EPOCHREALTIME
[[ $(id -u) == 0 ]] || die "run as root"

# Packages: name of a command or file that proves it is installed, then the package.
PACKAGES=(
    /usr/sbin/dockerd:docker.io
    /usr/bin/docker-compose:docker-compose
    /usr/sbin/sshd:openssh-server
    /usr/bin/ssh:openssh-client
    /usr/bin/mmdebstrap:mmdebstrap
    /usr/bin/pigz:pigz
    /usr/bin/igzip:isal
    /usr/bin/zstd:zstd
    /usr/bin/crontab:cron
    /usr/sbin/cron:cron
    /usr/bin/ss:iproute2
    /usr/bin/flock:util-linux
    /usr/bin/setsid:util-linux
    /usr/bin/shellcheck:shellcheck
    /usr/bin/pgrep:procps
    /usr/bin/curl:curl
    /usr/bin/python3:python3-minimal
    /usr/bin/rclone:rclone
    /usr/bin/age:age
)
# The image: its package list is the cache key of the root file system tarball. Like
# the official postgres:15 image, it carries no pigz, zstd or igzip: the backup's
# faster tools are on the host (PACKAGES above), where production can have them.
IMAGE_SUITE=bookworm
IMAGE_PACKAGES=postgresql-15,redis-server,gzip,procps
ROOTFS_KEY=$(printf '%s %s' "$IMAGE_SUITE" "$IMAGE_PACKAGES" | sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/rootfs-$ROOTFS_KEY.tar
BASE_IMAGE=aimms-ops-sandbox/base:$ROOTFS_KEY

# ---------------------------------------------------------------- steps
step_packages() {
    local want=() entry t0 policy_created=0
    for entry in "${PACKAGES[@]}"; do
        [[ -x ${entry%%:*} ]] || want+=("${entry#*:}")
    done
    if ((${#want[@]} == 0)); then
        say "packages: present"
        return
    fi
    mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
    t0=$EPOCHREALTIME
    local log=$ROOT/apt.log
    mkdir -p "$ROOT"
    # No init system here; make sure no package starts a system-wide daemon.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    local rc=0
    {
        apt_get update -q &&
            DEBIAN_FRONTEND=noninteractive apt_get install -y -q "${want[@]}"
    } >"$log" 2>&1 || rc=$?
    ((policy_created == 0)) || rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${want[*]} failed: $(last_line "$log") (log: $log)"
    say "packages: installed ${want[*]} in $(since "$t0") s"
}

step_user() {
    local what=()
    getent group docker >/dev/null || groupadd --system docker
    if ! id -u "$LOGIN" >/dev/null 2>&1; then
        useradd --create-home --home-dir "$HOME_DIR" --shell /bin/bash --groups docker "$LOGIN"
        what+=(created)
    fi
    if ! id -nG "$LOGIN" | tr ' ' '\n' | grep -qx docker; then
        usermod -aG docker "$LOGIN"
        what+=("added to docker")
    fi
    if [[ $(getent passwd "$LOGIN" | cut -d: -f7) != /bin/bash ]]; then
        usermod -s /bin/bash "$LOGIN"
        what+=("shell set")
    fi
    # useradd leaves the password "!" (locked); sshd without PAM refuses locked
    # accounts even for keys. "*" = no password, not locked.
    if [[ $(getent shadow "$LOGIN" | cut -d: -f2) == !* ]]; then
        usermod -p '*' "$LOGIN"
        what+=(unlocked)
    fi
    [[ -d $HOME_DIR ]] || { mkdir -p "$HOME_DIR" && chown "$LOGIN:" "$HOME_DIR" && what+=("home created"); }
    [[ -f $HOME_DIR/.aimms-ops-sandbox ]] || { echo "$NAME" >"$HOME_DIR/.aimms-ops-sandbox"; }
    # A crontab left by an earlier user of this name (another uid, after a purge): crontab
    # cannot replace a file it does not own in the sticky spool dir. Cron's own copy goes.
    local spool=/var/spool/cron/crontabs/$LOGIN
    if [[ -e $spool ]] && [[ $(stat -c %u "$spool") != "$(id -u "$LOGIN")" ]]; then
        rm -f -- "$spool"
        what+=("stale crontab removed")
    fi

    # Client key pair (kept in the state dir, used by root) and its authorization.
    if [[ ! -s $CLIENT_KEY ]] || ! ssh-keygen -y -f "$CLIENT_KEY" >/dev/null 2>&1; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "aimms-ops-sandbox-$NAME" -f "$CLIENT_KEY"
        what+=("client key generated")
    fi
    [[ -s $CLIENT_KEY.pub ]] || ssh-keygen -y -f "$CLIENT_KEY" >"$CLIENT_KEY.pub"
    chmod 600 "$CLIENT_KEY"
    local pub line
    pub="$(cut -d' ' -f1,2 "$CLIENT_KEY.pub") aimms-ops-sandbox-$NAME"
    install -d -m 700 -o "$LOGIN" -g "$LOGIN" "$HOME_DIR/.ssh"
    if {
        if [[ -f $HOME_DIR/.ssh/authorized_keys ]]; then
            while IFS= read -r line; do
                [[ $line == *" aimms-ops-sandbox-$NAME" ]] || printf '%s\n' "$line"
            done <"$HOME_DIR/.ssh/authorized_keys"
        fi
        printf '%s\n' "$pub"
    } | write_if_changed "$HOME_DIR/.ssh/authorized_keys" 600 "$LOGIN:$LOGIN"; then
        what+=("key authorized")
    fi
    if ((${#what[@]})); then
        say "user: $LOGIN $(printf '%s, ' "${what[@]}" | sed 's/, $//')"
    else
        say "user: $LOGIN present"
    fi
}

step_dockerd() {
    if docker_ok; then
        say "dockerd: running"
        return
    fi
    local t0=$EPOCHREALTIME
    dockerd_start
    say "dockerd: started in $(since "$t0") s"
}

port_taken() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
port_is_ours() { [[ -n $2 ]] && ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2,"; }

choose_port() {
    local base p i
    base=$(($(printf '%s' "$NAME" | cksum | cut -d' ' -f1) % 5000 + 22000))
    for ((i = 0; i < 2000; i++)); do
        p=$(((base - 22000 + i) % 8000 + 22000))
        port_taken "$p" || {
            echo "$p"
            return
        }
    done
    die "no free TCP port found on 127.0.0.1 in 22000-29999"
}

write_sshd_config() {
    write_if_changed "$SSHD_CONFIG" 644 root:root <<EOF
# Generated by sandbox/up.sh: sshd of sandbox instance "$NAME".
Port $PORT
ListenAddress 127.0.0.1
HostKey $HOST_KEY
PidFile $STATE/sshd.pid
AllowUsers $LOGIN
AuthorizedKeysFile .ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes yes
SetEnv DOCKER_HOST=unix://$SOCK
Subsystem sftp internal-sftp
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
LogLevel INFO
EOF
}

step_sshd() {
    local pid changed=0 t0=$EPOCHREALTIME
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    if ensure_host_key "$HOST_KEY" "aimms-ops-sandbox-$NAME-host"; then changed=1; fi
    PORT=$(pid_from "$STATE/ssh_port")
    pid=$(sshd_pid)
    if [[ -z $PORT ]] || { ! port_is_ours "$PORT" "$pid" && port_taken "$PORT"; }; then
        [[ -z $PORT ]] || say "sshd: port $PORT is taken by another process, choosing a new one"
        PORT=$(choose_port)
        echo "$PORT" >"$STATE/ssh_port"
    fi
    if write_sshd_config; then changed=1; fi
    if ((changed == 0)) && port_is_ours "$PORT" "$pid"; then
        say "sshd: running on 127.0.0.1:$PORT"
        return
    fi
    sshd_stop
    for _ in 1 2 3; do
        /usr/sbin/sshd -t -f "$SSHD_CONFIG" 2>"$STATE/sshd-test.log" ||
            die "sshd rejects $SSHD_CONFIG: $(last_line "$STATE/sshd-test.log")"
        launch_detached /usr/sbin/sshd -f "$SSHD_CONFIG" -E "$STATE/sshd.log" >/dev/null 2>&1
        wait $! || die "sshd failed to start: $(last_line "$STATE/sshd.log") (log: $STATE/sshd.log)"
        pid=$(await_port "$PORT" sshd_pid)
        if port_is_ours "$PORT" "$pid"; then
            say "sshd: started on 127.0.0.1:$PORT in $(since "$t0") s"
            return
        fi
        sshd_stop
        # Lost a race for the port (or it was never free to bind): take another one.
        PORT=$(choose_port)
        echo "$PORT" >"$STATE/ssh_port"
        write_sshd_config || true
    done
    die "sshd did not listen on 127.0.0.1 (log: $STATE/sshd.log)"
}

image_build_hash() {
    cat "$SANDBOX_DIR/docker-entrypoint.sh" - <<<"$ROOTFS_KEY $(declare -f write_build_context)" | sha256sum | cut -c1-16
}

write_build_context() {
    local dir=$1 hash=$2
    rm -rf "$dir"
    mkdir -p "$dir"
    install -m 755 "$SANDBOX_DIR/docker-entrypoint.sh" "$dir/docker-entrypoint.sh"
    cat >"$dir/Dockerfile" <<EOF
FROM $BASE_IMAGE
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data \\
    LANG=C.UTF-8
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
LABEL org.aimms-ops.sandbox.build=$hash
EXPOSE 5432 6379
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
EOF
}

ensure_rootfs() {
    local lockfd tmp t0
    mkdir -p "$CACHE"
    exec {lockfd}>"$CACHE/.lock"
    flock -w 1800 "$lockfd" || die "timed out waiting for another instance building $ROOTFS_TAR"
    if [[ ! -s $ROOTFS_TAR ]]; then
        # Any temporary tarball here is a leftover of a killed build (we hold the lock).
        rm -f "$CACHE"/rootfs-*.tmp-*.tar
        tmp=$CACHE/rootfs-$ROOTFS_KEY.tmp-$$.tar
        t0=$EPOCHREALTIME
        mmdebstrap --variant=apt --format=tar --include="$IMAGE_PACKAGES" \
            "$IMAGE_SUITE" "$tmp" </dev/null >"$STATE/mmdebstrap.log" 2>&1 ||
            {
                rm -f "$tmp"
                die "mmdebstrap failed: $(last_line "$STATE/mmdebstrap.log") (log: $STATE/mmdebstrap.log)"
            }
        mv -f "$tmp" "$ROOTFS_TAR"
        say "rootfs: $(basename "$ROOTFS_TAR") built in $(since "$t0") s"
    fi
    exec {lockfd}>&-
}

IMAGE_CHANGED=0
step_image() {
    local want have t0=$EPOCHREALTIME log=$STATE/image-build.log
    want=$(image_build_hash)
    have=$(docker image inspect -f '{{index .Config.Labels "org.aimms-ops.sandbox.build"}}' "$IMAGE" 2>/dev/null || true)
    if [[ $have == "$want" ]]; then
        say "image: $IMAGE present"
        return
    fi
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        ensure_rootfs
        docker import "$ROOTFS_TAR" "$BASE_IMAGE" >"$log" 2>&1 ||
            die "docker import failed: $(last_line "$log") (log: $log)"
    fi
    write_build_context "$STATE/build" "$want"
    DOCKER_BUILDKIT=0 docker build --network none -t "$IMAGE" "$STATE/build" >>"$log" 2>&1 ||
        die "docker build failed: $(last_line "$log") (log: $log)"
    IMAGE_CHANGED=1
    say "image: $IMAGE built in $(since "$t0") s"
}

# PITR's image: the sandbox's postgres image plus Debian's pgbackrest, installed from
# the .deb apt downloads on this machine (cached), as production's derived image is the
# official one plus `apt-get install pgbackrest`. Built offline (--network none).
step_pitr_image() {
    local want have t0=$EPOCHREALTIME log=$STATE/pitr-image.log dir=$STATE/pitr-build debs
    debs=$CACHE/pitr-debs
    if ! compgen -G "$debs/pgbackrest_*.deb" >/dev/null; then
        rm -rf "$debs.tmp" && mkdir -p "$debs.tmp"
        (cd "$debs.tmp" && apt-get download pgbackrest >"$log" 2>&1) ||
            { apt_get update -q >>"$log" 2>&1 && (cd "$debs.tmp" && apt-get download pgbackrest >>"$log" 2>&1); } ||
            die "apt-get download pgbackrest failed: $(last_line "$log") (log: $log)"
        rm -rf "$debs" && mv "$debs.tmp" "$debs"
    fi
    want=$( (docker image inspect -f '{{.Id}}' "$IMAGE"; sha256sum "$debs"/*.deb) | sha256sum | cut -c1-16)
    have=$(docker image inspect -f '{{index .Config.Labels "org.aimms-ops.sandbox.pitr"}}' "$PITR_IMAGE" 2>/dev/null || true)
    if [[ $have == "$want" ]]; then
        say "pitr image: $PITR_IMAGE present"
        return
    fi
    rm -rf "$dir" && mkdir -p "$dir" && cp "$debs"/*.deb "$dir/"
    cat >"$dir/Dockerfile" <<EOF
FROM $IMAGE
COPY *.deb /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs && pgbackrest version
LABEL org.aimms-ops.sandbox.pitr=$want
EOF
    DOCKER_BUILDKIT=0 docker build --network none -t "$PITR_IMAGE" "$dir" >"$log" 2>&1 ||
        die "docker build of $PITR_IMAGE failed: $(last_line "$log") (log: $log)"
    say "pitr image: $PITR_IMAGE built in $(since "$t0") s"
}

# What a PITR test (or a killed one) left: the override, the archive settings. The stack
# goes back to its compose file alone, as a new sandbox has it.
step_pitr_off() {
    local override=$PROJECT_DIR/docker-compose.pitr.yml cid mode=""
    cid=$(pg_container)
    [[ -z $cid ]] || mode=$(docker exec "$cid" psql -X -At -U postgres -c 'SHOW archive_mode' 2>/dev/null || true)
    [[ -e $override || $mode == on ]] || return 0
    if [[ -n $cid ]]; then
        docker exec "$cid" psql -X -q -U postgres -c 'ALTER SYSTEM RESET archive_mode' \
            -c 'ALTER SYSTEM RESET archive_command' -c 'ALTER SYSTEM RESET archive_timeout' \
            >/dev/null 2>&1 || true
    fi
    rm -f "$override" "$override.off" "$PROJECT_DIR/.pitr.env" "$STATE/compose.applied"
    say "pitr: turned off what a test left (the stack goes back to $COMPOSE_FILE alone)"
}

step_volumes() {
    local v made=()
    for v in "$VOL_PG" "$VOL_REDIS"; do
        docker volume inspect "$v" >/dev/null 2>&1 && continue
        docker volume create "$v" >/dev/null
        made+=("$v")
    done
    if ((${#made[@]})); then say "volumes: created ${made[*]}"; else say "volumes: present"; fi
}

# Passwords are made once and kept in the project's .env (as production keeps them).
env_value() { sed -n "s/^$1=//p" "$PROJECT_DIR/.env" 2>/dev/null | head -n1; }
new_password() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }

write_project() {
    local changed=1 pg_pw app_pw
    install -d -m 755 -o "$LOGIN" -g "$LOGIN" "$PROJECT_DIR"
    pg_pw=$(env_value POSTGRES_PASSWORD)
    app_pw=$(env_value AIMMS_DB_PASSWORD)
    [[ -n $pg_pw ]] || pg_pw=$(new_password)
    [[ -n $app_pw ]] || app_pw=$(new_password)
    write_if_changed "$PROJECT_DIR/.env" 600 "$LOGIN:$LOGIN" <<EOF || changed=0
POSTGRES_PASSWORD=$pg_pw
AIMMS_DB_PASSWORD=$app_pw
EOF
    local c2=1
    write_if_changed "$PROJECT_DIR/$COMPOSE_FILE" 644 "$LOGIN:$LOGIN" <<EOF || c2=0
# Sandbox copy of the production stack (generated by sandbox/up.sh of aimms-ops).
version: "3.8"

services:
  postgres:
    image: $IMAGE
    network_mode: none
    restart: unless-stopped
    stop_signal: SIGINT
    stop_grace_period: 30s
    env_file: .env
    environment:
      PGDATA: /var/lib/postgresql/data
    volumes:
      - postgres_data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres", "-d", "postgres"]
      interval: 5s
      timeout: 5s
      retries: 10
      start_period: 30s

  redis:
    image: $IMAGE
    command: ["redis-server", "--dir", "/data", "--appendonly", "yes"]
    network_mode: none
    restart: unless-stopped
    volumes:
      - redis_data:/data

volumes:
  postgres_data:
    external: true
    name: $VOL_PG
  redis_data:
    external: true
    name: $VOL_REDIS
EOF
    ((changed || c2))
}

# Ready means the real server answers a query: the entrypoint's temporary server,
# which creates the application role on a new volume, listens on no address.
pg_ready() {
    local cid listen
    cid=$(pg_container)
    [[ -n $cid ]] || return 1
    listen=$(docker exec "$cid" psql -X -A -t -U postgres -d postgres \
        -c 'SHOW listen_addresses' 2>/dev/null) || return 1
    [[ -n $listen ]]
}

# Postgres answers; also wait for its healthcheck to say so, so callers see "healthy".
wait_healthy() {
    local cid health i
    cid=$(pg_container)
    for ((i = 0; i < 240; i++)); do
        health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid" 2>/dev/null || true)
        [[ $health == healthy || -z $health ]] && return 0
        sleep 0.25
    done
    say "compose: warning: postgres container still reports health=$health"
}

# The sandbox runs compose v1, as Debian 12 ships it. tests/integration/test_compose_v2.py puts a
# compose v2 plugin (with a marker file beside it) in the login user's
# ~/.docker/cli-plugins and runs the stack under it; a run that did not clean up (killed)
# is undone here: the v2 stack goes down (volumes kept) and the plugin goes away, so that
# step_compose brings it up again with v1.
step_compose_v1() {
    local plugin=$HOME_DIR/.docker/cli-plugins/docker-compose
    [[ -e $plugin.aimms-ops-test ]] || return 0
    su - "$LOGIN" -c "cd $PROJECT_DIR && DOCKER_HOST=unix://$SOCK docker compose -p $PROJECT -f $COMPOSE_FILE down" \
        >>"$STATE/compose.log" 2>&1 || true
    rm -f "$plugin" "$plugin.aimms-ops-test" "$STATE/compose.applied"
    say "compose: removed the compose v2 plugin a test left; back to compose v1"
}

step_compose() {
    local t0=$EPOCHREALTIME states marker want i cid log=$STATE/compose.log
    local written=0
    if write_project; then written=1; fi
    want=$(cat "$PROJECT_DIR/$COMPOSE_FILE" "$PROJECT_DIR/.env" <(docker image inspect -f '{{.Id}}' "$IMAGE") | sha256sum | cut -c1-16)
    marker=$(cat "$STATE/compose.applied" 2>/dev/null || true)
    states=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --format '{{.Label "com.docker.compose.service"}}={{.State}}' | sort | tr '\n' ' ')
    if ((written == 0 && IMAGE_CHANGED == 0)) && [[ $marker == "$want" && $states == "postgres=running redis=running " ]] && pg_ready; then
        wait_healthy
        say "compose: $PROJECT running, postgres accepting connections"
        return
    fi
    [[ -z $states ]] || say "compose: containers were: ${states% }"
    compose_as_user up -d >"$log" 2>&1 ||
        die "docker-compose up failed: $(last_line "$log") (log: $log)"
    echo "$want" >"$STATE/compose.applied"
    # A container stuck in its restart back-off (up to a minute between tries) is not
    # touched by `up -d`: restart it now so that it tries at once.
    for cid in $(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter status=restarting); do
        docker restart -t 30 "$cid" >>"$log" 2>&1 || true
        say "compose: restarted $(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$cid"), it was in a restart loop"
    done
    for ((i = 0; i < 480; i++)); do
        pg_ready && break
        sleep 0.25
    done
    if ! pg_ready; then
        cid=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=postgres" | head -n1)
        die "postgres did not accept connections within 120 s (container ${cid:-missing}: $(docker inspect -f '{{.State.Status}}' "$cid" 2>/dev/null); see: docker logs $cid)"
    fi
    wait_healthy
    say "compose: $PROJECT up, postgres accepting connections in $(since "$t0") s"
}

psql_super() { docker exec -i "$(pg_container)" psql -X -q -At -v ON_ERROR_STOP=1 -U postgres "$@"; }

step_data() {
    local t0=$EPOCHREALTIME cur tables customers log=$STATE/seed.log
    local want="sandbox rows=$ROWS"
    # The role and database exist from initdb; recreate them if someone dropped them.
    if [[ $(psql_super -d postgres -c "select count(*) from pg_roles where rolname = 'aimms_user'") != 1 ]]; then
        psql_super -d postgres -v pw="$(env_value AIMMS_DB_PASSWORD)" >/dev/null <<<"CREATE ROLE aimms_user LOGIN PASSWORD :'pw';"
        say "data: role aimms_user recreated"
    fi
    if [[ $(psql_super -d postgres -c "select count(*) from pg_database where datname = 'aimms_web'") != 1 ]]; then
        psql_super -d postgres -c "CREATE DATABASE aimms_web OWNER aimms_user" >/dev/null
        say "data: database aimms_web recreated"
    fi
    # A killed test may have left it closed to connections (the size-drop guard's test).
    if [[ $(psql_super -d postgres -c "select datallowconn from pg_database where datname = 'aimms_web'") != t ]]; then
        psql_super -d postgres -c "ALTER DATABASE aimms_web ALLOW_CONNECTIONS true" >/dev/null
        say "data: database aimms_web accepts connections again"
    fi
    cur=$(psql_super -d aimms_web -c "select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database where datname = 'aimms_web'")
    tables=$(psql_super -d aimms_web -c "select count(*) from pg_tables where schemaname = 'public' and tablename in ('customers', 'orders', 'audit_log')")
    if [[ $cur == "$want" && $tables == 3 ]]; then
        say "data: seeded ($ROWS rows in orders)"
        return
    fi
    customers=$((ROWS / 10 > 50 ? ROWS / 10 : 50))
    psql_super -d aimms_web -v rows="$ROWS" -v customers="$customers" -v marker="$want" >"$log" 2>&1 <<'SQL' ||
BEGIN;
DROP TABLE IF EXISTS audit_log, orders, customers CASCADE;
SET LOCAL ROLE aimms_user;

CREATE TABLE customers (
    id         serial PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    profile    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, profile, created_at)
SELECT initcap(substr(md5(random()::text), 1, 7)) || ' ' || initcap(substr(md5(random()::text), 1, 9)),
       'user' || g || '.' || substr(md5(random()::text), 1, 6) || '@example.com',
       jsonb_build_object(
           'tier', (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3],
           'country', (ARRAY['NL', 'DE', 'US', 'FR', 'BE', 'GB'])[1 + g % 6],
           'newsletter', random() < 0.5,
           'phone', '+31 6 ' || (10000000 + (random() * 89999999)::int),
           'tags', jsonb_build_array(substr(md5(random()::text), 1, 8), substr(md5(random()::text), 1, 8))),
       now() - random() * interval '900 days'
FROM generate_series(1, :customers) AS g;

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total       numeric(12, 2) NOT NULL,
    items       jsonb NOT NULL,
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders (customer_id, total, items, note, created_at)
SELECT 1 + (random() * (:customers - 1))::int,
       round((random() * 2000)::numeric, 2),
       (SELECT jsonb_agg(jsonb_build_object(
                   'sku', upper(substr(md5(random()::text || i), 1, 10)),
                   'qty', 1 + (random() * 4)::int,
                   'price', round((random() * 250)::numeric, 2)))
        FROM generate_series(1, 1 + g % 4) AS i),
       CASE WHEN g % 3 = 0 THEN NULL ELSE md5(random()::text) || ' ' || md5(random()::text) END,
       now() - random() * interval '365 days'
FROM generate_series(1, :rows) AS g;
CREATE INDEX orders_customer_id_idx ON orders (customer_id);

-- No primary key on purpose (production has such tables too).
CREATE TABLE audit_log (
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb
);
INSERT INTO audit_log (at, actor, action, detail)
SELECT now() - random() * interval '30 days',
       'user' || (1 + (random() * 49)::int),
       (ARRAY['login', 'logout', 'update', 'delete', 'export'])[1 + g % 5],
       jsonb_build_object('ip', '127.0.0.' || (1 + g % 250), 'request_id', md5(random()::text))
FROM generate_series(1, 500) AS g;

RESET ROLE;
COMMENT ON DATABASE aimms_web IS :'marker';
COMMIT;
ANALYZE customers;
ANALYZE orders;
ANALYZE audit_log;
SQL
        die "seeding aimms_web failed: $(grep -m1 -E 'ERROR|FATAL' "$log" || last_line "$log") (log: $log)"
    say "data: seeded $ROWS rows in orders in $(since "$t0") s"
}

step_files() {
    local changed=()
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd -P)
    printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$HOST_KEY.pub")" |
        write_if_changed "$KNOWN_HOSTS" 644 root:root && changed+=(known_hosts)
    write_if_changed "$OUT/ssh_config" 644 root:root <<EOF && changed+=(ssh_config)
Host $HOST_ALIAS
  HostName 127.0.0.1
  Port $PORT
  User $LOGIN
  IdentityFile $CLIENT_KEY
  IdentitiesOnly yes
  UserKnownHostsFile $KNOWN_HOSTS
  StrictHostKeyChecking yes
EOF
    write_if_changed "$OUT/inventory.yml" 644 root:root <<EOF && changed+=(inventory.yml)
# Generated by sandbox/up.sh for the sandbox host; do not edit.
default_host: $HOST_ALIAS
hosts:
  $HOST_ALIAS:
    ssh_config: $OUT/ssh_config
    backup_dir: $HOME_DIR/postgres-backups
    backup_script: $HOME_DIR/backup-postgres.sh
    log_file: $HOME_DIR/postgres-backup.log
    cron_schedule: "0 2 * * *"
    retention_days: 7
    min_keep: 3
    compose:
      project_dir: $PROJECT_DIR
      file: $COMPOSE_FILE
      project: $PROJECT
      postgres_service: postgres
    postgres:
      superuser: postgres
    volumes:
      postgres: $VOL_PG
      redis: $VOL_REDIS
EOF
    write_if_changed "$OUT/env" 644 root:root <<EOF && changed+=(env)
SANDBOX_NAME=$NAME
SANDBOX_STATE=$STATE
DOCKER_HOST=unix://$SOCK
SANDBOX_USER=$LOGIN
SANDBOX_PORT=$PORT
SANDBOX_HOST=$HOST_ALIAS
SANDBOX_SSH_CONFIG=$OUT/ssh_config
SANDBOX_INVENTORY=$OUT/inventory.yml
SANDBOX_PITR_IMAGE=$PITR_IMAGE
EOF
    if ((${#changed[@]})); then say "files: wrote ${changed[*]} (in $OUT)"; else say "files: unchanged (in $OUT)"; fi
}

# The machine's cron daemon (Debian's cron), as production runs one: a single daemon
# serves every login user's crontab, so all the instances share it. It is started
# when none runs (a daemon killed earlier, even left as a zombie, is replaced) and
# recorded in $CRON_MARK, so that down.sh stops only a daemon the sandbox started.
step_cron() {
    local pid t0=$EPOCHREALTIME i
    pid=$(cron_pid)
    if [[ -n $pid ]]; then
        say "cron: running (pid $pid)"
        return
    fi
    rm -f /run/crond.pid
    launch_detached /usr/sbin/cron -f >>"$ROOT/cron.log" 2>&1
    for ((i = 0; i < 50; i++)); do
        pid=$(cron_pid)
        [[ -n $pid ]] && break
        alive "$!" || die "cron exited at start: $(last_line "$ROOT/cron.log") (log: $ROOT/cron.log)"
        sleep 0.1
    done
    [[ -n $pid ]] || die "cron did not start within 5 s (log: $ROOT/cron.log)"
    echo "$pid" >"$CRON_MARK"
    say "cron: started (pid $pid) in $(since "$t0") s"
}

step_check_ssh() {
    local v
    v=$(ssh -F "$OUT/ssh_config" -o BatchMode=yes -o ConnectTimeout=10 "$HOST_ALIAS" \
        'docker version --format "{{.Server.Version}}"' 2>"$STATE/ssh-check.log") ||
        die "ssh -F $OUT/ssh_config $HOST_ALIAS failed: $(last_line "$STATE/ssh-check.log")"
    say "ssh: $LOGIN@127.0.0.1:$PORT reaches docker $v"
}

# ---------------------------------------------------------------- main
mkdir -p "$STATE"
chmod 755 "$ROOT"
chmod 711 "$STATE" # the login user must reach docker.sock; the rest stays root's
exec {LOCKFD}>"$STATE/.lock"
flock -n "$LOCKFD" || {
    say "waiting for another up.sh/down.sh of instance $NAME"
    flock -w 1800 "$LOCKFD" || die "timed out waiting for the lock on $STATE"
}

say "sandbox $NAME: state $STATE"
step_packages
step_user
step_dockerd
step_sshd
step_image
step_pitr_image
step_volumes
step_compose_v1
step_pitr_off
step_compose
step_data
step_cron
step_files
step_s3
step_vault
step_offsite_files
step_check_ssh
say "ready in $(since "$T_START") s: ssh -F $OUT/ssh_config $HOST_ALIAS"

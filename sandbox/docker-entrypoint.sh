#!/bin/bash
# Entrypoint of the sandbox image aimms-ops-sandbox/postgres:15 (Debian bookworm with
# PostgreSQL 15 and Redis, built offline by sandbox/up.sh).
#
# Behaves like the official postgres image's entrypoint for what aimms-ops relies on:
#   postgres [ARGS]      initialise $PGDATA when it holds no PG_VERSION (superuser
#                        "postgres" with $POSTGRES_PASSWORD, role aimms_user with
#                        $AIMMS_DB_PASSWORD owning database aimms_web), then exec
#                        postgres as OS user postgres. A data directory that has a
#                        PG_VERSION is never re-initialised, even when broken.
#   redis-server [ARGS]  exec redis-server as OS user redis (data in /data).
#   anything else        exec'd as is.
set -euo pipefail

export PATH=/usr/lib/postgresql/15/bin:$PATH
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
SOCKET_DIR=/var/run/postgresql

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

init_cluster() {
    if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
        log "error: the data directory is empty and POSTGRES_PASSWORD is not set"
        exit 1
    fi
    if [[ -z ${AIMMS_DB_PASSWORD:-} ]]; then
        log "error: the data directory is empty and AIMMS_DB_PASSWORD is not set"
        exit 1
    fi
    log "initialising a new cluster in $PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"

    local pwfile
    pwfile=$(mktemp)
    chown postgres "$pwfile"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    as_postgres initdb --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >&2
    rm -f "$pwfile"

    cat >"$PGDATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all       all            trust
host    all       all   all      scram-sha-256
EOF
    printf "\nlisten_addresses = '*'\npassword_encryption = scram-sha-256\n" >>"$PGDATA/postgresql.conf"

    # Private server (no TCP) to create the application role and database.
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --timeout=120 --silent \
        -o "-c listen_addresses='' -c unix_socket_directories=$SOCKET_DIR" start
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
        -v app_password="$AIMMS_DB_PASSWORD" <<'SQL'
CREATE ROLE aimms_user LOGIN PASSWORD :'app_password';
CREATE DATABASE aimms_web OWNER aimms_user;
SQL
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --timeout=120 --silent -m fast stop
    log "cluster initialised: superuser postgres, role aimms_user, database aimms_web"
}

case ${1:-} in
postgres)
    shift
    mkdir -p "$SOCKET_DIR"
    chown postgres:postgres "$SOCKET_DIR"
    chmod 2775 "$SOCKET_DIR"
    mkdir -p "$PGDATA"
    if [[ ! -s $PGDATA/PG_VERSION ]]; then
        init_cluster
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
        postgres -D "$PGDATA" -c "unix_socket_directories=$SOCKET_DIR" "$@"
    ;;
redis-server)
    mkdir -p /data
    chown redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups -- "$@"
    ;;
*)
    exec "$@"
    ;;
esac

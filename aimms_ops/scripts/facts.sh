#!/usr/bin/env bash
# facts.sh PROJECT_DIR COMPOSE_FILE PROJECT SERVICE SUPERUSER BACKUP_DIR VOLUME...
# Prints what the health checks need as key=value lines on stdout. Read-only.
set -uo pipefail
# @include lib.sh

project_dir=$1 compose_file=$2 project=$3 service=$4 superuser=$5 backup_dir=$6
shift 6

echo "ssh.user=$(id -un)"
echo "ssh.hostname=$(hostname)"
echo "time.now=$(now_utc)"

if ver=$(docker version --format '{{.Server.Version}}' 2>&1); then
    echo "docker.ok=1"
    echo "docker.version=$ver"
else
    echo "docker.ok=0"
    echo "docker.error=$(printf '%s' "$ver" | tail -n 1)"
fi

if [ -f "$compose_file" ]; then
    echo "compose.file_exists=1"
else
    echo "compose.file_exists=0"
fi
if compose_cmd; then
    echo "compose.cmd=${COMPOSE[*]}"
    if [ -f "$compose_file" ]; then
        if cfg=$(cd "$project_dir" && "${COMPOSE[@]}" -f "$compose_file" -p "$project" config 2>&1); then
            echo "compose.config_ok=1"
            echo "compose.config_b64=$(printf '%s' "$cfg" | base64 -w0)"
        else
            echo "compose.config_ok=0"
            echo "compose.config_error=$(printf '%s' "$cfg" | tail -n 1)"
        fi
    fi
else
    echo "compose.cmd="
fi

cid=$(resolve_container "$project" "$service" all)
echo "container.id=$cid"
if [ -n "$cid" ]; then
    docker inspect --format 'container.name={{.Name}}
container.state={{.State.Status}}
container.started_at={{.State.StartedAt}}
container.image={{.Config.Image}}
container.restart_count={{.RestartCount}}' "$cid" 2>/dev/null | sed 's#container.name=/#container.name=#'
    if out=$(docker exec "$cid" pg_isready -U "$superuser" 2>&1); then
        echo "postgres.ready=1"
    else
        echo "postgres.ready=0"
    fi
    echo "postgres.ready_detail=$(printf '%s' "$out" | tail -n 1)"
    # Every database of the cluster (names as hex), for the backups' coverage.
    if dbs=$(docker exec "$cid" psql -X -A -t -U "$superuser" -d template1 -c \
        "SELECT encode(convert_to(datname, 'UTF8'), 'hex') FROM pg_database ORDER BY 1" 2>/dev/null); then
        echo "postgres.databases=$(printf '%s' "$dbs" | paste -sd' ' -)"
    fi
fi

for vol in "$@"; do
    if docker volume inspect "$vol" >/dev/null 2>&1; then
        echo "volume.$vol.exists=1"
        echo "volume.$vol.mountpoint=$(docker volume inspect --format '{{.Mountpoint}}' "$vol")"
        echo "volume.$vol.used_by=$(docker ps -a --filter "volume=$vol" --format '{{.Names}}' | paste -sd, -)"
    else
        echo "volume.$vol.exists=0"
    fi
done

if [ -d "$backup_dir" ]; then
    echo "backup_dir.exists=1"
    [ -w "$backup_dir" ] && echo "backup_dir.writable=1" || echo "backup_dir.writable=0"
    df -Pk "$backup_dir" | awk 'NR==2 {print "backup_dir.avail_kb=" $4; print "backup_dir.size_kb=" $2}'
    # The pids that hold the backup lock now (a note of a live process: core/lock.py).
    live=$(agent holders --pids "$backup_dir/$BACKUP_LOCK" 2>/dev/null | tr '\n' ' ')
    echo "lock.backup.live=${live% }"
else
    echo "backup_dir.exists=0"
fi

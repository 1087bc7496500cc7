#!/usr/bin/env bash
# verify-backup.sh: prove that a backup restores, by restoring it into a throwaway
# PostgreSQL container. Installed by `fab install-backups` next to the backup script
# (cron runs it weekly) and run by `fab verify --deep`: one code path for both.
#
# Usage: verify-backup.sh [--config FILE] [options]
#   --config FILE       read the settings below from FILE (the backup script's settings);
#                       without it, verify-backup.sh.conf beside this script if there is
#                       one, else backup-postgres.sh.conf beside it (what install-backups
#                       writes next to the default backup script), so that a plain
#                       `verify-backup.sh` checks the newest backup
#   --backup-dir DIR    where the backups are                     (BACKUP_DIR)
#   --log-file FILE     one line per step is appended here         (LOG_FILE)
#   --project NAME      compose project of production              (COMPOSE_PROJECT)
#   --service NAME      compose service of production postgres     (COMPOSE_SERVICE)
#   --superuser NAME    role the dump is replayed as               (PG_SUPERUSER)
#   --file NAME|latest  the backup to verify (default: latest, the newest regular backup
#                       in BACKUP_DIR; a safety copy is never latest)
#   --protect VOLUME    a volume that must never be used (repeatable); every volume of
#                       the compose project's containers is protected as well
#   --wait SECONDS      how long the throwaway server may take to start (default 180)
#   --echo              also print the log lines on stderr
#   --report            print verify.KEY=VALUE lines on stdout (for fab verify)
#
# Steps, each one a named check:
#   checksum           the file matches the sha256 recorded beside it
#   disk               docker's disk has room for the trial restore
#   start              a container is started from the IMAGE of the production postgres
#                      container, with production's environment, a new volume of its
#                      own and --network none; its names are generated
#                      (aimms-ops-verify-STAMP-PID) and refused when they exist or name
#                      anything of production
#   gzip stream        the dump decompresses to its end          } checked while it is
#   (zstd stream)      (the same, for a .sql.zst)                }
#   dump header        it is a pg_dumpall cluster dump           } streamed through the
#   restore            psql (ON_ERROR_STOP) replays it all       } same dump scanner
#   completion marker  the dump ends with its completion marker  } as real restores do
#   databases          every database of the dump is there afterwards
#   live restore       the same dump replayed again onto the cluster the first replay
#                      made: what `fab restore` does onto a live cluster (its template1
#                      objects, postgres' properties, the roles already there)
# then the tables and their exact row counts are reported. The throwaway container and
# its volume are removed whatever happens (EXIT trap), and the removal is checked.
# The last log line of a run is "RESULT ok NAME databases=N tables=N rows=N seconds=N"
# or "RESULT failed: CHECK: REASON". Exit status 0 when the backup restored, else 1.
# shellcheck disable=SC2317  # trap handlers call functions
set -uo pipefail
umask 077

# @include lib.sh

BACKUP_DIR=${BACKUP_DIR:-}
LOG_FILE=${LOG_FILE:-}
COMPOSE_PROJECT=${COMPOSE_PROJECT:-}
COMPOSE_SERVICE=${COMPOSE_SERVICE:-@DEFAULT_COMPOSE_SERVICE@}
PG_SUPERUSER=${PG_SUPERUSER:-@DEFAULT_PG_SUPERUSER@}
FILE=latest
WAIT=180
PROTECT=()
ECHO=0
REPORT=0

usage_error() { printf 'verify-backup.sh: %s\n' "$1" >&2; exit 64; }

# Run as a file without --config: its own settings beside it, else the backup script's.
beside=()
[ -z "${BASH_SOURCE[0]:-}" ] ||
    beside=("${BASH_SOURCE[0]}.conf" "$(dirname -- "${BASH_SOURCE[0]}")/backup-postgres.sh.conf")
read_settings "${beside[@]}" -- "$@"
# shellcheck disable=SC2034  # every setting's flag is accepted; this script reads a few
while [ $# -gt 0 ]; do
    case $1 in
        --config) shift ;;
# @include settings-flags.sh
        --file) FILE=${2:-}; shift ;;
        --protect) PROTECT+=("${2:-}"); shift ;;
        --wait) WAIT=${2:-}; shift ;;
        --echo) ECHO=1 ;;
        --report) REPORT=1 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
require_settings "--config the backup script's settings file"
[[ $WAIT =~ ^[0-9]+$ ]] || usage_error "--wait must be a whole number of seconds"
if [ "$FILE" != latest ] && ! [[ $FILE =~ $BACKUP_NAME_RE ]]; then
    usage_error "not a backup name: $FILE"
fi

RUN_ID="verify[$$]"
STARTED=$(date +%s)
# The deep verify's own monitor, when the settings file names one (ping.verify_url).
PING_URL_VERIFY=${PING_URL_VERIFY:-}
PING_KIND=${PING_KIND:-@DEFAULT_PING_KIND@}
# shellcheck disable=SC2034  # read by the ping functions of lib.sh
PING_RID=$(new_rid)
PING_ENDED=0
ping_end() {
    [ "$PING_ENDED" = 0 ] || return 0
    PING_ENDED=1
    job_ping "$PING_URL_VERIFY" "$@"
}
CONTAINER="" VOLUME="" MADE_CONTAINER=0 MADE_VOLUME=0 WORK="" CLEANUP_PROBLEM="" REMOVED=0
NAME=""

log() {
    local line
    line="$(now_utc) $RUN_ID $*"
    printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true
    # Through say (lib.sh): a session that is gone must not stop the cleanup half-way.
    if [ "$ECHO" = 1 ]; then say "$line" >&2 || ECHO=0; fi
}
report() { if [ "$REPORT" = 1 ]; then say "$1" || REPORT=0; fi; }
check() { report "verify.check=$1"$'\t'"$2"$'\t'"$3"; }

# Remove the throwaway container and volume (only those this run made), then make sure
# they are gone. Safe to call twice.
# remove_made container|volume NAME RM-COMMAND...: remove what this run made (retried
# while docker still has it), then check that it is gone; a line in problems if not.
remove_made() {
    local kind=$1 name=$2 i
    shift 2
    for i in 1 2 3 4 5; do
        "$@" >/dev/null 2>&1 && break
        docker "$kind" inspect "$name" >/dev/null 2>&1 || break
        sleep "$i"
    done
    if docker "$kind" inspect "$name" >/dev/null 2>&1; then
        problems+=("$kind $name is still there ($*)")
    else
        log "removed $kind $name"
        REMOVED=1
    fi
}

cleanup() {
    local problems=()
    if [ "$MADE_CONTAINER" = 1 ]; then
        remove_made container "$CONTAINER" docker rm -f -v "$CONTAINER"
        MADE_CONTAINER=0
    fi
    if [ "$MADE_VOLUME" = 1 ]; then
        remove_made volume "$VOLUME" docker volume rm "$VOLUME"
        MADE_VOLUME=0
    fi
    if [ -n "$WORK" ]; then rm -rf -- "$WORK"; WORK=""; fi
    if [ ${#problems[@]} -gt 0 ]; then CLEANUP_PROBLEM="${problems[*]}"; fi
}

# fail CHECK REASON: record the failed check, clean up, log the RESULT line, exit 1.
fail() {
    trap - INT TERM HUP
    check "$1" CRITICAL "$2"
    cleanup
    local reason="$1: $2"
    if [ -n "$CLEANUP_PROBLEM" ]; then
        reason="$reason; cleanup failed: $CLEANUP_PROBLEM"
        check cleanup CRITICAL "$CLEANUP_PROBLEM"
    elif [ "$REMOVED" = 1 ]; then
        check cleanup OK "container and volume removed"
    fi
    report "verify.result=failed"
    report "verify.failed_check=$1"
    report "verify.reason=$2"
    report "verify.seconds=$(($(date +%s) - STARTED))"
    log "RESULT failed: $reason${NAME:+ ($NAME)}"
    if [ "$ECHO" != 1 ]; then say "verify failed: $reason" >&2 || true; fi
    ping_end exit:1 "verify failed: $reason"
    exit 1
}
trap cleanup EXIT
trap 'fail interrupted "interrupted by a signal"' INT TERM HUP
job_ping "$PING_URL_VERIFY" start

command -v python3 >/dev/null 2>&1 ||
    fail file "python3 is not installed on this host; aimms-ops' host program needs it (install python3)"

# --- which backup --------------------------------------------------------------------
[ -d "$BACKUP_DIR" ] || fail file "backup dir $BACKUP_DIR does not exist"
if [ "$FILE" = latest ]; then
    # latest: the newest backup that is not a safety copy of a restore or a rebuild.
    NAME=$(agent latest "$BACKUP_DIR") || fail file "there are no regular backups in $BACKUP_DIR"
else
    NAME=$FILE
fi
path="$BACKUP_DIR/$NAME"
[ -f "$path" ] || fail file "no backup named $NAME in $BACKUP_DIR"
report "verify.file=$NAME"
report "verify.path=$path"
size=$(stat -c %s -- "$path")
report "verify.size=$size"
log "START verify of $NAME ($(human "$size")): trial restore into a throwaway container"

# The locks (lib.sh): one verify at a time, and none while a restore or a rebuild
# changes the cluster it reads its image and environment from.
take_lock "$BACKUP_DIR/$VERIFY_LOCK" exclusive 0 verify ||
    fail lock "another verify is running (${LOCK_HELD_BY:-lock $BACKUP_DIR/$VERIFY_LOCK})"
take_lock "$BACKUP_DIR/$CLUSTER_LOCK" shared "${LOCK_TIMEOUT:-@DEFAULT_LOCK_TIMEOUT@}" verify ||
    fail lock "a restore or rebuild of the cluster is still running after ${LOCK_TIMEOUT:-@DEFAULT_LOCK_TIMEOUT@}s (${LOCK_HELD_BY:-unknown holder})"

# --- checksum ------------------------------------------------------------------------
[ "$size" -gt 0 ] || fail checksum "the file is empty"
sum=$(sha256_stream <"$path")
report "verify.sha256=$sum"
recorded=""
if [ -r "$path.sha256" ]; then recorded=$(cut -d' ' -f1 <"$path.sha256" | head -n 1); fi
if [ -z "$recorded" ]; then
    check checksum WARNING "no .sha256 beside the backup: nothing to compare with"
    log "checksum: no .sha256 beside $NAME"
elif [ "$recorded" != "$sum" ]; then
    fail checksum "the file does not match its .sha256 (file ${sum:0:16}…, recorded ${recorded:0:16}…)"
else
    check checksum OK "matches its .sha256 (${sum:0:16}…)"
fi

# --- the throwaway's names, refused when they touch production ----------------------
docker info >/dev/null 2>&1 || fail start "docker is not reachable as $(id -un)"
prod=$(resolve_container "$COMPOSE_PROJECT" "$COMPOSE_SERVICE" all)
[ -n "$prod" ] || fail start "there is no $COMPOSE_SERVICE container of compose project $COMPOSE_PROJECT to take the image from"
prod_name=$(docker inspect --format '{{.Name}}' "$prod" | sed 's#^/##')
IMAGE=$(docker inspect --format '{{.Image}}' "$prod")
[ -n "$IMAGE" ] || fail start "cannot read the image of $prod_name"
pgdata=$(docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$prod" |
    sed -n 's/^PGDATA=//p' | tail -n 1)
pgdata=${pgdata:-/var/lib/postgresql/data}
# The throwaway volume goes where production keeps its data: the mount holding PGDATA.
dest=$(docker inspect --format '{{range .Mounts}}{{println .Destination}}{{end}}' "$prod" |
    awk -v d="$pgdata" 'NF && (d == $0 || index(d, $0 "/") == 1) && length($0) > length(best) { best = $0 }
                        END { print best }')
dest=${dest:-$pgdata}

mapfile -t protected < <({
    printf '%s\n' "${PROTECT[@]}"
    docker ps -aq --filter "label=com.docker.compose.project=$(compose_project_label "$COMPOSE_PROJECT")" |
        while read -r c; do
            docker inspect --format '{{range .Mounts}}{{if .Name}}{{println .Name}}{{end}}{{end}}' "$c"
        done
} | sed '/^$/d' | sort -u)

CONTAINER="aimms-ops-verify-$(date -u +%Y%m%d%H%M%S)-$$"
VOLUME=$CONTAINER
case $CONTAINER in aimms-ops-verify-[0-9]*) ;; *) fail start "refusing: generated name $CONTAINER" ;; esac
if [ "$CONTAINER" = "$prod_name" ] || [ "$CONTAINER" = "$prod" ]; then
    fail start "refusing: $CONTAINER is the production container"
fi
for v in "${protected[@]}"; do
    [ "$v" != "$VOLUME" ] || fail start "refusing: $VOLUME is a production volume"
done
if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    fail start "refusing: a container named $CONTAINER already exists"
fi
if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
    fail start "refusing: a volume named $VOLUME already exists"
fi

# --- room for it ---------------------------------------------------------------------
# About the size of production's cluster (read-only query), else 8 times the dump.
need=""
if [ "$(docker inspect --format '{{.State.Running}}' "$prod")" = true ]; then
    need=$(docker exec "$prod" psql -X -A -t -U "$PG_SUPERUSER" -d postgres \
        -c 'SELECT sum(pg_database_size(datname)) FROM pg_database' 2>/dev/null | tr -dc 0-9)
fi
[ -n "$need" ] || need=$((size * 8))
need=$((need * 12 / 10 + 64 * 1024 * 1024))
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)
avail_kb=$(df -Pk "$root" 2>/dev/null | awk 'NR == 2 { print $4 }')
if [[ $avail_kb =~ ^[0-9]+$ ]]; then
    avail=$((avail_kb * 1024))
    if [ "$avail" -lt "$need" ]; then
        fail disk "the trial restore needs about $(human "$need") but $root has $(human "$avail") free"
    fi
    check disk OK "$(human "$avail") free in $root, about $(human "$need") needed"
fi

# --- the throwaway -------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aimms-verify.XXXXXX") || fail start "cannot create a temporary dir"
# Production's environment, so the image initialises the same superuser and settings.
docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$prod" |
    sed '/^$/d' >"$WORK/env" || fail start "cannot read the environment of $prod_name"

MADE_VOLUME=1
docker volume create --label org.aimms-ops.verify=1 "$VOLUME" >/dev/null 2>"$WORK/err" ||
    fail start "docker volume create $VOLUME failed: $(tail -n 1 "$WORK/err")"
MADE_CONTAINER=1
docker run --detach --name "$CONTAINER" --label org.aimms-ops.verify=1 --network none \
    --env-file "$WORK/env" --volume "$VOLUME:$dest" "$IMAGE" >/dev/null 2>"$WORK/err" ||
    fail start "docker run failed: $(tail -n 1 "$WORK/err")"
report "verify.container=$CONTAINER"
report "verify.volume=$VOLUME"
report "verify.image=$IMAGE"
log "started throwaway container $CONTAINER (image of $prod_name, volume $VOLUME at $dest, no network)"

deadline=$((SECONDS + WAIT))
while :; do
    if [ "$(docker inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" != true ]; then
        fail start "the throwaway container stopped while starting: $(docker logs --tail 5 "$CONTAINER" 2>&1 | sed '/^$/d' | tail -n 1)"
    fi
    # Ready once postgres itself is PID 1: the images' entrypoints run a temporary
    # server while they initialise the cluster.
    if docker exec "$CONTAINER" sh -c '[ "$(cat /proc/1/comm)" = postgres ] && pg_isready -q -U "$1"' \
        sh "$PG_SUPERUSER" >/dev/null 2>&1; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail start "the throwaway server did not accept connections within ${WAIT}s"
    sleep 0.5
done
check start OK "$CONTAINER from the image of $prod_name, volume $VOLUME, no network"

# --- the trial restore: decompress | dump scanner | psql, twice -----------------------
# zstd for a .sql.zst; else igzip, else pigz, else gzip
pick_decompressor "$NAME" || fail restore "$UNZIP_MISSING is not installed on this host; reading $NAME needs it (install $UNZIP_MISSING)"
unzip=("${UNZIP[@]}")
# The stream check is named after the format: "gzip stream" or "zstd stream".
stream="gzip stream"
[ "${unzip[0]}" != zstd ] || stream="zstd stream"

# replay PASS: the dump through the restore filter into the throwaway server. The
# second pass replays onto what the first made, with that cluster's properties, as
# fab restore onto a live cluster does: every database rebuilt beside, then swapped in.
replay() {
    local props=() db beside=()
    if [ "$1" = 2 ]; then
        for db in template1 postgres; do
            docker exec "$CONTAINER" pg_dump -U "$PG_SUPERUSER" --create --schema-only \
                --exclude-schema='*' "$db" >"$WORK/$db.props" 2>/dev/null &&
                props+=(--props "$db=$WORK/$db.props")
        done
        mkdir -p "$WORK/beside"
        beside=(--beside "$WORK/beside")
        agent dump prepare "$CONTAINER" "$PG_SUPERUSER" "$WORK/beside" \
            </dev/null 2>"$WORK/psql.err" || { st=(0 0 1); return; }
    fi
    "${unzip[@]}" <"$path" 2>"$WORK/unzip.err" |
        agent dump filter --facts "$WORK/inspect" "${beside[@]}" "${props[@]}" 2>"$WORK/filter.err" |
        docker exec -i -e PGOPTIONS='-c client_min_messages=warning' "$CONTAINER" \
            psql -X -q -v ON_ERROR_STOP=1 -U "$PG_SUPERUSER" -d postgres -f - >/dev/null 2>"$WORK/psql.err"
    st=("${PIPESTATUS[@]}")
    log "restore pass $1 stages: ${unzip[0]} ${st[0]}, filter ${st[1]}, psql ${st[2]}"
    if [ "$1" = 2 ] && [ "${st[1]}" = 0 ] && [ "${st[2]}" = 0 ]; then
        if agent dump swap "$CONTAINER" "$PG_SUPERUSER" "$WORK/beside" \
            "$(date -u +%Y%m%d_%H%M%S)" </dev/null 2>"$WORK/swap.err"; then
            agent dump drop-replaced "$CONTAINER" "$PG_SUPERUSER" "$WORK/beside" \
                </dev/null 2>>"$WORK/swap.err"
        else
            st[2]=1
            grep 'failed: ' "$WORK/swap.err" | sed 's/^aimms-ops: /psql: /' >"$WORK/psql.err"
        fi
    fi
}

# psql's first error, whole (a message may span lines), newlines shown as \n.
psql_error() {
    awk '/^psql:/ { if (n++) exit } n { printf "%s%s", (n++ > 1 ? "\\n" : ""), $0 }' "$WORK/psql.err"
}

replay 1
# A stage killed by SIGPIPE (141) only saw a later stage stop: not a fault of its own.
if [ "${st[0]}" != 0 ] && [ "${st[0]}" != 141 ]; then
    fail "$stream" "the file does not decompress to its end: $(tail -n 1 "$WORK/unzip.err")"
fi
if [ "${st[0]}" = 0 ]; then
    check "$stream" OK "decompresses to its end"
else
    check "$stream" UNKNOWN "not read to its end: a later stage stopped first"
fi
if grep -qx 'header=0' "$WORK/inspect" 2>/dev/null; then
    fail "dump header" "not a pg_dumpall cluster dump (no header)"
fi
if [ "${st[2]}" != 0 ]; then
    fail restore "psql stopped: $(psql_error | cut -c1-400)"
fi
# The filter exits 3 when the stream ends before the completion marker.
if grep -qx 'complete=0' "$WORK/inspect" 2>/dev/null || [ "${st[1]}" = 3 ]; then
    fail "completion marker" "the dump has no completion marker: it is incomplete"
fi
if [ "${st[1]}" != 0 ]; then
    fail restore "the restore filter failed (status ${st[1]}): $(tail -n 1 "$WORK/filter.err")"
fi
check "dump header" OK "a pg_dumpall cluster dump"
check restore OK "psql replayed it with ON_ERROR_STOP"
check "completion marker" OK "present"

# --- what is there now -----------------------------------------------------------------
pq() { docker exec -i "$CONTAINER" psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -U "$PG_SUPERUSER" "$@"; }
# Every database, those restored allowing no connections too (the dump closes them again).
mapfile -t restored < <(pq -d postgres -c \
    "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1" 2>/dev/null)
mapfile -t closed < <(pq -d postgres -c \
    "SELECT datname FROM pg_database WHERE NOT datallowconn AND NOT datistemplate ORDER BY 1" 2>/dev/null)
[ ${#restored[@]} -gt 0 ] || fail databases "cannot list the databases of the throwaway server"
missing=()
while IFS= read -r db; do
    if [ -z "$db" ] || [ "$db" = template1 ]; then continue; fi
    printf '%s\n' "${restored[@]}" | grep -qxF -- "$db" || missing+=("$db")
done < <(sed -n 's/^db=//p' "$WORK/inspect" | while read -r hex; do unhex "$hex"; echo; done)
[ ${#missing[@]} -eq 0 ] || fail databases "missing after the restore: ${missing[*]}"
check databases OK "${restored[*]}${closed[0]:+ (restored allowing no connections, as the dump says: ${closed[*]})}"

replay 2
if [ "${st[2]}" != 0 ] || [ "${st[1]}" != 0 ]; then
    fail "live restore" "a second replay onto the restored cluster failed, as fab restore onto a live cluster would: $(psql_error | cut -c1-400)"
fi
check "live restore" OK "replayed again onto the cluster the first replay made"

# The throwaway's closed databases are opened to count their rows.
pq -d postgres >/dev/null 2>&1 <<'SQL' || true
SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS true', datname) FROM pg_database
WHERE NOT datallowconn AND NOT datistemplate
\gexec
SQL
tables=0 rows=0
for db in "${restored[@]}"; do
    report "verify.database=$db"
    counts=$(pq -d "$(conninfo_db "$db")" 2>"$WORK/count.err" <<'SQL'
SELECT format('SELECT %L, count(*) FROM ONLY %I.%I',
              quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname, c.relname
\gexec
SQL
    ) || fail databases "counting the rows of $db failed: $(tail -n 1 "$WORK/count.err")"
    while IFS=$'\t' read -r table count; do
        [ -n "$table" ] || continue
        report "verify.table=$db"$'\t'"$table"$'\t'"$count"
        tables=$((tables + 1))
        rows=$((rows + count))
    done <<<"$counts"
done

cleanup
if [ -n "$CLEANUP_PROBLEM" ]; then
    check cleanup CRITICAL "$CLEANUP_PROBLEM"
    report "verify.result=failed"
    report "verify.failed_check=cleanup"
    report "verify.reason=$CLEANUP_PROBLEM"
    log "RESULT failed: cleanup: $CLEANUP_PROBLEM ($NAME)"
    ping_end exit:1 "verify failed: cleanup: $CLEANUP_PROBLEM"
    exit 1
fi
check cleanup OK "container and volume removed"
seconds=$(($(date +%s) - STARTED))
report "verify.result=ok"
report "verify.seconds=$seconds"
log "RESULT ok $NAME databases=${#restored[@]} tables=$tables rows=$rows seconds=$seconds"
ping_end ok "RESULT ok $NAME databases=${#restored[@]} tables=$tables rows=$rows"
exit 0

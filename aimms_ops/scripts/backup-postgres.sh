#!/usr/bin/env bash
# backup-postgres.sh: a backup of the whole PostgreSQL cluster of a Docker Compose
# stack that cannot lie. Installed by `fab install-backups` (cron runs it daily) and
# run by `fab backup`: one code path for both.
#
# Usage: backup-postgres.sh [--config FILE] [options]
#   --config FILE        read the settings below from FILE (shell assignments)
#   --backup-dir DIR     where backups go                     (BACKUP_DIR)
#   --log-file FILE      one line per step is appended here   (LOG_FILE)
#   --project NAME       compose project                      (COMPOSE_PROJECT)
#   --service NAME       compose service of postgres          (COMPOSE_SERVICE)
#   --superuser NAME     role pg_dumpall connects as           (PG_SUPERUSER)
#   --retention-days N   remove backups older than N days...  (RETENTION_DAYS)
#   --min-keep N         ...but never the newest N good ones  (MIN_KEEP)
#   --lock-timeout S     wait at most S seconds for a running backup (LOCK_TIMEOUT)
#   --gzip-level N       1 (fastest) .. 9 (smallest)           (GZIP_LEVEL)
#   --offsite-config F   push encrypted copies to the targets in F (OFFSITE_CONFIG; offsite.sh)
#   --label NAME         added to the file name (letters, digits, - and _)
#   --prune-only         apply retention only, make no backup
#   --dry-run            with --prune-only: print what would be removed, remove nothing
#   --no-prune           make the backup, skip retention
#   --echo               also print the log lines on stderr
#   --report             print the result.* and prune.* lines below on stdout
#
# A backup is aimms_postgres_YYYYMMDD_HHMMSS[_LABEL].sql.gz (UTC) with a .sha256
# beside it. It is written under a temporary name, tested (gzip stream and the
# dump's completion marker), fsynced, its checksum written, and only then renamed
# into place. Any failure exits non-zero and leaves nothing that looks like a backup.
# Retention runs only after a good backup and never removes the newest MIN_KEEP.
# With --report, stdout carries result.KEY=VALUE lines on success and the prune
# decisions as prune.keep=NAME REASON / prune.remove=NAME REASON; without it (cron)
# the script writes only to its log.
# shellcheck disable=SC2016,SC2317  # sh -c bodies are single-quoted; traps call functions
set -Eeuo pipefail
umask 077

# @include lib.sh
# @include offsite.sh

MARKER='-- PostgreSQL database cluster dump complete'
NAME_RE='^aimms_postgres_[0-9]{8}_[0-9]{6}(_[A-Za-z0-9_-]+)?\.sql\.gz$'

BACKUP_DIR=${BACKUP_DIR:-}
LOG_FILE=${LOG_FILE:-}
COMPOSE_PROJECT=${COMPOSE_PROJECT:-}
COMPOSE_SERVICE=${COMPOSE_SERVICE:-postgres}
PG_SUPERUSER=${PG_SUPERUSER:-postgres}
RETENTION_DAYS=${RETENTION_DAYS:-7}
MIN_KEEP=${MIN_KEEP:-3}
LOCK_TIMEOUT=${LOCK_TIMEOUT:-600}
GZIP_LEVEL=${GZIP_LEVEL:-1}
OFFSITE_CONFIG=${OFFSITE_CONFIG:-}
LABEL=""
PRUNE_ONLY=0
DRY_RUN=0
NO_PRUNE=0
ECHO=0
REPORT=0

usage_error() { printf 'backup-postgres.sh: %s\n' "$1" >&2; exit 64; }

# The config file is read first so that flags override it.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[$i]}" = "--config" ]; then
        conf=${args[$((i + 1))]:-}
        [ -r "$conf" ] || usage_error "cannot read config file: $conf"
        # shellcheck source=/dev/null
        . "$conf"
    fi
done
while [ $# -gt 0 ]; do
    case $1 in
        --config) shift ;;
        --backup-dir) BACKUP_DIR=${2:-}; shift ;;
        --log-file) LOG_FILE=${2:-}; shift ;;
        --project) COMPOSE_PROJECT=${2:-}; shift ;;
        --service) COMPOSE_SERVICE=${2:-}; shift ;;
        --superuser) PG_SUPERUSER=${2:-}; shift ;;
        --retention-days) RETENTION_DAYS=${2:-}; shift ;;
        --min-keep) MIN_KEEP=${2:-}; shift ;;
        --lock-timeout) LOCK_TIMEOUT=${2:-}; shift ;;
        --gzip-level) GZIP_LEVEL=${2:-}; shift ;;
        --offsite-config) OFFSITE_CONFIG=${2:-}; shift ;;
        --label) LABEL=${2:-}; shift ;;
        --prune-only) PRUNE_ONLY=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --no-prune) NO_PRUNE=1 ;;
        --echo) ECHO=1 ;;
        --report) REPORT=1 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

[ -n "$BACKUP_DIR" ] || usage_error "BACKUP_DIR is not set (--backup-dir)"
[ -n "$LOG_FILE" ] || usage_error "LOG_FILE is not set (--log-file)"
[ -n "$COMPOSE_PROJECT" ] || usage_error "COMPOSE_PROJECT is not set (--project)"
[[ $LABEL =~ ^[A-Za-z0-9_-]*$ ]] || usage_error "a label allows letters, digits, - and _ only"
[ ${#LABEL} -le 64 ] || usage_error "a label is at most 64 characters"
for n in RETENTION_DAYS MIN_KEEP LOCK_TIMEOUT GZIP_LEVEL; do
    [[ ${!n} =~ ^[0-9]+$ ]] || usage_error "$n must be a whole number"
done
[ "$MIN_KEEP" -ge 1 ] || usage_error "MIN_KEEP must be at least 1"
if [ "$GZIP_LEVEL" -lt 1 ] || [ "$GZIP_LEVEL" -gt 9 ]; then usage_error "GZIP_LEVEL must be 1..9"; fi

RUN_ID="backup[$$]"
STARTED=$(date +%s)
TMP_FILES=()

# Lines for the session go through say (lib.sh): once the session is gone (a dropped
# connection, Ctrl-C) the backup goes on, logs its RESULT and stops talking to it.
log() {
    local line
    line="$(now_utc) $RUN_ID $*"
    printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true
    if [ "$ECHO" = 1 ]; then say "$line" >&2 || ECHO=0; fi
}

fail() {
    log "RESULT failed: $*"
    if [ "$ECHO" != 1 ]; then say "backup failed: $*" >&2 || true; fi
    exit 1
}

cleanup() {
    local f
    for f in "${TMP_FILES[@]}"; do rm -f -- "$f"; done
    if [ -n "${work:-}" ]; then rm -rf -- "$work"; fi
}
trap cleanup EXIT
trap 'fail "unexpected error at line $LINENO: $BASH_COMMAND"' ERR
trap 'fail "interrupted"' INT TERM HUP

report() {
    if [ "$REPORT" = 1 ]; then say "$1" || REPORT=0; fi
}

human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || printf '%sB' "$1"; }

# --- set-up --------------------------------------------------------------------------
mkdir -p -- "$(dirname -- "$LOG_FILE")" 2>/dev/null || true
if touch -- "$LOG_FILE" 2>/dev/null; then chmod 600 -- "$LOG_FILE" 2>/dev/null || true; fi
if [ ! -d "$BACKUP_DIR" ]; then
    why=$(mkdir -p -- "$BACKUP_DIR" 2>&1) ||
        fail "cannot create backup dir $BACKUP_DIR: ${why##*: } (create it for $(id -un), or fix backup_dir)"
    chmod 700 -- "$BACKUP_DIR"
fi
[ -w "$BACKUP_DIR" ] ||
    fail "backup dir $BACKUP_DIR is not writable by $(id -un) (chown it to $(id -un), or fix backup_dir)"

LOCK="$BACKUP_DIR/.backup.lock"
exec 9>>"$LOCK" || fail "cannot open lock file $LOCK"
if ! flock -n 9; then
    holder=$(cat -- "$LOCK.owner" 2>/dev/null || true)
    log "waiting up to ${LOCK_TIMEOUT}s for the running backup (${holder:-unknown pid})"
    flock -w "$LOCK_TIMEOUT" 9 ||
        fail "another backup is still running after ${LOCK_TIMEOUT}s (lock $LOCK held by ${holder:-unknown}; wait for it to end, or raise lock_timeout)"
fi
# Who holds the lock, for the message of a run that waits; a full disk must not stop us here.
{ printf 'pid %s since %s\n' "$$" "$(now_utc)" >"$LOCK.owner"; } 2>/dev/null || true

# Whatever a killed run left under a temporary name is garbage: we hold the lock.
find "$BACKUP_DIR" -maxdepth 1 -name '.aimms_postgres_*.tmp' -type f -delete 2>/dev/null || true

# --- retention -----------------------------------------------------------------------
# Keep the newest MIN_KEEP good backups whatever their age, and everything younger
# than RETENTION_DAYS; remove the rest (and their .sha256).
prune() {
    local now cutoff i=0 name mtime size age_d
    now=$(date +%s)
    cutoff=$((now - RETENTION_DAYS * 86400))
    while IFS=$'\t' read -r mtime size name; do
        [[ $name =~ $NAME_RE ]] || continue
        age_d=$(((now - ${mtime%.*}) / 86400))
        if [ "$size" -gt 0 ] && [ "$i" -lt "$MIN_KEEP" ]; then
            i=$((i + 1))
            report "prune.keep=$name newest $i of $MIN_KEEP kept whatever their age (${age_d}d old)"
            continue
        fi
        [ "$size" -gt 0 ] && i=$((i + 1))
        if [ "${mtime%.*}" -ge "$cutoff" ]; then
            report "prune.keep=$name younger than $RETENTION_DAYS days (${age_d}d old)"
        else
            report "prune.remove=$name older than $RETENTION_DAYS days (${age_d}d old)"
            if [ "$DRY_RUN" = 0 ]; then
                rm -f -- "$BACKUP_DIR/$name" "$BACKUP_DIR/$name.sha256"
                log "retention: removed $name (${age_d}d old)"
            fi
        fi
    done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'aimms_postgres_*.sql.gz' \
        -printf '%T@\t%s\t%f\n' | sort -t $'\t' -k1,1nr)
    # A checksum whose backup is gone is an orphan.
    local sum
    for sum in "$BACKUP_DIR"/aimms_postgres_*.sql.gz.sha256; do
        [ -e "$sum" ] || continue
        if [ ! -e "${sum%.sha256}" ]; then
            report "prune.remove=$(basename -- "$sum") checksum without a backup"
            [ "$DRY_RUN" = 0 ] && rm -f -- "$sum"
        fi
    done
    return 0
}

if [ "$PRUNE_ONLY" = 1 ]; then
    log "retention on demand (keep ${RETENTION_DAYS}d, min_keep $MIN_KEEP, dry_run=$DRY_RUN)"
    prune
    exit 0
fi

# --- the backup ----------------------------------------------------------------------
log "START backup of project $COMPOSE_PROJECT service $COMPOSE_SERVICE${LABEL:+ label $LABEL}"
docker info >/dev/null 2>&1 ||
    fail "docker is not reachable as $(id -un) (is the daemon running? start it, or add $(id -un) to the docker group)"
cid=$(resolve_container "$COMPOSE_PROJECT" "$COMPOSE_SERVICE")
[ -n "$cid" ] ||
    fail "the $COMPOSE_SERVICE container of compose project $COMPOSE_PROJECT is not running (start it: docker compose up -d $COMPOSE_SERVICE)"
cname=$(docker inspect --format '{{.Name}}' "$cid" | sed 's#^/##')
log "container $cname ($cid)"

# The newest backup's size (awk reads all its input: no early exit to SIGPIPE the find).
last=$(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'aimms_postgres_*.sql.gz' -printf '%T@ %s\n' |
    awk '$1 > t { t = $1; s = $2 } END { print s + 0 }')
avail=$(($(df -Pk "$BACKUP_DIR" | awk 'NR==2 {print $4}') * 1024))
need=$(((${last:-0} * 12) / 10))
if [ "$avail" -lt "$need" ]; then
    fail "not enough free space in $BACKUP_DIR: $(human "$avail") free, the last backup took $(human "${last:-0}") (free some space, e.g. fab prune, or move backup_dir)"
fi
log "disk: $(human "$avail") free, last backup $(human "${last:-0}")"

stamp=$(date -u +%Y%m%d_%H%M%S)
name="aimms_postgres_${stamp}${LABEL:+_$LABEL}.sql.gz"
while [ -e "$BACKUP_DIR/$name" ]; do
    sleep 1
    stamp=$(date -u +%Y%m%d_%H%M%S)
    name="aimms_postgres_${stamp}${LABEL:+_$LABEL}.sql.gz"
done
final="$BACKUP_DIR/$name"
tmp="$BACKUP_DIR/.$name.tmp"
# Small side files live outside the backup dir, which may be the disk that is full.
work=$(mktemp -d "${TMPDIR:-/tmp}/aimms-backup.XXXXXX") || fail "cannot create a temporary dir"
errf="$work/stderr"
tailf="$work/tail"
fifo="$work/sha256.fifo"
sumf="$work/sha256"
TMP_FILES+=("$tmp" "$errf" "$tailf" "$fifo" "$sumf" "$final.sha256.tmp")

# Compress where it costs least: inside the container when it has pigz (the raw
# dump then never crosses docker exec's pipe), else on the host with pigz, else gzip.
# pg_dumpall's own status is reported on stderr, since a pipe inside the container
# would hide it; the completion marker is checked as well.
host_unzip=(gzip -dc)
command -v pigz >/dev/null 2>&1 && host_unzip=(pigz -dc)
# The checksum is taken from the same stream while it is written (reading the file
# back afterwards cost a second pass: 1 s per GB); openssl hashes about three times
# faster than sha256sum where the CPU has SHA instructions.
hasher=(sha256sum)
if command -v openssl >/dev/null 2>&1 && printf '' | openssl dgst -sha256 -r >/dev/null 2>&1; then
    hasher=(openssl dgst -sha256 -r)
fi
if docker exec "$cid" sh -c 'command -v pigz' >/dev/null 2>&1; then
    where="pigz -$GZIP_LEVEL in the container"
    inner='{ pg_dumpall -U "$1"; echo "aimms-ops: pg_dumpall status $?" >&2; } | pigz -"$2"'
    dump() { docker exec "$cid" sh -c "$inner" sh "$PG_SUPERUSER" "$GZIP_LEVEL"; }
else
    inner='pg_dumpall -U "$1"; echo "aimms-ops: pg_dumpall status $?" >&2'
    if command -v pigz >/dev/null 2>&1; then
        where="pigz -$GZIP_LEVEL on the host"
        dump() { docker exec "$cid" sh -c "$inner" sh "$PG_SUPERUSER" | pigz -"$GZIP_LEVEL"; }
    else
        where="gzip -$GZIP_LEVEL on the host"
        dump() { docker exec "$cid" sh -c "$inner" sh "$PG_SUPERUSER" | gzip -"$GZIP_LEVEL"; }
    fi
fi
log "dumping with pg_dumpall -U $PG_SUPERUSER, compressed by $where"

# The written bytes are tested while they are written: tee's copy is decompressed
# (what gzip -t does) and the end of the dump kept for the completion marker; a second
# copy goes through a fifo to the checksum.
trap - ERR
set +e
mkfifo -m 600 -- "$fifo" || fail "cannot create $fifo"
"${hasher[@]}" <"$fifo" >"$sumf" 2>>"$errf" &
hash_pid=$!
dump 2>"$errf" | tee -- "$tmp" "$fifo" 2>>"$errf" | "${host_unzip[@]}" 2>>"$errf" | tail -c 4096 >"$tailf"
status=("${PIPESTATUS[@]}")
wait "$hash_pid"
hash_status=$?
set -e
trap 'fail "unexpected error at line $LINENO: $BASH_COMMAND"' ERR
dump_status=$(sed -n 's/^aimms-ops: pg_dumpall status \([0-9]*\)$/\1/p' "$errf" | tail -n 1)
errline=$(grep -v '^aimms-ops: pg_dumpall status' "$errf" | tail -n 1 || true)
# A failed write makes the stages before it fail too (SIGPIPE): report it first.
[ "${status[1]}" = 0 ] || fail "writing the backup failed: ${errline:-tee status ${status[1]}} (is $BACKUP_DIR full?)"
[ "${status[0]}" = 0 ] || fail "the dump failed (status ${status[0]}): ${errline:-no message}"
[ "$dump_status" = 0 ] || fail "pg_dumpall failed (status ${dump_status:-unknown}): ${errline:-no message}"
[ "${status[2]}" = 0 ] || fail "the written backup does not decompress: ${errline:-status ${status[2]}}"
grep -qxF -- "$MARKER" "$tailf" || fail "the dump has no completion marker: it is incomplete"
size=$(stat -c %s -- "$tmp")
[ "$size" -gt 0 ] || fail "the backup is empty"
sum=$(cut -d' ' -f1 "$sumf")
if [ "$hash_status" != 0 ] || ! [[ $sum =~ ^[0-9a-f]{64}$ ]]; then
    fail "the checksum of $tmp failed: ${errline:-${hasher[0]} status $hash_status}"
fi
log "dump complete: $(human "$size"), gzip stream and completion marker checked"

sync -- "$tmp" || fail "fsync of $tmp failed"
printf '%s  %s\n' "$sum" "$name" >"$final.sha256.tmp"
sync -- "$final.sha256.tmp"
chmod 600 -- "$tmp" "$final.sha256.tmp"
mv -f -- "$final.sha256.tmp" "$final.sha256"
mv -f -- "$tmp" "$final"
sync -- "$BACKUP_DIR" 2>/dev/null || true
seconds=$(($(date +%s) - STARTED))
log "RESULT ok $name size=$size sha256=$sum seconds=$seconds"

report "result.name=$name"
report "result.path=$final"
report "result.size=$size"
report "result.sha256=$sum"
report "result.seconds=$seconds"
report "result.container=$cname"

offsite_after_backup
if [ "$NO_PRUNE" = 0 ]; then
    prune
fi
exit 0

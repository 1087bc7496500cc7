#!/usr/bin/env bash
# backup-postgres.sh: a backup of the whole PostgreSQL cluster of a Docker Compose
# stack that cannot lie. Installed by `fab install-backups` (cron runs it daily) and
# run by `fab backup`: one code path for both.
#
# Usage: backup-postgres.sh [--config FILE] [options]
#   --config FILE        read the settings below from FILE (shell assignments);
#                        without it, the file beside this script (its path + .conf,
#                        written by fab install-backups) when there is one, so that
#                        plain `backup-postgres.sh`, as the seed runs it, works
#   --backup-dir DIR     where backups go                     (BACKUP_DIR)
#   --log-file FILE      one line per step is appended here   (LOG_FILE)
#   --project NAME       compose project                      (COMPOSE_PROJECT)
#   --service NAME       compose service of postgres          (COMPOSE_SERVICE)
#   --superuser NAME     role pg_dumpall connects as           (PG_SUPERUSER)
#   --retention-days N   remove backups older than N days...  (RETENTION_DAYS)
#   --min-keep N         ...but never the newest N good ones  (MIN_KEEP)
#   --lock-timeout S     wait at most S seconds for a running backup (LOCK_TIMEOUT)
#   --compression NAME   gzip (default: .sql.gz) or zstd (.sql.zst)  (COMPRESSION)
#   --gzip-level N       1 (fastest) .. 9 (smallest)           (GZIP_LEVEL)
#   --compressor NAME    with gzip: auto (default: igzip, else pigz, else gzip), igzip,
#                        pigz or gzip; on the host, always the .gz format (COMPRESSOR)
#   --zstd-level N       with zstd: 1 (fastest, default) .. 19 (smallest) (ZSTD_LEVEL)
#   --retention-rules R  GFS rules, e.g. "daily=7 weekly=4 monthly=12 yearly=2" (RETENTION_RULES)
#   --safety-pin-days N  pin the safety copies of restore and rebuild N days (SAFETY_PIN_DAYS)
#   --allow-shrink       accept a backup less than half the size of those before it (ALLOW_SHRINK=1)
#   --ping-url URL       tell a monitor how the run went                 (PING_URL)
#   --settings-stdin     read secret settings (PING_URL=URL lines) from stdin: fab sends
#                        them there, never on the command line the host's ps shows
#   --ping-kind KIND     healthchecks (default) or uptime-kuma           (PING_KIND)
#   --ping-timeout S     a ping takes at most S seconds, retries included (PING_TIMEOUT)
#   --offsite-config F   push encrypted copies to the targets in F (OFFSITE_CONFIG; offsite.sh)
#   --label NAME         added to the file name (letters, digits, - and _)
#   --prune-only         apply retention only, make no backup
#   --dry-run            with --prune-only: print what would be removed, remove nothing
#   --expect-plan SHA    with --prune-only: remove nothing unless the decision is the one
#                        a dry run showed (sha256 of its "ACTION<TAB>NAME" lines)
#   --no-prune           make the backup, skip retention
#   --echo               also print the log lines on stderr
#   --report             print the result.* and prune.* lines below on stdout
#
# A backup is aimms_postgres_YYYYMMDD_HHMMSS[_LABEL].sql.gz (UTC; .sql.zst with zstd)
# with a .sha256 beside it. It is written under a temporary name, tested (its stream and the
# dump's completion marker), fsynced, its checksum written, and only then renamed
# into place. Any failure exits non-zero and leaves nothing that looks like a backup.
# Retention runs only after a good backup and never removes the newest MIN_KEEP.
# What it keeps is decided by the host program beside it (aimms-ops.pyz, under the
# host's python3, which it needs): the same code as fab prune --dry-run.
# Pinned backups (NAME.pin beside them) are never removed. A backup less than half the
# median size of the five before it is published but logged as suspicious, and no
# retention runs then (--allow-shrink accepts it).
# With --report, stdout carries result.KEY=VALUE lines on success and the prune
# decisions as prune.keep=NAME RULE REASON / prune.remove=NAME RULE REASON (and
# result.suspicious=... when the size-drop guard fired); without it (cron)
# the script writes only to its log.
# shellcheck disable=SC2016,SC2317  # sh -c bodies are single-quoted; traps call functions
set -Eeuo pipefail
umask 077

# @include lib.sh
# @include offsite.sh
# @include backup-dbs.sh

MARKER='-- PostgreSQL database cluster dump complete'

BACKUP_DIR=${BACKUP_DIR:-}
LOG_FILE=${LOG_FILE:-}
COMPOSE_PROJECT=${COMPOSE_PROJECT:-}
COMPOSE_SERVICE=${COMPOSE_SERVICE:-postgres}
PG_SUPERUSER=${PG_SUPERUSER:-postgres}
RETENTION_DAYS=${RETENTION_DAYS:-@DEFAULT_RETENTION_DAYS@}
MIN_KEEP=${MIN_KEEP:-@DEFAULT_MIN_KEEP@}
LOCK_TIMEOUT=${LOCK_TIMEOUT:-@DEFAULT_LOCK_TIMEOUT@}
GZIP_LEVEL=${GZIP_LEVEL:-@DEFAULT_GZIP_LEVEL@}
COMPRESSOR=${COMPRESSOR:-@DEFAULT_COMPRESSOR@}
COMPRESSION=${COMPRESSION:-${BACKUP_COMPRESSIONS[0]}}
ZSTD_LEVEL=${ZSTD_LEVEL:-@DEFAULT_ZSTD_LEVEL@}
RETENTION_RULES=${RETENTION_RULES:-}
SAFETY_PIN_DAYS=${SAFETY_PIN_DAYS:-@DEFAULT_SAFETY_PIN_DAYS@}
ALLOW_SHRINK=${ALLOW_SHRINK:-0}
PING_URL=${PING_URL:-}
PING_KIND=${PING_KIND:-@DEFAULT_PING_KIND@}
PING_TIMEOUT=${PING_TIMEOUT:-@DEFAULT_PING_TIMEOUT@}
OFFSITE_CONFIG=${OFFSITE_CONFIG:-}
LABEL=""
PRUNE_ONLY=0
DRY_RUN=0
EXPECT_PLAN=""
NO_PRUNE=0
ECHO=0
REPORT=0

usage_error() { printf 'backup-postgres.sh: %s\n' "$1" >&2; exit 64; }

# The settings file is read first so that flags override it; run as a file without
# --config (the seed's `backup-postgres.sh`, its cron line), the one installed beside it.
beside=()
[ -z "${BASH_SOURCE[0]:-}" ] || beside=("${BASH_SOURCE[0]}.conf")
read_settings "${beside[@]}" -- "$@"
while [ $# -gt 0 ]; do
    case $1 in
        --config) shift ;;
# @include settings-flags.sh
        --gzip-level) GZIP_LEVEL=${2:-}; shift ;;
        --compressor) COMPRESSOR=${2:-}; shift ;;
        --zstd-level) ZSTD_LEVEL=${2:-}; shift ;;
        --label) LABEL=${2:-}; shift ;;
        --prune-only) PRUNE_ONLY=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --expect-plan) EXPECT_PLAN=${2:-}; shift ;;
        --no-prune) NO_PRUNE=1 ;;
        --echo) ECHO=1 ;;
        --report) REPORT=1 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

require_settings "the settings file beside the script: fab install-backups writes it"
[[ $LABEL =~ ^[A-Za-z0-9_-]*$ ]] || usage_error "a label allows letters, digits, - and _ only"
[ ${#LABEL} -le 64 ] || usage_error "a label is at most 64 characters"
for n in RETENTION_DAYS MIN_KEEP LOCK_TIMEOUT GZIP_LEVEL ZSTD_LEVEL SAFETY_PIN_DAYS ALLOW_SHRINK PING_TIMEOUT; do
    [[ ${!n} =~ ^[0-9]+$ ]] || usage_error "$n must be a whole number"
done
[ "$MIN_KEEP" -ge 1 ] || usage_error "MIN_KEEP must be at least 1"
[ "$PING_TIMEOUT" -ge 3 ] || usage_error "PING_TIMEOUT must be at least 3"
if [ "$GZIP_LEVEL" -lt 1 ] || [ "$GZIP_LEVEL" -gt 9 ]; then usage_error "GZIP_LEVEL must be 1..9"; fi
case $COMPRESSOR in
    auto | igzip | pigz | gzip) ;;
    *) usage_error "COMPRESSOR must be auto, igzip, pigz or gzip" ;;
esac
if [ "$ZSTD_LEVEL" -lt 1 ] || [ "$ZSTD_LEVEL" -gt 19 ]; then usage_error "ZSTD_LEVEL must be 1..19"; fi
EXT=$(backup_ext "$COMPRESSION") ||
    usage_error "COMPRESSION must be one of: ${BACKUP_COMPRESSIONS[*]} (got '$COMPRESSION')"

[[ $RETENTION_RULES =~ ^[a-z0-9=\ ]*$ ]] || usage_error "RETENTION_RULES: expected e.g. daily=7 weekly=4"
case $PING_KIND in healthchecks | uptime-kuma) ;; *) usage_error "PING_KIND: healthchecks or uptime-kuma" ;; esac

RUN_ID="backup[$$]"
STARTED=$(date +%s)
TMP_FILES=()
# shellcheck disable=SC2034  # read by the ping functions of lib.sh
PING_RID=$(new_rid)
PING_ENDED=0

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
    ping_end exit:1 "backup failed: $*"
    exit 1
}

# ping EVENT [MSG] [FIRST_BODY_LINE]: tell PING_URL (if set) how the run goes (lib.sh).
ping() {
    [ "$PRUNE_ONLY" = 0 ] || return 0
    job_ping "$PING_URL" "$@"
}
ping_end() {
    [ "$PING_ENDED" = 0 ] || return 0
    PING_ENDED=1
    ping "$@"
}

cleanup() {
    close_dbs_again || true
    drop_lock_notes
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

# --- set-up --------------------------------------------------------------------------
mkdir -p -- "$(dirname -- "$LOG_FILE")" 2>/dev/null || true
if touch -- "$LOG_FILE" 2>/dev/null; then chmod 600 -- "$LOG_FILE" 2>/dev/null || true; fi
ping start
command -v python3 >/dev/null 2>&1 ||
    fail "python3 is not installed on this host; aimms-ops' host program needs it (install python3)"
[ -r "$AIMMS_OPS_PROGRAM" ] ||
    fail "the host program $AIMMS_OPS_PROGRAM is missing (install it: fab install-backups)"
if [ ! -d "$BACKUP_DIR" ]; then
    why=$(mkdir -p -- "$BACKUP_DIR" 2>&1) ||
        fail "cannot create backup dir $BACKUP_DIR: ${why##*: } (create it for $(id -un), or fix backup_dir)"
    chmod 700 -- "$BACKUP_DIR"
fi
[ -w "$BACKUP_DIR" ] ||
    fail "backup dir $BACKUP_DIR is not writable by $(id -un) (chown it to $(id -un), or fix backup_dir)"

# The locks (lib.sh): the cluster shared (a restore or rebuild holds it exclusive, and no
# backup may dump a cluster half-way through one: wait for it), the backup dir exclusive.
lock_or_fail() {
    local rc=0
    take_lock "$1" "$2" 0 "$3" || rc=$?
    if [ "$rc" = 75 ]; then
        log "waiting up to ${LOCK_TIMEOUT}s for $4 (${LOCK_HELD_BY:-unknown holder})"
        rc=0
        take_lock "$1" "$2" "$LOCK_TIMEOUT" "$3" || rc=$?
    fi
    case $rc in
        0) ;;
        75) fail "$4 is still running after ${LOCK_TIMEOUT}s (lock $1 held by ${LOCK_HELD_BY:-unknown}; wait for it to end, or raise lock_timeout)" ;;
        *) fail "cannot open lock file $1" ;;
    esac
}
what=backup
[ "$PRUNE_ONLY" = 1 ] && what=retention
lock_or_fail "$BACKUP_DIR/$CLUSTER_LOCK" shared "$what" "a restore or rebuild of the cluster"
lock_or_fail "$BACKUP_DIR/$BACKUP_LOCK" exclusive "$what" "another backup or retention run"

# Whatever a killed run left is garbage: we hold the lock (lib.sh).
clean_after_killed_run

# --- retention -----------------------------------------------------------------------
# Apply the host program's decision (the same code as fab prune --dry-run): remove what it
# says, nothing else. (Pins are written under the backup lock, which we hold: none can
# appear in between.) Then orphans go.
PRUNE_ERROR=""
prune() {
    local out action name rule reason
    if ! out=$(agent retention "$BACKUP_DIR" "$(date +%s)" "$RETENTION_DAYS" "$MIN_KEEP" \
        "$RETENTION_RULES" 2>&1); then
        PRUNE_ERROR="retention failed: ${out##*$'\n'}"
        log "$PRUNE_ERROR"
        return 1
    fi
    if [ -n "$EXPECT_PLAN" ] &&
        [ "$({ [ -z "$out" ] || printf '%s\n' "$out"; } | cut -f1,2 | sha256sum | cut -d' ' -f1)" != "$EXPECT_PLAN" ]; then
        PRUNE_ERROR="the backups changed since the plan was shown: nothing was removed (run the prune again)"
        log "retention failed: $PRUNE_ERROR"
        return 1
    fi
    while IFS=$'\t' read -r action name rule reason; do
        [[ $name =~ $BACKUP_NAME_RE ]] || continue
        report "prune.$action=$name $rule $reason"
        if [ "$action" = remove ] && [ "$DRY_RUN" = 0 ]; then
            rm -f -- "$BACKUP_DIR/$name" "$BACKUP_DIR/$name.sha256" "$BACKUP_DIR/$name.pin"
            log "retention: removed $name ($rule: $reason)"
        fi
    done <<<"$out"
    prune_orphans
}

# A checksum or a pin whose backup is gone is an orphan.
prune_orphans() {
    local side ext
    for ext in "${BACKUP_EXTENSIONS[@]}"; do
        for side in "$BACKUP_DIR"/aimms_postgres_*"$ext".sha256 "$BACKUP_DIR"/aimms_postgres_*"$ext".pin; do
            prune_orphan "$side"
        done
    done
    return 0
}
prune_orphan() {
    local side=$1
    [ -e "$side" ] || return 0
    if [ ! -e "${side%.*}" ]; then
        report "prune.remove=$(basename -- "$side") orphan ${side##*.} file without a backup"
        [ "$DRY_RUN" = 0 ] && rm -f -- "$side"
    fi
    return 0
}

if [ "$PRUNE_ONLY" = 1 ]; then
    log "retention on demand (keep ${RETENTION_DAYS}d${RETENTION_RULES:+ $RETENTION_RULES}, min_keep $MIN_KEEP, dry_run=$DRY_RUN)"
    if ! prune; then
        say "backup-postgres.sh: ${PRUNE_ERROR:-retention failed}" >&2 || true
        exit 1
    fi
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
# A run killed with connections allowed on a database: put them back first (lib.sh).
close_dbs_again || fail "$CLOSE_ERROR"

# The newest backup's size (awk reads all its input: no early exit to SIGPIPE the find).
last=$(backup_files "$BACKUP_DIR" -printf '%T@ %s\n' |
    awk '$1 > t { t = $1; s = $2 } END { print s + 0 }')
avail=$(($(df -Pk "$BACKUP_DIR" | awk 'NR==2 {print $4}') * 1024))
need=$(((${last:-0} * 12) / 10))
if [ "$avail" -lt "$need" ]; then
    fail "not enough free space in $BACKUP_DIR: $(human "$avail") free, the last backup took $(human "${last:-0}") (free some space, e.g. fab prune, or move backup_dir)"
fi
log "disk: $(human "$avail") free, last backup $(human "${last:-0}")"

stamp=$(date -u +%Y%m%d_%H%M%S)
name="aimms_postgres_${stamp}${LABEL:+_$LABEL}$EXT"
while [ -e "$BACKUP_DIR/$name" ]; do
    sleep 1
    stamp=$(date -u +%Y%m%d_%H%M%S)
    name="aimms_postgres_${stamp}${LABEL:+_$LABEL}$EXT"
done
final="$BACKUP_DIR/$name"
tmp="$BACKUP_DIR/.$name.tmp"
# Small side files live outside the backup dir, which may be the disk that is full.
work=$(mktemp -d "${TMPDIR:-/tmp}/aimms-backup.$$.XXXXXX") || fail "cannot create a temporary dir"
errf="$work/stderr"
tailf="$work/tail"
fifo="$work/sha256.fifo"
sumf="$work/sha256"
TMP_FILES+=("$tmp" "$errf" "$tailf" "$fifo" "$sumf" "$final.sha256.tmp")

# Compress on the host, where the faster tools can be (the official postgres image
# has neither pigz, igzip nor zstd): the raw dump crosses docker exec's pipe once, into
# igzip (ISA-L) when present, else pigz, else gzip, always the .gz format; or, with
# COMPRESSION=zstd, into zstd (never another format instead). pg_dumpall's own status
# is reported on stderr (a pipe would hide it); the completion marker is checked as
# well. The written stream is checked by the fastest decompressor of its format.
if [ "$COMPRESSION" = zstd ]; then
    pick_zstd "$ZSTD_LEVEL" ||
        fail "compression is zstd but zstd is not installed on the host (install zstd there, or set compression: gzip in the inventory)"
else
    pick_compressor "$GZIP_LEVEL" "$COMPRESSOR" ||
        fail "compressor $COMPRESSOR is not installed on the host (install it, or set COMPRESSOR=auto)"
fi
pick_decompressor "$name" || fail "no $UNZIP_MISSING on the host (install $UNZIP_MISSING)"
host_unzip=("${UNZIP[@]}")
# The checksum is taken from the same stream while it is written (reading the file
# back afterwards cost a second pass: 1 s per GB), by lib.sh's sha256_stream.
# Before the dump, its preface: the properties of template1 and postgres, which a plain
# pg_dumpall leaves out (settings, connection limit, comment, ACL, role settings in
# them), as comment lines that psql skips and aimms-ops' restore reads (aimms_ops/dump).
# shellcheck disable=SC2016  # expanded by the container's sh
preface='for db in template1 postgres; do
    if p=$(pg_dump -U "$1" --create --schema-only --exclude-schema="*" "$db" 2>/dev/null); then
        printf -- "-- aimms-ops: properties of database %s (pg_dump --create --schema-only)\n" "$db"
        printf "%s\n" "$p" | sed "s/^/-- | /"
    fi
done; '
# Then what pg_dumpall does not carry at all: ALTER ROLE ALL's settings, and the version
# of each extension of each database (CREATE EXTENSION alone makes the default one).
# shellcheck disable=SC2016  # expanded by the container's sh
preface=$preface'printf -- "-- aimms-ops: settings of ALTER ROLE ALL\n"
psql -X -A -t -U "$1" -d template1 -c "$4"
psql -X -A -t -U "$1" -d template1 -c "$5" | while IFS= read -r db; do
    PGDATABASE=$db psql -X -A -t -U "$1" -c "$6"
done; '
preface_sql=(
    "SELECT '-- aimms-ops: role all ' || encode(convert_to(c, 'UTF8'), 'hex')
       FROM pg_db_role_setting, unnest(setconfig) c WHERE setrole = 0 AND setdatabase = 0"
    "SELECT datname FROM pg_database WHERE datallowconn AND datname !~ '^aimms_ops_(new|old)_'
       AND datname !~ E'\\n'"
    "SELECT '-- aimms-ops: extension ' || encode(convert_to(current_database(), 'UTF8'), 'hex')
       || ' ' || encode(convert_to(extname, 'UTF8'), 'hex') || ' ' || extversion
       FROM pg_extension WHERE extname <> 'plpgsql'")
# The restore's own side copies are never dumped (SIDE_COPY_PATTERNS, backup-dbs.sh).
inner=$preface'pg_dumpall -U "$1" --exclude-database="$2" --exclude-database="$3"; '\
'echo "aimms-ops: pg_dumpall status $?" >&2'
where="$ZIP_NAME -$ZIP_LEVEL on the host"
# Databases that allow no connections are dumped too: allowed for the dump only, put back
# right after it (and by the EXIT trap, or by the next run after a kill -9); the dump ends
# with the statements that close them again on a restore (backup-dbs.sh).
trailer="$work/trailer"
open_closed_dbs "$trailer" || fail "$CLOSE_ERROR"
dumped_dbs || fail "$CLOSE_ERROR"
dump() {
    local rc=0
    docker exec "$cid" sh -c "$inner" sh "$PG_SUPERUSER" "${SIDE_COPY_PATTERNS[@]}" \
        "${preface_sql[@]}" || rc=$?
    cat -- "$trailer"
    return "$rc"
}
log "dumping into $name with pg_dumpall -U $PG_SUPERUSER, compressed by $where"

# The written bytes are tested while they are written: tee's copy is decompressed
# (what gzip -t does) and the end of the dump kept for the completion marker; a second
# copy goes through a fifo to the checksum.
trap - ERR
set +e
mkfifo -m 600 -- "$fifo" || fail "cannot create $fifo"
sha256_stream <"$fifo" >"$sumf" 2>>"$errf" &
hash_pid=$!
{ dump | "${ZIP[@]}"; } 2>"$errf" | tee -- "$tmp" "$fifo" 2>>"$errf" | "${host_unzip[@]}" 2>>"$errf" |
    tail -c $((4096 + $(stat -c %s -- "$trailer"))) >"$tailf"
status=("${PIPESTATUS[@]}")
wait "$hash_pid"
hash_status=$?
set -e
close_dbs_again || fail "$CLOSE_ERROR"
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
    fail "the checksum of $tmp failed: ${errline:-sha256 status $hash_status}"
fi
log "dump complete: $(human "$size"), $COMPRESSION stream and completion marker checked"

sync -- "$tmp" || fail "fsync of $tmp failed"
printf '%s  %s\n' "$sum" "$name" >"$final.sha256.tmp"
sync -- "$final.sha256.tmp"
chmod 600 -- "$tmp" "$final.sha256.tmp"
# The size-drop guard: against the five good backups before this one (see lib.sh).
suspicious=""
drop_from=$(agent size-guard "$BACKUP_DIR" "$name" "$size")
if [ -n "$drop_from" ]; then
    if [ "$ALLOW_SHRINK" = 1 ]; then
        suspicious=" shrink allowed: size dropped from $(human "$drop_from") to $(human "$size")"
    else
        suspicious=" suspicious: size dropped from $(human "$drop_from") to $(human "$size")"
    fi
fi
mv -f -- "$final.sha256.tmp" "$final.sha256"
mv -f -- "$tmp" "$final"
log "published $name"
# Safety copies of restore and rebuild are pinned (we hold the lock: no retention between).
if [ "$SAFETY_PIN_DAYS" -gt 0 ]; then
    agent safety-pin "$BACKUP_DIR" "$name" "$SAFETY_PIN_DAYS" "$(id -un)@$(hostname)" ||
        log "warning: could not write $final.pin"
fi
sync -- "$BACKUP_DIR" 2>/dev/null || true
seconds=$(($(date +%s) - STARTED))
log "RESULT ok $name size=$size sha256=$sum seconds=$seconds$suspicious"

report "result.name=$name"
report "result.path=$final"
report "result.size=$size"
report "result.sha256=$sum"
report "result.seconds=$seconds"
report "result.container=$cname"
[ -z "$suspicious" ] || report "result.suspicious=${suspicious# }"

# Offsite copies first: a backup goes to the targets before retention may remove it.
offsite_after_backup
if [[ $suspicious == " suspicious:"* ]]; then
    log "retention skipped:$suspicious (if intended: fab backup --allow-shrink, or allow_shrink in the inventory)"
elif [ "$NO_PRUNE" = 0 ]; then
    prune || true
fi
# The run is over: a slow monitor must not hold the locks (a restore may be waiting).
release_locks
if [[ $suspicious == " suspicious:"* ]]; then
    ping_end fail "${suspicious# }" "${suspicious# }"
else
    ping_end ok "RESULT ok $name size=$size seconds=$seconds"
fi
exit 0

#!/usr/bin/env bash
# offsite-run.sh: the offsite copies, outside a backup run (offsite.sh does the work).
#
# Usage: offsite-run.sh --backup-dir DIR --log-file FILE --lock-timeout S
#                       --offsite-config FILE COMMAND [ARGS]
#   sync [--target NAME] [--dry-run]   push what each target lacks, then its retention,
#                                      under the backup lock (fab offsite-sync)
#   list [--target NAME]               the copies: "target NAME ok|failed: REASON" then
#                                      "copy NAME<TAB>fields of offsite_copies"
#   cat NAME OBJECT                    the bytes of OBJECT (NAME.age or NAME.age.meta)
#   mark-verified NAME BACKUP          record that the copy of BACKUP was read back whole
# shellcheck disable=SC2317
set -uo pipefail
umask 077

# @include lib.sh
# @include offsite.sh

BACKUP_DIR="" LOG_FILE="" LOCK_TIMEOUT=@DEFAULT_LOCK_TIMEOUT@ OFFSITE_CONFIG=""
usage_error() { printf 'offsite-run.sh: %s\n' "$1" >&2; exit 64; }
while [ $# -gt 0 ]; do
    case $1 in
        --backup-dir) BACKUP_DIR=${2:-}; shift ;;
        --log-file) LOG_FILE=${2:-}; shift ;;
        --lock-timeout) LOCK_TIMEOUT=${2:-}; shift ;;
        --offsite-config) OFFSITE_CONFIG=${2:-}; shift ;;
        --*) usage_error "unknown argument: $1" ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] || usage_error "no command"
cmd=$1
shift
if [ -z "$BACKUP_DIR" ] || [ -z "$LOG_FILE" ] || [ -z "$OFFSITE_CONFIG" ]; then
    usage_error "--backup-dir, --log-file and --offsite-config are needed"
fi
[[ $LOCK_TIMEOUT =~ ^[0-9]+$ ]] || usage_error "--lock-timeout must be a whole number"

RUN_ID="offsite[$$]"
log() { printf '%s %s %s\n' "$(now_utc)" "$RUN_ID" "$*" >>"$LOG_FILE" 2>/dev/null || true; }
report() { say "$1" || true; }
fail() { printf 'offsite failed: %s\n' "$1" >&2; exit "${2:-1}"; }
valid_target() {
    local t
    for t in $OFFSITE_TARGETS; do [ "$t" = "$1" ] && return 0; done
    fail "no offsite target named $1 on $(hostname) (targets: $OFFSITE_TARGETS; run fab install-backups)"
}
valid_name() { [[ $1 =~ $BACKUP_NAME_RE ]] || fail "not a backup name: $1" 64; }

OFFSITE_WORK=$(mktemp -d "${TMPDIR:-/tmp}/aimms-offsite.XXXXXX") || fail "cannot create a temporary dir"
trap 'rm -rf -- "$OFFSITE_WORK"' EXIT
offsite_load || fail "$OFFSITE_ERROR"
offsite_tools || fail "$OFFSITE_ERROR"

target="" dry=0
case $cmd in
    sync)
        while [ $# -gt 0 ]; do
            case $1 in
                --target) target=${2:-}; shift ;;
                --dry-run) dry=1 ;;
                *) usage_error "unknown argument: $1" ;;
            esac
            shift
        done
        [ -z "$target" ] || valid_target "$target"
        [ -d "$BACKUP_DIR" ] || fail "backup dir $BACKUP_DIR does not exist (run fab install-backups)"
        # The backup's lock: a backup (and its push) and a sync never run at once.
        LOCK="$BACKUP_DIR/$BACKUP_LOCK"
        command -v python3 >/dev/null 2>&1 ||
            fail "python3 is not installed on this host; aimms-ops' host program needs it (install python3)"
        trap 'drop_lock_notes; rm -rf -- "$OFFSITE_WORK"' EXIT
        rc=0
        take_lock "$LOCK" exclusive 0 "offsite sync" || rc=$?
        if [ "$rc" = 75 ]; then
            log "waiting up to ${LOCK_TIMEOUT}s for a backup or retention run ($LOCK_HELD_BY)"
            rc=0
            take_lock "$LOCK" exclusive "$LOCK_TIMEOUT" "offsite sync" || rc=$?
        fi
        case $rc in
            0) ;;
            75) fail "a backup or retention run is still running after ${LOCK_TIMEOUT}s (lock $LOCK held by $LOCK_HELD_BY; wait for it to end)" ;;
            *) fail "cannot open lock file $LOCK" ;;
        esac
        rc=0
        for t in ${target:-$OFFSITE_TARGETS}; do
            if offsite_sync "$t" "$dry"; then
                [ "$dry" = 1 ] || log "RESULT offsite $t ok $OFFSITE_SUMMARY"
                report "offsite.result=$t ok ${OFFSITE_SUMMARY:-}"
            else
                [ "$dry" = 1 ] || log "RESULT offsite $t failed: $OFFSITE_ERROR"
                report "offsite.result=$t failed: $OFFSITE_ERROR"
                rc=1
            fi
        done
        exit "$rc"
        ;;
    list)
        while [ $# -gt 0 ]; do
            case $1 in
                --target) target=${2:-}; shift ;;
                *) usage_error "unknown argument: $1" ;;
            esac
            shift
        done
        [ -z "$target" ] || valid_target "$target"
        for t in ${target:-$OFFSITE_TARGETS}; do
            if offsite_prepare "$t" && offsite_copies "$t" >"$OFFSITE_WORK/copies.$t"; then
                report "target $t ok"
                while IFS= read -r line; do report "copy $t	$line"; done <"$OFFSITE_WORK/copies.$t"
            else
                report "target $t failed: $OFFSITE_ERROR"
            fi
        done
        ;;
    cat)
        [ $# -eq 2 ] || usage_error "cat TARGET OBJECT"
        valid_target "$1"
        obj=$2
        case $obj in *.age) valid_name "${obj%.age}" ;; *.age.meta) valid_name "${obj%.age.meta}" ;;
            *) fail "not an offsite object: $obj" 64 ;; esac
        offsite_prepare "$1" || fail "$OFFSITE_ERROR"
        offsite_rclone "$1" cat "$OFFSITE_BASE/$obj" 2>"$OFFSITE_WORK/cat.err" ||
            fail "cannot read $obj from $1: $(offsite_reason "$OFFSITE_WORK/cat.err")"
        ;;
    mark-verified)
        [ $# -eq 2 ] || usage_error "mark-verified TARGET BACKUP"
        valid_target "$1"
        valid_name "$2"
        offsite_prepare "$1" || fail "$OFFSITE_ERROR"
        printf 'verified=%s %s\n' "$2" "$(now_utc)" |
            offsite_rclone "$1" rcat "$OFFSITE_BASE/$2.age.verified" 2>"$OFFSITE_WORK/mark.err" ||
            fail "cannot record the verify on $1: $(offsite_reason "$OFFSITE_WORK/mark.err")"
        log "offsite $1: the copy of $2 was read back and verified"
        ;;
    *) usage_error "unknown command: $cmd" ;;
esac
exit 0

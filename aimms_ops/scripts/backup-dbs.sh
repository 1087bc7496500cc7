#!/usr/bin/env bash
# backup-dbs.sh: which databases a backup holds, and what a killed run left behind.
# Inlined (an include line) into backup-postgres.sh, which defines log, and sets cid,
# PG_SUPERUSER, BACKUP_DIR and BACKUP_LOCK / CLUSTER_LOCK (lib.sh).
#
# pg_dumpall skips every database whose datallowconn is false. So that no database is
# left out silently, each one (but template0, an invalid one, and the restore's side
# copies) is allowed connections for the dump only: its oid is noted in ALLOWCONN_NOTE
# first, then it is opened, logged by name; after the dump (and from the EXIT trap, and
# by the next run after a kill -9) it is closed again. The dump ends, after pg_dumpall's
# completion marker, with an `ALTER DATABASE … ALLOW_CONNECTIONS false;` per database, so
# that any restore of it (fab restore, psql by hand) closes them again too.
# shellcheck disable=SC2317  # functions called indirectly

# The restore's own side copies (aimms_ops.restore): never dumped, never opened.
# shellcheck disable=SC2034  # read by backup-postgres.sh
SIDE_COPY_PATTERNS=('aimms_ops_old_*' 'aimms_ops_new_*')
SIDE_COPY_SQL="datname !~ '^aimms_ops_(old|new)_'"
ALLOWCONN_NOTE=.backup.allowconn  # in BACKUP_DIR: "OID<TAB>HEX" of each opened database
TRAILER_TITLE='-- aimms-ops: databases that allow no connections (dumped with connections allowed for the dump only)'
CLOSE_ERROR=""

# pg_q SQL: run SQL in template1 (there even when postgres is not); rows on stdout.
pg_q() {
    docker exec "$cid" psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -U "$PG_SUPERUSER" \
        -d template1 -c "$1"
}

# shown_name HEX: a database name (HEX of its quote_ident) as one log line.
shown_name() {
    local n
    n=$(unhex "$1")
    n=${n//$'\n'/\\n}
    printf '%s' "${n//$'\r'/\\r}"
}

# allow_connections OID true|false: set datallowconn of the database OID (if it exists).
allow_connections() {
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    case $2 in true | false) ;; *) return 1 ;; esac
    pg_q "DO \$aimms_ops\$DECLARE d name; BEGIN
        SELECT datname INTO d FROM pg_database WHERE oid = $1;
        IF d IS NOT NULL THEN EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS $2', d); END IF;
        END\$aimms_ops\$" >/dev/null
}

# open_closed_dbs TRAILER: allow connections on every database pg_dumpall would skip,
# noting each first; write TRAILER (the statements that close them on a restore).
open_closed_dbs() {
    local trailer=$1 rows oid hex err
    : >"$trailer" || { CLOSE_ERROR="cannot write $trailer"; return 1; }
    if ! rows=$(pg_q "SELECT oid, encode(convert_to(quote_ident(datname), 'UTF8'), 'hex')
            FROM pg_database WHERE NOT datallowconn AND datname <> 'template0'
            AND datconnlimit <> -2 AND $SIDE_COPY_SQL ORDER BY datname" 2>&1); then
        CLOSE_ERROR="cannot list the databases that allow no connections: ${rows##*$'\n'}"
        return 1
    fi
    [ -n "$rows" ] || return 0
    printf '%s\n' "$rows" >"$BACKUP_DIR/$ALLOWCONN_NOTE" ||
        { CLOSE_ERROR="cannot write $BACKUP_DIR/$ALLOWCONN_NOTE"; return 1; }
    # From template1: a database cannot close itself (psql would be in the last one dumped).
    printf '\n%s\n\\connect template1\n' "$TRAILER_TITLE" >>"$trailer"
    while IFS=$'\t' read -r oid hex; do
        log "allowing connections to database $(shown_name "$hex") for the dump only (datallowconn is false: pg_dumpall would skip it)"
        if ! err=$(allow_connections "$oid" true 2>&1); then
            CLOSE_ERROR="cannot allow connections to database $(shown_name "$hex") for the dump: ${err##*$'\n'}"
            return 1
        fi
        printf 'ALTER DATABASE %s ALLOW_CONNECTIONS false;\n' "$(unhex "$hex")" >>"$trailer"
    done <<<"$rows"
}

# close_dbs_again: put datallowconn back to false on every database ALLOWCONN_NOTE
# names (this run's, or a killed run's), then remove the note. Safe to call twice.
close_dbs_again() {
    local note="$BACKUP_DIR/$ALLOWCONN_NOTE" oid hex err failed=()
    [ -s "$note" ] || { rm -f -- "$note"; return 0; }
    [ -n "${cid:-}" ] || return 0  # no cluster to reach yet: the next run does it
    while IFS=$'\t' read -r oid hex; do
        if err=$(allow_connections "$oid" false 2>&1); then
            log "connections to database $(shown_name "$hex") closed again (datallowconn false)"
        else
            failed+=("$(shown_name "$hex"): ${err##*$'\n'}")
        fi
    done <"$note"
    if [ ${#failed[@]} -gt 0 ]; then
        CLOSE_ERROR="cannot put datallowconn back to false on database ${failed[*]} (run ALTER DATABASE … ALLOW_CONNECTIONS false there; the next backup tries again)"
        log "$CLOSE_ERROR"
        return 1
    fi
    rm -f -- "$note"
}

# dumped_dbs: log the databases pg_dumpall is about to dump (its own selection, less the
# side copies), by name and as a DATABASES line of hex names that fab status reads.
dumped_dbs() {
    local rows hex quoted raw shown="" hexes=() n=0
    if ! rows=$(pg_q "SELECT encode(convert_to(datname, 'UTF8'), 'hex'),
            encode(convert_to(quote_ident(datname), 'UTF8'), 'hex')
            FROM pg_database WHERE datallowconn AND datconnlimit <> -2 AND $SIDE_COPY_SQL
            ORDER BY datname" 2>&1); then
        CLOSE_ERROR="cannot list the databases to dump: ${rows##*$'\n'}"
        return 1
    fi
    while IFS=$'\t' read -r hex quoted; do
        # pg_dumpall refuses a name with a line break, and says only its last line.
        raw=$(unhex "$hex"; printf x)  # the x keeps a line break at its end
        if [[ ${raw%x} == *[$'\n\r']* ]]; then
            CLOSE_ERROR="database $(shown_name "$quoted") cannot be backed up: pg_dumpall refuses a database name that holds a line break (rename it: ALTER DATABASE ... RENAME TO ...)"
            return 1
        fi
        [ -n "$hex" ] || continue
        hexes+=("$hex")
        shown+="${shown:+, }$(shown_name "$quoted")"
        n=$((n + 1))
    done <<<"$rows"
    log "databases to dump ($n): $shown"
    log "DATABASES ${hexes[*]}"
}

# clean_after_killed_run: what a run killed with SIGKILL left (we hold the backup lock,
# so no other run is under way): its temporary backup and checksum files, its lock
# notes, its side dir (the host program's clean-killed).
clean_after_killed_run() {
    local gone
    gone=$(agent clean-killed "$BACKUP_DIR" --pid "$$") || return 0
    [ -z "$gone" ] || log "removed what a killed run left: $gone"
    return 0
}

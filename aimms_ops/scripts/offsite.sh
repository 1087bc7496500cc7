#!/usr/bin/env bash
# offsite.sh: encrypted copies of good backups on offsite targets, pushed by the host.
# Inlined (an include line) into backup-postgres.sh, which calls offsite_push_all once
# after a good backup, under its lock, and into offsite-run.sh (fab offsite-sync,
# list-backups, verify --offsite, restore --from).
#
# The caller defines log LINE and report LINE, and sets BACKUP_DIR and OFFSITE_CONFIG
# (the settings fab install-backups writes: OFFSITE_TARGETS, OFFSITE_RECIPIENTS and
# OFFSITE_<NAME>_* for each target). A copy of NAME on a target is two objects:
# NAME.age (the backup encrypted with age to the recipients) and NAME.age.meta, written
# last, which makes it a copy: the sha256 and size of both the encrypted object and the
# plaintext backup. rclone does the transfers, configured through RCLONE_CONFIG_*
# environment variables: no key is ever on a command line or in a log.
# shellcheck disable=SC2317  # functions called indirectly

# offsite_load: read OFFSITE_CONFIG. Returns non-zero (with OFFSITE_ERROR) when unusable.
offsite_load() {
    OFFSITE_ERROR=""
    if [ ! -r "$OFFSITE_CONFIG" ]; then
        OFFSITE_ERROR="offsite settings $OFFSITE_CONFIG are missing (run fab install-backups)"
        return 1
    fi
    # shellcheck source=/dev/null
    . "$OFFSITE_CONFIG" || { OFFSITE_ERROR="cannot read $OFFSITE_CONFIG"; return 1; }
    [ -n "${OFFSITE_TARGETS:-}" ] || { OFFSITE_ERROR="no offsite target in $OFFSITE_CONFIG"; return 1; }
    return 0
}

# offsite_get TARGET KEY: the setting OFFSITE_<TARGET>_<KEY>.
offsite_get() {
    local var="OFFSITE_${1^^}_$2"
    printf '%s' "${!var:-}"
}

# offsite_tools: are rclone and age here? Sets OFFSITE_ERROR when not.
offsite_tools() {
    local missing
    missing=$(missing_tools rclone age)
    if [ -n "$missing" ]; then
        OFFSITE_ERROR="$missing not installed on $(hostname) (install it: apt-get install $missing)"
        return 1
    fi
}

# offsite_read_credentials FILE: sets OFFSITE_KEY_ID and OFFSITE_SECRET from FILE,
# which must be 0600 (or stricter) and owned by this user. Accepts key = value lines
# with access_key_id / secret_access_key (an aws_ prefix and a [profile] header are
# allowed, as in ~/.aws/credentials).
offsite_read_credentials() {
    local file=$1 mode owner line k v
    OFFSITE_KEY_ID="" OFFSITE_SECRET=""
    if [ ! -f "$file" ]; then
        OFFSITE_ERROR="credentials file $file not found on $(hostname) (create it, mode 0600: access_key_id = ..., secret_access_key = ...)"
        return 1
    fi
    mode=$(stat -c %a -- "$file") owner=$(stat -c %U -- "$file")
    if [ "$owner" != "$(id -un)" ] || [ $((8#$mode & 077)) -ne 0 ]; then
        OFFSITE_ERROR="credentials file $file is mode $mode owned by $owner (chmod 600 it, owned by $(id -un))"
        return 1
    fi
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%%#*}
        [[ $line == *=* ]] || continue
        k=${line%%=*} v=${line#*=}
        k=$(printf '%s' "$k" | tr -d '[:space:]') v=$(printf '%s' "$v" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
        case ${k#aws_} in
            access_key_id) OFFSITE_KEY_ID=$v ;;
            secret_access_key) OFFSITE_SECRET=$v ;;
        esac
    done <"$file"
    if [ -z "$OFFSITE_KEY_ID" ] || [ -z "$OFFSITE_SECRET" ]; then
        OFFSITE_ERROR="credentials file $file has no access_key_id and secret_access_key"
        return 1
    fi
}

# offsite_prepare TARGET: check the target's settings and what it needs on this host;
# sets OFFSITE_BASE (rclone's path of the target's folder). Non-zero with OFFSITE_ERROR.
offsite_prepare() {
    local t=$1 type
    type=$(offsite_get "$t" TYPE)
    OFFSITE_WORK=${OFFSITE_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/aimms-offsite.XXXXXX")} || {
        OFFSITE_ERROR="cannot create a temporary dir"; return 1; }
    case $type in
        s3)
            offsite_read_credentials "$(offsite_get "$t" CREDENTIALS)" || return 1
            local prefix
            prefix=$(offsite_get "$t" PREFIX)
            OFFSITE_BASE="offsite_$t:$(offsite_get "$t" BUCKET)${prefix:+/$prefix}"
            ;;
        ssh)
            local kf
            kf=$(offsite_get "$t" KEY_FILE)
            [ -r "$kf" ] || { OFFSITE_ERROR="key file $kf for $t not readable on $(hostname) (create it, or fix key_file)"; return 1; }
            printf '%s\n' "$(offsite_get "$t" KNOWN_HOSTS)" >"$OFFSITE_WORK/known_hosts.$t"
            OFFSITE_BASE="offsite_$t:$(offsite_get "$t" PATH)"
            ;;
        *) OFFSITE_ERROR="unknown type '$type' of target $t in $OFFSITE_CONFIG (run fab install-backups)"; return 1 ;;
    esac
}

# offsite_rclone TARGET ARGS...: rclone for TARGET, configured through its environment
# only (in a subshell: the keys never reach a command line or this shell's env). Debian's
# rclone 1.60 fails at once when AWS_CA_BUNDLE is set: it is cleared.
offsite_rclone() {
    local t=$1
    shift
    (
        unset AWS_CA_BUNDLE
        local P="RCLONE_CONFIG_OFFSITE_${t^^}_"
        export RCLONE_CONFIG=/dev/null
        case $(offsite_get "$t" TYPE) in
            s3)
                export "${P}TYPE=s3" "${P}PROVIDER=Other" "${P}ENV_AUTH=false"
                export "${P}ENDPOINT=$(offsite_get "$t" ENDPOINT)" "${P}REGION=$(offsite_get "$t" REGION)"
                export "${P}ACCESS_KEY_ID=$OFFSITE_KEY_ID" "${P}SECRET_ACCESS_KEY=$OFFSITE_SECRET"
                export "${P}FORCE_PATH_STYLE=true" "${P}NO_CHECK_BUCKET=true" "${P}CHUNK_SIZE=16Mi"
                ;;
            ssh)
                export "${P}TYPE=sftp" "${P}HOST=$(offsite_get "$t" HOST)" "${P}USER=$(offsite_get "$t" USER)"
                export "${P}PORT=$(offsite_get "$t" PORT)" "${P}KEY_FILE=$(offsite_get "$t" KEY_FILE)"
                export "${P}KNOWN_HOSTS_FILE=$OFFSITE_WORK/known_hosts.$t" "${P}SHELL_TYPE=unix"
                export "${P}MD5SUM_COMMAND=none" "${P}SHA1SUM_COMMAND=none"
                ;;
        esac
        exec rclone --contimeout 15s --timeout 120s --low-level-retries 2 --retries 1 \
            --stats 0 -q "$@"
    )
}

# The most telling line rclone printed (its ERROR/Failed lines), cut to one line.
offsite_reason() {
    local line
    line=$({ grep -aE 'ERROR|Failed|failed|error' "$1" || cat "$1"; } 2>/dev/null | tail -n 1)
    line=${line#*ERROR : }
    line=${line#*Failed to }
    line=$(printf '%s' "$line" | tr -d '\r' | cut -c1-300)
    printf '%s' "${line:-${2:-no message}}"
}

# offsite_copies TARGET: the copies on TARGET, one per line:
#   NAME<TAB>PLAIN_SHA<TAB>PLAIN_SIZE<TAB>ENC_SHA<TAB>ENC_SIZE<TAB>PUSHED_AT<TAB>OBJECT_SIZE<TAB>VERIFIED_AT
# (OBJECT_SIZE "-" when the object is missing, VERIFIED_AT "-" when never verified).
# Objects without a .meta (a push cut short) are listed as "partial NAME".
offsite_copies() {
    local t=$1 listing metas rc
    local err=$OFFSITE_WORK/list.$t.err
    listing=$(offsite_rclone "$t" lsf --files-only --format sp --separator $'\t' "$OFFSITE_BASE" 2>"$err")
    rc=$?
    if [ $rc -ne 0 ]; then
        # A folder not made yet on an SSH target (rclone: directory not found) is empty.
        if [ "$(offsite_get "$t" TYPE)" = ssh ] && grep -aq 'directory not found' "$err"; then
            return 0
        fi
        # On S3 a prefix with nothing under it lists empty: not found is the bucket.
        if [ "$(offsite_get "$t" TYPE)" = s3 ] && grep -aq 'directory not found' "$err"; then
            OFFSITE_ERROR="bucket $(offsite_get "$t" BUCKET) not found at $(offsite_get "$t" ENDPOINT) (create it, or fix bucket)"
            return 1
        fi
        OFFSITE_ERROR="cannot list $t: $(offsite_reason "$err" "rclone status $rc")"
        return 1
    fi
    metas=""
    if grep -q '\.age\.meta$' <<<"$listing"; then
        metas=$(offsite_rclone "$t" cat --include '*.age.meta' --include '*.age.verified' \
            "$OFFSITE_BASE" 2>"$err") || {
            OFFSITE_ERROR="cannot read the copies' metadata on $t: $(offsite_reason "$err")"
            return 1
        }
    fi
    awk -F'\t' -v OFS='\t' '
        FNR == NR { size[$2] = $1; next }
        /^name=/ { n = substr($0, 6); names[n] = 1; next }
        /^[a-z_0-9]+=/ && n != "" && !/^verified=/ { k = substr($0, 1, index($0, "=") - 1); v[n, k] = substr($0, index($0, "=") + 1); next }
        /^verified=/ { split(substr($0, 10), a, " "); ver[a[1]] = a[2]; next }
        END {
            for (n in names) {
                o = n ".age"; os = (o in size) ? size[o] : "-"
                print n, v[n, "plaintext_sha256"], v[n, "plaintext_size"], v[n, "encrypted_sha256"], v[n, "encrypted_size"], v[n, "pushed_at"], os, ((n in ver) ? ver[n] : "-")
            }
            for (o in size) if (o ~ /\.age$/ && !(substr(o, 1, length(o) - 4) in names)) print "partial", substr(o, 1, length(o) - 4)
        }' <(printf '%s\n' "$listing") <(printf '%s\n' "$metas") | sort
}

# offsite_has COPIES_FILE NAME: is there a whole copy of NAME (its object as large as
# its .meta says)?
offsite_has() {
    awk -F'\t' -v n="$2" '$1 == n && $7 != "-" && $7 == $5 { f = 1 } END { exit !f }' "$1"
}

# offsite_plan TARGET COPIES_FILE: what the target's retention keeps of the union of the
# local good backups and its copies: the host program's offsite-plan, the same decision
# as the host's retention (GFS rules, pins) under the target's policy. Lines
# "keep|remove NAME REASON", newest first.
offsite_plan() {
    agent offsite-plan "$BACKUP_DIR" "$2" "$(date +%s)" "$(offsite_get "$1" RETENTION_DAYS)" \
        "$(offsite_get "$1" MIN_KEEP)" "$(offsite_get "$1" RETENTION_RULES)"
}

# offsite_push_one TARGET NAME: encrypt BACKUP_DIR/NAME and upload it, then its .meta.
# The plaintext read is checked against the backup's .sha256 on the way.
offsite_push_one() {
    local t=$1 name=$2 file="$BACKUP_DIR/$2" w=$OFFSITE_WORK expected recips=() r
    local st psum esum osize
    expected=$(cut -d' ' -f1 "$file.sha256" 2>/dev/null)
    [[ $expected =~ ^[0-9a-f]{64}$ ]] || { OFFSITE_ERROR="$name has no .sha256"; return 1; }
    for r in $OFFSITE_RECIPIENTS; do recips+=(-r "$r"); done
    [ ${#recips[@]} -gt 0 ] || { OFFSITE_ERROR="no age recipient in $OFFSITE_CONFIG (set offsite_recipients)"; return 1; }
    rm -f "$w/e.fifo"
    mkfifo -m 600 "$w/e.fifo" || { OFFSITE_ERROR="cannot create a fifo in $w"; return 1; }
    # The plaintext is hashed by a second reader of the file (from the page cache), the
    # encrypted stream through a fifo: one pass, no copy of the backup anywhere.
    sha256_stream <"$file" >"$w/p.sum" 2>/dev/null &
    local hp=$!
    sha256_stream <"$w/e.fifo" >"$w/e.sum" 2>/dev/null &
    local he=$!
    age "${recips[@]}" <"$file" 2>"$w/age.err" | tee -- "$w/e.fifo" 2>"$w/tee.err" |
        offsite_rclone "$t" rcat "$OFFSITE_BASE/$name.age" 2>"$w/rclone.err"
    st=("${PIPESTATUS[@]}")
    wait "$hp" "$he"
    psum=$(cut -d' ' -f1 "$w/p.sum" 2>/dev/null) esum=$(cut -d' ' -f1 "$w/e.sum" 2>/dev/null)
    if [ "${st[2]}" != 0 ]; then
        OFFSITE_ERROR="upload of $name failed: $(offsite_reason "$w/rclone.err" "rclone status ${st[2]}")"
        # SFTP says only "Failure" for a full disk: ask the target how much room it has.
        if [ "$(offsite_get "$t" TYPE)" = ssh ]; then
            local free
            free=$(offsite_rclone "$t" about --json "$OFFSITE_BASE" 2>/dev/null | tr -d '\n ' |
                sed -n 's/.*"free":\([0-9]*\).*/\1/p')
            if [[ $free =~ ^[0-9]+$ ]] && [ "$free" -lt "$(stat -c %s -- "$file")" ]; then
                OFFSITE_ERROR="$OFFSITE_ERROR (the target's disk is full: $free bytes free in $(offsite_get "$t" PATH); free space there)"
            fi
        fi
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    fi
    if [ "${st[1]}" != 0 ]; then
        OFFSITE_ERROR="hashing the encrypted $name failed: $(tail -n 1 "$w/tee.err" 2>/dev/null)"
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    fi
    if [ "${st[0]}" != 0 ]; then
        OFFSITE_ERROR="age failed on $name: $(tail -n 1 "$w/age.err" 2>/dev/null)"
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    fi
    if [ "$psum" != "$expected" ]; then
        OFFSITE_ERROR="$name does not match its .sha256 (read ${psum:0:16}, recorded ${expected:0:16}): not pushed, check it with fab verify"
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    fi
    # rclone rcat checks the size it sent against what the store made; the .meta records
    # the store's size, and the sha256 of the bytes sent (fab verify --offsite reads both).
    osize=$(offsite_rclone "$t" lsf --format s "$OFFSITE_BASE/$name.age" 2>"$w/rclone.err")
    if ! [[ $osize =~ ^[0-9]+$ ]] || [ "$osize" -le 0 ]; then
        OFFSITE_ERROR="the store does not show $name.age after its upload: $(offsite_reason "$w/rclone.err" "no size")"
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    fi
    printf 'name=%s\nobject=%s.age\nplaintext_sha256=%s\nplaintext_size=%s\nencrypted_sha256=%s\nencrypted_size=%s\npushed_at=%s\npushed_from=%s\nrecipients=%s\n' \
        "$name" "$name" "$psum" "$(stat -c %s -- "$file")" "$esum" "$osize" "$(now_utc)" \
        "$(hostname)" "$OFFSITE_RECIPIENTS" |
        offsite_rclone "$t" rcat "$OFFSITE_BASE/$name.age.meta" 2>"$w/rclone.err" || {
        OFFSITE_ERROR="writing $name.age.meta failed: $(offsite_reason "$w/rclone.err")"
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
        return 1
    }
    OFFSITE_PUSHED_SIZE=$osize
}

# offsite_sync TARGET DRY_RUN: push every local good backup that TARGET lacks and that
# its retention keeps (oldest first: what a failed run missed goes first), then apply
# its retention, but only when every push of this run succeeded. Lines on stdout
# (report): offsite.push=T NAME, offsite.keep=T NAME REASON, offsite.remove=T NAME REASON.
offsite_sync() {
    local t=$1 dry=${2:-0} started copies plan pushed=0 removed=0 failed="" name action reason
    started=$(date +%s)
    OFFSITE_ERROR=""
    offsite_prepare "$t" || return 1
    copies=$OFFSITE_WORK/copies.$t
    offsite_copies "$t" >"$copies" || return 1
    plan=$OFFSITE_WORK/plan.$t
    offsite_plan "$t" "$copies" >"$plan" || { OFFSITE_ERROR="the retention of $t failed"; return 1; }
    # Oldest first.
    while read -r action name reason; do
        [ "$action" = keep ] || continue
        if offsite_has "$copies" "$name"; then
            # A copy must hold this very backup: one whose plaintext differs is pushed again.
            local mine theirs
            mine=$(cut -d' ' -f1 "$BACKUP_DIR/$name.sha256" 2>/dev/null)
            theirs=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$copies")
            [ -z "$mine" ] || [ "$mine" = "$theirs" ] && continue
            log "offsite $t: the copy of $name differs from the local backup (plaintext sha256 ${theirs:0:16}, local ${mine:0:16}): pushing it again"
        fi
        [ -s "$BACKUP_DIR/$name.sha256" ] || continue
        report "offsite.push=$t $name"
        [ "$dry" = 1 ] && continue
        log "offsite $t: pushing $name"
        local t0=$EPOCHREALTIME
        if offsite_push_one "$t" "$name"; then
            pushed=$((pushed + 1))
            log "offsite $t: pushed $name ($OFFSITE_PUSHED_SIZE bytes encrypted in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s)"
        else
            failed=$OFFSITE_ERROR
            break
        fi
    done < <(tac "$plan")
    if [ -n "$failed" ]; then
        OFFSITE_ERROR=$failed
        return 1
    fi
    while read -r action name reason; do
        # A local backup too old for this target is simply not pushed.
        cut -f1 "$copies" | grep -qxF -- "$name" || [ "$action" = keep ] || continue
        report "offsite.$action=$t $name $reason"
        if [ "$action" != remove ] || [ "$dry" = 1 ]; then continue; fi
        if cut -f1 "$copies" | grep -qxF -- "$name"; then
            offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age.meta" >/dev/null 2>&1
            offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age.verified" >/dev/null 2>&1
            offsite_rclone "$t" deletefile "$OFFSITE_BASE/$name.age" >/dev/null 2>&1
            removed=$((removed + 1))
            log "offsite $t: retention removed $name ($reason)"
        fi
    done <"$plan"
    # Objects of a push cut short (no .meta): we hold the lock, nobody is writing them.
    while IFS=$'\t' read -r name rest; do
        [ "$name" = partial ] || continue
        report "offsite.remove=$t $rest partial upload (no .meta)"
        [ "$dry" = 0 ] || continue
        offsite_rclone "$t" deletefile "$OFFSITE_BASE/$rest.age" >/dev/null 2>&1
        log "offsite $t: removed the partial upload $rest.age"
    done <"$copies"
    OFFSITE_SUMMARY="pushed=$pushed pruned=$removed seconds=$(($(date +%s) - started))"
}

# offsite_after_backup: what backup-postgres.sh calls after a good backup. Its ERR
# trap and set -e are off meanwhile: nothing here may fail the backup.
offsite_after_backup() {
    [ -n "${OFFSITE_CONFIG:-}" ] || return 0
    local err_trap opts=$-
    err_trap=$(trap -p ERR)
    trap - ERR
    set +e
    offsite_push_all
    eval "$err_trap"
    if [[ $opts == *e* ]]; then set -e; fi
    return 0
}

# offsite_push_all: after a good backup, sync every target. Never fails: each target
# ends with one line, RESULT offsite NAME ok ... or RESULT offsite NAME failed: REASON.
offsite_push_all() {
    local t
    OFFSITE_WORK=$(mktemp -d "${TMPDIR:-/tmp}/aimms-offsite.XXXXXX") || {
        log "RESULT offsite all failed: cannot create a temporary dir"
        return 0
    }
    if ! offsite_load; then
        log "RESULT offsite all failed: $OFFSITE_ERROR"
        report "offsite.result=all failed: $OFFSITE_ERROR"
        rm -rf -- "$OFFSITE_WORK"
        return 0
    fi
    for t in $OFFSITE_TARGETS; do
        if offsite_tools && offsite_sync "$t" 0; then
            log "RESULT offsite $t ok $OFFSITE_SUMMARY"
            report "offsite.result=$t ok $OFFSITE_SUMMARY"
        else
            log "RESULT offsite $t failed: $OFFSITE_ERROR"
            report "offsite.result=$t failed: $OFFSITE_ERROR"
        fi
    done
    rm -rf -- "$OFFSITE_WORK"
    OFFSITE_WORK=""
    return 0
}

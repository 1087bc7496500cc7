#!/usr/bin/env bash
# Shared functions of the aimms-ops host scripts, inlined where a script asks
# for them (an include line), so every script that runs or is installed is one file.

# say LINE: print LINE on stdout, from a subshell. The operator's session may end while
# a script runs (a dropped connection, Ctrl-C): a write to it then fails (SIGPIPE), which
# kills only the subshell, so the script can go on (and clean up) without its session.
# Returns non-zero when the line could not be written.
say() { (printf '%s\n' "$1") 2>/dev/null; }

# ISO 8601 UTC timestamp.
now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# compose_project_label NAME: the project label compose puts on containers
# (lower case; characters other than a-z 0-9 - _ removed, as v1 and v2 do).
compose_project_label() {
    local p="${1,,}"
    printf '%s' "$p" | tr -cd 'a-z0-9_-'
}

# compose_cmd: set the array COMPOSE to "docker compose" (v2) or "docker-compose" (v1).
compose_cmd() {
    if docker compose version >/dev/null 2>&1; then
        # shellcheck disable=SC2034
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        # shellcheck disable=SC2034
        COMPOSE=(docker-compose)
    else
        # shellcheck disable=SC2034  # used by the scripts that include this file
        COMPOSE=()
        return 1
    fi
}

# resolve_container PROJECT SERVICE [all]: print the id of the service's container,
# found by compose's labels (v1 and v2 name containers differently). With "all",
# stopped containers count too. Prints nothing when there is none.
resolve_container() {
    local label
    label=$(compose_project_label "$1")
    local args=(ps -q --filter "label=com.docker.compose.project=$label"
                --filter "label=com.docker.compose.service=$2")
    [ "${3:-}" = all ] && args+=(-a)
    docker "${args[@]}" 2>/dev/null | sed -n 1p
}

# --- pins ----------------------------------------------------------------------------
# write_pin BACKUP_PATH BY REASON [UNTIL_EPOCH]: write BACKUP_PATH.pin (by, at, until,
# reason; read by retention.py), atomically, 0600. A pinned backup is never removed by
# retention (until UNTIL, when given). The reason is one line.
write_pin() {
    local pin="$1.pin" by=$2 reason=${3//[$'\t\r\n']/ } until=""
    if [ -n "${4:-}" ]; then until=$(date -u -d "@$4" +%Y-%m-%dT%H:%M:%SZ) || return 1; fi
    printf 'by=%s\nat=%s\nuntil=%s\nreason=%s\n' "$by" "$(now_utc)" "$until" "$reason" \
        >"$pin.tmp" && chmod 600 -- "$pin.tmp" && mv -f -- "$pin.tmp" "$pin"
}

# --- the size-drop guard -------------------------------------------------------------
# size_drop DIR NAME SIZE: print the median size of the (up to) five newest good
# backups (with a .sha256) other than NAME when SIZE is less than half of it; print
# nothing otherwise. The same rule as fab status's "backup size" check.
size_drop() {
    local dir=$1 skip=$2 size=$3 sizes=() _t s f median
    while IFS=$'\t' read -r _t s f; do
        if [ "$f" = "$skip" ] || [ ! -e "$dir/$f.sha256" ]; then continue; fi
        sizes+=("$s")
        [ "${#sizes[@]}" -lt 5 ] || break
    done < <(find "$dir" -maxdepth 1 -type f -name 'aimms_postgres_*.sql.gz' \
        -printf '%T@\t%s\t%f\n' 2>/dev/null | sort -t $'\t' -k1,1nr)
    [ "${#sizes[@]}" -gt 0 ] || return 0
    median=$(printf '%s\n' "${sizes[@]}" | sort -n | awk '{ a[NR] = $1 }
        END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%d\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    if [ "$median" -gt 0 ] && [ $((size * 2)) -lt "$median" ]; then printf '%s\n' "$median"; fi
    return 0
}

# --- pings ---------------------------------------------------------------------------
# ping_send KIND URL EVENT RID [MSG] [BODY_FILE] [MS]: tell a monitor how a run goes.
#   KIND healthchecks: EVENT start -> URL/start, ok -> URL/0, exit:N -> URL/N,
#     fail -> URL/fail, log -> URL/log (a message, no state change); ?rid=RID pairs the
#     start with its end; BODY_FILE (at most 100 kB) is POSTed.
#   KIND uptime-kuma: URL?status=up|down&msg=MSG&ping=MS (ok and log are up, start is
#     not sent: Uptime Kuma has no start signal).
# curl only, bounded: -m 10 per try, --retry 3 (refused connections too), no new try
# after 30 s, and the whole call killed after 45 s. The URL goes to curl on stdin, not
# on its command line. Prints curl's error on failure; never fails the caller's run.
PING_BOUND=45
ping_send() {
    local kind=$1 url=$2 event=$3 rid=$4 msg=${5:-} body=${6:-} ms=${7:-} full args err
    command -v curl >/dev/null 2>&1 || { echo "curl is not installed on the host"; return 1; }
    args=(-fsS -m 10 --retry 3 --retry-connrefused --retry-max-time 30 -o /dev/null -K -)
    case $kind in
        healthchecks)
            case $event in
                start) full="${url%/}/start" ;;
                ok) full="${url%/}/0" ;;
                exit:*) full="${url%/}/${event#exit:}" ;;
                fail) full="${url%/}/fail" ;;
                log) full="${url%/}/log" ;;
                *) echo "unknown ping event $event"; return 1 ;;
            esac
            full="$full?rid=$rid"
            if [ -n "$body" ] && [ -r "$body" ]; then
                args+=(--data-binary "@$body" -H 'Content-Type: text/plain')
            fi
            ;;
        uptime-kuma)
            [ "$event" != start ] || return 0
            local state=down
            case $event in ok | log) state=up ;; esac
            full=$url
            args+=(-G --data-urlencode "status=$state" --data-urlencode "msg=${msg:0:200}")
            [ -z "$ms" ] || args+=(--data-urlencode "ping=$ms")
            ;;
        *) echo "unknown ping kind $kind"; return 1 ;;
    esac
    if err=$(printf 'url = "%s"\n' "$full" | timeout -k 2 "$PING_BOUND" curl "${args[@]}" 2>&1); then
        return 0
    fi
    [ -n "$err" ] || err="no answer within ${PING_BOUND}s"
    printf '%s\n' "${err//$'\n'/ }"
    return 1
}

# ping_body LOG RUN_ID FILE [FIRST_LINE]: the run's last log lines (at most 100 kB) into FILE.
ping_body() {
    {
        [ -z "${4:-}" ] || printf '%s\n' "$4"
        tail -n 5000 -- "$1" 2>/dev/null | grep -F -- " $2 " | tail -n 200
    } | tail -c 100000 >"$3" 2>/dev/null || true
}

# new_rid: a run id for the monitor (pairs a start ping with its end).
new_rid() { cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "$$-$(date +%s)"; }

# job_ping URL EVENT [MSG] [FIRST_BODY_LINE]: ping URL (nothing when empty) for the
# running job and log how that went, with the job's log (the caller's) lines as the
# body. Uses PING_KIND, PING_RID, LOG_FILE, RUN_ID and STARTED of the caller and its
# log function. Never fails the run; each ping takes at most PING_BOUND seconds.
job_ping() {
    # shellcheck disable=SC2153  # STARTED, like RUN_ID, is the calling script's
    local url=$1 event=$2 body="" why ms=$((($(date +%s) - STARTED) * 1000))
    [ -n "$url" ] || return 0
    if [ "$event" != start ]; then
        body=$(mktemp "${TMPDIR:-/tmp}/aimms-ping.XXXXXX" 2>/dev/null) || body=""
        [ -z "$body" ] || ping_body "$LOG_FILE" "$RUN_ID" "$body" "${4:-}"
    fi
    if why=$(ping_send "$PING_KIND" "$url" "$event" "$PING_RID" "${3:-}" "$body" "$ms"); then
        log "ping $event: ok ($PING_KIND)"
    else
        log "ping $event: failed: $why ($PING_KIND)"
    fi
    [ -z "$body" ] || rm -f -- "$body"
    return 0
}

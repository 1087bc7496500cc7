#!/usr/bin/env bash
# status-facts.sh PROJECT SERVICE BACKUP_SCRIPT CONF_FILE VERIFY_SCRIPT RECORD_FILE LOG_FILE
#                 SUPERUSER
# What `fab status` and `fab doctor` need beyond facts.sh and list-backups.sh, as
# key=value lines (multi-line values base64-encoded). Read-only.
set -uo pipefail
# @include lib.sh

project=$1 service=$2 script=$3 conf=$4 verify=$5 record=$6 log=$7 superuser=${8:-postgres}

echo "now.epoch=$(date +%s)"

# The installed files: sha256 and mode, empty when absent.
file_facts script "$script"
file_facts conf "$conf"
file_facts verify "$verify"
if [ -r "$record" ]; then echo "record.b64=$(base64 -w0 <"$record")"; fi

if command -v crontab >/dev/null 2>&1; then
    echo "crontab.available=1"
    echo "crontab.b64=$(crontab -l 2>/dev/null | base64 -w0)"
else
    echo "crontab.available=0"
fi
if command -v pgrep >/dev/null 2>&1; then
    if pgrep -x cron >/dev/null 2>&1 || pgrep -x crond >/dev/null 2>&1; then
        echo "cron.daemon=1"
    else
        echo "cron.daemon=0"
    fi
fi

if [ -f "$log" ]; then
    echo "log.exists=1"
    # RESULT lines, with the START and DATABASES lines of each run (fab status: a run
    # that died, what the newest backup holds).
    echo "log.results_b64=$(grep -E '^[^ ]+ (backup|verify)\[[0-9]+\] (RESULT|START|DATABASES) ' -- "$log" |
        tail -n 120 | base64 -w0)"
    echo "log.tail_b64=$(tail -n 60 -- "$log" | base64 -w0)"
    echo "log.pings_b64=$(tail -n 5000 -- "$log" | grep -E '^[^ ]+ (backup|verify)\[[0-9]+\] ping ' |
        tail -n 10 | base64 -w0)"
else
    echo "log.exists=0"
fi

cid=$(resolve_container "$project" "$service" all)
if [ -n "$cid" ]; then
    docker inspect --format 'container.exit_code={{.State.ExitCode}}
container.finished_at={{.State.FinishedAt}}
container.error={{.State.Error}}' "$cid" 2>/dev/null
    echo "container.log_b64=$(docker logs --tail 15 "$cid" 2>&1 | base64 -w0)"
fi

# The databases restores set aside or left half-built (aimms_ops/dump/beside.py): one
# "NAME SIZE SETTING" line each, names and setting in hex.
running=$(resolve_container "$project" "$service")
if [ -n "$running" ]; then
    echo "restore.copies_b64=$(docker exec "$running" psql -X -A -t -F ' ' -U "$superuser" \
        -d template1 -c "SELECT encode(convert_to(d.datname, 'UTF8'), 'hex'),
            pg_database_size(d.oid), coalesce(encode(convert_to((SELECT c FROM
            pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid
            AND s.setrole = 0 AND c LIKE 'aimms_ops.replaced=%'), 'UTF8'), 'hex'), '-')
            FROM pg_database d WHERE d.datname ~ '^aimms_ops_(new|old)_'" 2>/dev/null |
        base64 -w0)"
fi

# Restores and deep verifies read the dump with python3 (aimms_ops/dump, in the host program).
if command -v python3 >/dev/null 2>&1; then
    echo "python3.version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
else
    echo "python3.version="
fi
compressor_facts
echo "env.PATH=$PATH"
echo "env.DOCKER_HOST=${DOCKER_HOST:-}"

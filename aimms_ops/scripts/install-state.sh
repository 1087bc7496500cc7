#!/usr/bin/env bash
# install-state.sh SCRIPT CONF BACKUP_DIR LOG_FILE [VERIFY_SCRIPT RECORD PROJECT SERVICE]:
# what `fab install-backups` needs to know to change only what differs. key=value
# lines; the crontab and the install record base64-encoded.
set -uo pipefail
# @include lib.sh
script=$1 conf=$2 dir=$3 log=$4 verify=${5:-} record=${6:-} project=${7:-} service=${8:-}
file_facts script "$script"
file_facts conf "$conf"
[ -z "$verify" ] || file_facts verify "$verify"
echo "offsite.missing=$(missing_tools rclone age)"
if [ -d "$dir" ]; then echo "dir.mode=$(stat -c %a -- "$dir")"; else echo "dir.mode="; fi
if [ -f "$log" ]; then echo "log.mode=$(stat -c %a -- "$log")"; else echo "log.mode="; fi
if command -v crontab >/dev/null 2>&1; then
    echo "crontab.available=1"
    echo "crontab.b64=$(crontab -l 2>/dev/null | base64 -w0)"
else
    echo "crontab.available=0"
fi
compressor_facts
echo "env.PATH=$PATH"
echo "env.DOCKER_HOST=${DOCKER_HOST:-}"
echo "env.user=$(id -un)"
if [ -n "$record" ] && [ -r "$record" ]; then echo "record.b64=$(base64 -w0 <"$record")"; fi
if [ -n "$project" ]; then
    cid=$(resolve_container "$project" "$service" all)
    echo "container.id=$cid"
    if [ -n "$cid" ]; then
        docker inspect --format 'container.name={{.Name}}
container.image={{.Config.Image}}' "$cid" 2>/dev/null | sed 's#container.name=/#container.name=#'
    fi
fi

#!/usr/bin/env bash
# rebuild-facts.sh VOLUME IMAGE STATE_FILE KEEP_VOLUME: what the preflight of
# rebuild-volume needs beyond facts.sh, as key=value lines. Read-only: the size of the
# volume and the free space beside it are measured by a throwaway container of IMAGE
# (no network) that mounts the volume read-only.
set -uo pipefail

vol=$1 image=$2 state=$3 keep=$4

echo "docker.root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)"
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "image.present=1"
else
    echo "image.present=0"
fi
if spec=$(docker volume inspect --format '{{json .}}' "$vol" 2>/dev/null); then
    echo "volume.exists=1"
    echo "volume.json=$spec"
    docker ps -a --filter "volume=$vol" --format \
        'volume.user={{.Names}}	{{.Label "com.docker.compose.project"}}	{{.Label "com.docker.compose.service"}}'
    if [ "$image" != "" ] && docker image inspect "$image" >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # the sh -c body runs in the container
        if out=$(docker run --rm --network none --user 0:0 --entrypoint sh \
            -v "$vol:/from:ro" "$image" \
            -c 'du -sk /from | cut -f1; df -Pk /from | awk "NR == 2 { print \$4 }"' 2>&1); then
            echo "volume.size_kb=$(printf '%s\n' "$out" | sed -n 1p)"
            echo "volume.avail_kb=$(printf '%s\n' "$out" | sed -n 2p)"
        else
            echo "volume.measure_error=$(printf '%s' "$out" | tail -n 1)"
        fi
    fi
else
    echo "volume.exists=0"
fi
if docker volume inspect "$keep" >/dev/null 2>&1; then
    echo "keep.exists=1"
else
    echo "keep.exists=0"
fi
if [ -f "$state" ]; then
    echo "state.exists=1"
    echo "state.b64=$(base64 -w0 <"$state")"
else
    echo "state.exists=0"
fi

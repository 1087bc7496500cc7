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

# pick_compressor LEVEL [auto|igzip|pigz|gzip]: set ZIP (the compressor at LEVEL, stdin
# to stdout), ZIP_NAME and ZIP_LEVEL. igzip (ISA-L) when present, else pigz, else gzip:
# all three write the same gzip format, read by any gunzip. igzip's levels are 0-3
# (ISA-L has no more); a higher LEVEL becomes 3. Fails for a named tool that is absent.
# shellcheck disable=SC2034  # ZIP* are used by the scripts that include this file
pick_compressor() {
    local level=$1 want=${2:-auto} tool
    for tool in igzip pigz gzip; do
        [ "$want" = auto ] || [ "$want" = "$tool" ] || continue
        command -v "$tool" >/dev/null 2>&1 || continue
        ZIP_NAME=$tool
        ZIP_LEVEL=$level
        if [ "$tool" = igzip ] && [ "$level" -gt 3 ]; then ZIP_LEVEL=3; fi
        ZIP=("$tool" -c -"$ZIP_LEVEL")
        return 0
    done
    return 1
}

# pick_decompressor: set UNZIP to the fastest gzip decompressor present (stdin to
# stdout): igzip, else pigz, else gzip.
# shellcheck disable=SC2034  # UNZIP is used by the scripts that include this file
pick_decompressor() {
    local tool
    for tool in igzip pigz gzip; do
        if command -v "$tool" >/dev/null 2>&1; then
            UNZIP=("$tool" -dc)
            return 0
        fi
    done
    return 1
}

# compressor_facts: key=value lines naming the compressor a backup run here would use
# (with this PATH: the settings file gives cron the same one), and which of the three
# are installed.
compressor_facts() {
    local tool have=""
    for tool in igzip pigz gzip; do
        if command -v "$tool" >/dev/null 2>&1; then have="$have${have:+ }$tool"; fi
    done
    if pick_compressor 1; then echo "compressor.name=$ZIP_NAME"; else echo "compressor.name="; fi
    if pick_decompressor; then echo "compressor.check=${UNZIP[0]}"; else echo "compressor.check="; fi
    echo "compressor.have=$have"
}

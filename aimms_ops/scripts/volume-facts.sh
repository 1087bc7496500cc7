#!/usr/bin/env bash
# volume-facts.sh: the volumes and containers of this Docker engine, for `fab volumes`.
# Tab-separated lines, each tagged (read-only):
#   api=SERVER_API<TAB>CLIENT_API            the API versions in use
#   vol=NAME<TAB>DRIVER<TAB>MOUNTPOINT<TAB>LABELS
#   ctr=NAME<TAB>STATE<TAB>MOUNTS<TAB>COMPOSE_PROJECT<TAB>COMPOSE_SERVICE
#   size=NAME<TAB>SIZE                        as the daemon measures it (docker system df -v)
#   kept=NAME<TAB>KEPT_FROM<TAB>CREATED_AT    volumes kept by earlier rebuilds (their label)
set -uo pipefail
printf 'api=%s\t%s\n' "$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null)" \
    "$(docker version --format '{{.Client.APIVersion}}' 2>/dev/null)"
docker volume ls --format 'vol={{.Name}}	{{.Driver}}	{{.Mountpoint}}	{{.Labels}}' 2>/dev/null
docker ps -a --no-trunc --format 'ctr={{.Names}}	{{.State}}	{{.Mounts}}	{{.Label "com.docker.compose.project"}}	{{.Label "com.docker.compose.service"}}' 2>/dev/null
docker system df -v --format '{{range .Volumes}}size={{.Name}}{{"\t"}}{{.Size}}{{println}}{{end}}' 2>/dev/null
kept=$(docker volume ls -q --filter label=org.aimms-ops.kept-from 2>/dev/null)
if [ -n "$kept" ]; then
    # shellcheck disable=SC2086  # volume names have no spaces
    docker volume inspect --format 'kept={{.Name}}	{{index .Labels "org.aimms-ops.kept-from"}}	{{.CreatedAt}}' $kept 2>/dev/null
fi
exit 0

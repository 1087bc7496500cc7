"""``fab volumes``: the stack's volumes, and what would preserve or destroy each one.

The seed's "what preserves / what destroys" table, computed for this host: whether
each volume is external, its size, the containers that mount it, and the exact
commands (with this host's compose command and Docker API) that would delete it.
One SSH round trip (facts.sh and volume-facts.sh); the rest is pure.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from . import shell
from .compose import compose_services_using, compose_volumes, decode_config, facts_args
from .compose import parse_facts as parse_key_values
from .inventory import Host
from .remote import Remote

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKMGTP]?B)$")
_FACTOR = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
           "PB": 1000**5}


def parse_docker_size(text: str) -> int | None:
    """Docker's human sizes (decimal units: ``72.75MB``, ``177B``) as bytes."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _FACTOR[m.group(2)])


def _api(version: str) -> tuple[int, int]:
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


@dataclass(frozen=True)
class Mounter:
    container: str
    state: str


@dataclass(frozen=True)
class EngineFacts:
    """What volume-facts.sh reports, parsed."""

    api: str  # the API version in use (the lower of server and client)
    volumes: dict[str, dict[str, str]]  # name -> driver, mountpoint, labels
    containers: list[dict[str, str]]  # name, state, mounts, project, service
    sizes: dict[str, str]


def parse_engine(text: str) -> EngineFacts:
    """Parse volume-facts.sh output (pure)."""
    api = ""
    vols: dict[str, dict[str, str]] = {}
    ctrs: list[dict[str, str]] = []
    sizes: dict[str, str] = {}
    for line in text.splitlines():
        tag, sep, rest = line.partition("=")
        if not sep:
            continue
        f = rest.split("\t")
        if tag == "api":
            known = [v for v in f if _api(v) != (0, 0)]
            api = min(known, key=_api) if known else ""
        elif tag == "vol" and f[0]:
            f += [""] * (4 - len(f))
            vols[f[0]] = {"driver": f[1], "mountpoint": f[2], "labels": f[3]}
        elif tag == "ctr" and f[0]:
            f += [""] * (5 - len(f))
            ctrs.append({"name": f[0], "state": f[1], "mounts": f[2], "project": f[3],
                         "service": f[4]})
        elif tag == "size" and len(f) >= 2:
            sizes[f[0]] = f[1]
    return EngineFacts(api, vols, ctrs, sizes)


@dataclass(frozen=True)
class VolumeReport:
    name: str
    exists: bool
    external: bool | None  # None: the compose file does not declare it
    compose_key: str | None
    in_inventory: bool
    size: str | None
    size_bytes: int | None
    mountpoint: str | None
    mounted_by: tuple[Mounter, ...]
    services: tuple[str, ...]
    destroyed_by: tuple[str, ...]
    preserved_by: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["mounted_by"] = [asdict(m) for m in self.mounted_by]
        d["services"] = list(self.services)
        d["destroyed_by"] = list(self.destroyed_by)
        d["preserved_by"] = list(self.preserved_by)
        return d


def destroyers(name: str, external: bool | None, mountpoint: str | None, api: str,
               compose: str) -> list[str]:
    """The commands that would delete volume ``name`` on this host (pure).

    From Docker API 1.42 (engine 23) ``docker volume prune`` only removes anonymous
    volumes unless given ``--all``; with an older engine or client it removes every
    volume no container uses, named ones included, and so does
    ``docker system prune --volumes``.
    """
    q = shell.quote(name)
    out = [f"docker volume rm {q} (once no container, running or stopped, uses it)"]
    if _api(api) >= (1, 42):
        out.append("docker volume prune --all (when no container uses it)")
    else:
        out.append("docker volume prune (when no container uses it: Docker API "
                   f"{api or 'unknown'} removes named volumes too)")
        out.append("docker system prune --volumes (when no container uses it)")
    if external is False:
        out.append(f"{compose} down -v (the compose file owns this volume: not external)")
    if mountpoint:
        out.append(f"rm -rf {shell.quote(mountpoint)} (as root, underneath Docker)")
    return out


def preservers(services: list[str], external: bool | None, compose: str) -> list[str]:
    """The everyday commands that keep the data of a volume (pure)."""
    out = []
    for svc in services:
        s = shell.quote(svc)
        out += [f"{compose} restart {s}", f"{compose} stop {s} && {compose} start {s}",
                f"{compose} up -d {s}"]
    out.append(f"{compose} down")
    if external:
        out.append(f"{compose} down -v (external volumes are never removed by compose)")
    out += [f"{compose} build && {compose} up -d", "server reboots"]
    return out


def report(facts: dict[str, str], engine: EngineFacts, host: Host) -> list[VolumeReport]:
    """Every volume of the stack: in the inventory, declared by compose, or mounted by
    one of the project's containers (pure)."""
    config = decode_config(facts)
    decls = compose_volumes(config)
    project_label = re.sub(r"[^a-z0-9_-]", "", host.compose.project.lower())
    mounted: dict[str, list[Mounter]] = {}
    project_vols: list[str] = []
    for c in engine.containers:
        for m in filter(None, c["mounts"].split(",")):
            mounted.setdefault(m, []).append(Mounter(c["name"], c["state"]))
            if c["project"] == project_label and m in engine.volumes:
                project_vols.append(m)
    names = list(dict.fromkeys([*host.volumes.names(), *decls, *project_vols]))
    cmd = (facts.get("compose.cmd") or "docker compose").split()
    compose = shell.join([*cmd, "-f", host.compose.file_path, "-p", host.compose.project])
    out = []
    for name in names:
        decl = decls.get(name)
        info = engine.volumes.get(name)
        external = decl.external if decl else None
        services = compose_services_using(config, decl.key) if decl else []
        size = engine.sizes.get(name)
        mountpoint = info["mountpoint"] if info else None
        out.append(VolumeReport(
            name=name, exists=info is not None, external=external,
            compose_key=decl.key if decl else None, in_inventory=name in host.volumes.names(),
            size=size, size_bytes=parse_docker_size(size) if size else None,
            mountpoint=mountpoint, mounted_by=tuple(mounted.get(name, [])),
            services=tuple(services),
            destroyed_by=tuple(destroyers(name, external, mountpoint, engine.api, compose)),
            preserved_by=tuple(preservers(services, external, compose)),
        ))
    return out


def gather_command(host: Host) -> str:
    parts = [shell.join(["echo", "@@facts"]), shell.script_command("facts.sh", facts_args(host)),
             shell.join(["echo", "@@engine"]), shell.script_command("volume-facts.sh")]
    return "; ".join(parts)


def parse_gathered(text: str, host: Host) -> list[VolumeReport]:
    facts_part, _, engine_part = text.partition("@@engine\n")
    return report(parse_key_values(facts_part.replace("@@facts\n", "", 1)),
                  parse_engine(engine_part), host)


def volumes(remote: Remote) -> list[VolumeReport]:
    """The stack's volumes on the host (one SSH round trip)."""
    res = remote.run(gather_command(remote.host), what="the volume scripts")
    return parse_gathered(res.stdout, remote.host)

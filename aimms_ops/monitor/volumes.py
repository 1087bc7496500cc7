"""``fab volumes``: the stack's volumes, and what would preserve or destroy each one.

The seed's "what preserves / what destroys" table, computed for this host: whether
each volume is external, its size, the containers that mount it, and the exact
commands (with this host's compose command and Docker API) that would delete it.
One SSH round trip (the host program's facts and volume-facts, in one start of it); the
rest is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aimms_ops.core import units
from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.layout import KEPT_LABEL
from aimms_ops.host import bundle, shell
from aimms_ops.host.compose import (
    compose_services_using,
    compose_volumes,
    config_text,
    project_label,
)
from aimms_ops.host.events import CutShort, Facts, facts_of, parse
from aimms_ops.host.remote import Remote
from aimms_ops.inventory.connected import HostRemote, compose_command, facts_args
from aimms_ops.inventory.model import Host

#: The label rebuild-volume puts on the volume that keeps the old data.
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

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
    kept: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (from, created)


def _rows(value: Any, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The objects of a list fact, each with ``fields`` as text (missing ones empty)."""
    rows = value if isinstance(value, list) else []
    return [{f: str(r.get(f) or "") for f in fields} for r in rows if isinstance(r, dict)]


def parse_engine(facts: Mapping[str, Any]) -> EngineFacts:
    """The host program's volume-facts (pure)."""
    api = facts.get("api")
    known = [v for v in api if isinstance(v, str) and _api(v) != (0, 0)] \
        if isinstance(api, list) else []
    vols = {r["name"]: {"driver": r["driver"], "mountpoint": r["mountpoint"],
                        "labels": r["labels"]}
            for r in _rows(facts.get("volumes"), ("name", "driver", "mountpoint", "labels"))
            if r["name"]}
    ctrs = [r for r in _rows(facts.get("containers"),
                             ("name", "state", "mounts", "project", "service")) if r["name"]]
    sizes = facts.get("sizes")
    kept = {r["name"]: (r["from"], r["created"])
            for r in _rows(facts.get("kept"), ("name", "from", "created")) if r["name"]}
    return EngineFacts(min(known, key=_api) if known else "", vols, ctrs,
                       {str(k): str(v) for k, v in sizes.items()}
                       if isinstance(sizes, dict) else {}, kept)


def parse_created(text: str) -> datetime | None:
    """Docker's CreatedAt of a volume (``2026-12-01T08:30:00Z``, or with an offset)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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
    kept_from: str | None = None  # set for a volume kept by an earlier rebuild
    created: datetime | None = None
    age_seconds: int | None = None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["created"] = (self.created.isoformat().replace("+00:00", "Z")
                        if self.created else None)
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


def report(facts: Facts, engine: EngineFacts, host: Host,
           now: datetime | None = None) -> list[VolumeReport]:
    """Every volume of the stack: in the inventory, declared by compose, or mounted by
    one of the project's containers (pure)."""
    config = config_text(facts)
    decls = compose_volumes(config)
    label = project_label(host.compose.project)
    mounted: dict[str, list[Mounter]] = {}
    project_vols: list[str] = []
    for c in engine.containers:
        for m in filter(None, c["mounts"].split(",")):
            mounted.setdefault(m, []).append(Mounter(c["name"], c["state"]))
            if c["project"] == label and m in engine.volumes:
                project_vols.append(m)
    live = set(host.volumes.names())
    kept = [k for k in sorted(engine.kept) if k not in live and k in engine.volumes]
    names = list(dict.fromkeys([*host.volumes.names(), *decls, *project_vols, *kept]))
    compose = compose_command(facts, host)
    out = []
    for name in names:
        decl = decls.get(name)
        info = engine.volumes.get(name)
        external = decl.external if decl else None
        services = compose_services_using(config, decl.key) if decl else []
        docker_size = engine.sizes.get(name)
        size_bytes = parse_docker_size(docker_size) if docker_size else None
        # One unit format everywhere (IEC, one decimal), not Docker's decimal 72.75MB.
        size = units.size(size_bytes) if size_bytes is not None else docker_size
        mountpoint = info["mountpoint"] if info else None
        out.append(VolumeReport(
            name=name, exists=info is not None, external=external,
            compose_key=decl.key if decl else None, in_inventory=name in host.volumes.names(),
            size=size, size_bytes=size_bytes,
            mountpoint=mountpoint, mounted_by=tuple(mounted.get(name, [])),
            services=tuple(services),
            destroyed_by=tuple(destroyers(name, external, mountpoint, engine.api, compose)),
            preserved_by=tuple(preservers(services, external, compose)),
            **({} if name in live else _kept_fields(name, engine, now)),
        ))
    return out


def _kept_fields(name: str, engine: EngineFacts, now: datetime | None) -> dict[str, Any]:
    if name not in engine.kept:
        return {}
    kept_from, created_at = engine.kept[name]
    created = parse_created(created_at)
    age = int((now - created).total_seconds()) if created and now else None
    return {"kept_from": kept_from or None, "created": created,
            "age_seconds": max(0, age) if age is not None else None}


def kept_volumes(found: list[VolumeReport]) -> list[VolumeReport]:
    """The volumes kept by earlier rebuilds, oldest first (pure)."""
    kept = [v for v in found if v.kept_from is not None]
    return sorted(kept, key=lambda v: (v.created is None, v.created or datetime.min, v.name))


def check_droppable(name: str, found: list[VolumeReport], host: Host) -> VolumeReport:
    """The kept volume ``name`` if it may be removed, else an OpsError saying why (pure).

    Only a volume that carries rebuild-volume's label, that is neither of the
    inventory's volumes nor declared by the compose file, and that no container
    (running or stopped) uses.
    """
    if not isinstance(name, str) or not _VOLUME_NAME.fullmatch(name):
        raise OpsError(f"not a volume name: {shown(name)}", "see fab volumes")
    if name in host.volumes.names():
        raise OpsError(f"refusing to remove {name}: it is a live volume of the inventory "
                       "(volumes.postgres or volumes.redis)",
                       "--drop-kept removes only volumes kept by earlier rebuilds; see "
                       "fab volumes")
    report_ = next((v for v in found if v.name == name), None)
    kept = [v.name for v in kept_volumes(found)]
    if report_ is None or not report_.exists or report_.kept_from is None:
        raise OpsError(f"refusing to remove {name}: it is not a volume kept by a rebuild "
                       f"(one with the {KEPT_LABEL} label; kept volumes on the host: "
                       f"{', '.join(kept) or 'none'})", "see fab volumes")
    if report_.compose_key is not None:
        raise OpsError(f"refusing to remove {name}: the compose file declares it "
                       f"({report_.compose_key})", "see fab volumes")
    if report_.mounted_by:
        users = ", ".join(f"{m.container} ({m.state})" for m in report_.mounted_by)
        raise OpsError(f"refusing to remove {name}: used by {users}",
                       "remove those containers first (docker rm NAME), then run again")
    return report_


def drop_kept(remote: Remote, kept: VolumeReport) -> None:
    """Remove a kept volume (checked by :func:`check_droppable`) and make sure it is gone."""
    res = remote.run(shell.join(["docker", "volume", "rm", kept.name]), what="docker volume rm")
    gone = remote.run(shell.join(["docker", "volume", "inspect", kept.name]),
                      what="docker volume inspect")
    if gone.ok:
        raise OpsError(f"{kept.name} is still there: {res.last_error_line()}",
                       f"see: docker volume inspect {kept.name}")


def gather_command(host: Host) -> str:
    """The host program's facts and volume-facts, in one start of it."""
    facts = ["facts", *facts_args(host)]
    return bundle.program_command(["batch", str(len(facts)), *facts, "1", "volume-facts"])


def parse_gathered(text: str, host: Host, now: datetime | None = None) -> list[VolumeReport]:
    """The volumes, or an OpsError when Docker does not answer: then nothing can be said
    of them (an unreachable daemon lists no volume, which is not "does not exist")."""
    found = parse(text)
    facts, engine = facts_of(found, "facts"), facts_of(found, "volume-facts")
    if facts is not None and facts.get("docker.ok") != "1":
        raise OpsError(f"docker is not reachable on {host.name}: "
                       f"{facts.get('docker.error') or 'no answer'}",
                       "start the Docker daemon on the host, or see fab check")
    if facts is None or engine is None:
        raise CutShort(f"the host program's facts and volume-facts on {host.name} ended "
                       "before their report (the output was cut short)",
                       "run it again; if it fails again, see fab doctor")
    return report(facts, parse_engine(engine), host, now)


def volumes(remote: HostRemote) -> list[VolumeReport]:
    """The stack's volumes on the host (one SSH round trip)."""
    res = remote.program_ran(remote.run(gather_command(remote.host),
                                        what="the host program's volume-facts"))
    return parse_gathered(res.stdout, remote.host, datetime.now(UTC))

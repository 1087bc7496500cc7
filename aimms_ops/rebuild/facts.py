"""What rebuild-volume's preflight finds on the host: the host program's facts and
rebuild-facts, read-only, made into RebuildFacts by pure functions (gathered by
plan.gather)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import yaml

from aimms_ops.host.compose import config_text
from aimms_ops.host.events import text_of


@dataclass(frozen=True)
class VolumeSpec:
    """How a docker volume was created: what ``docker volume create`` needs again."""

    driver: str
    options: dict[str, str]
    labels: dict[str, str]

    @classmethod
    def from_json(cls, text: str) -> VolumeSpec | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return cls(driver=str(data.get("Driver") or "local"),
                   options={str(k): str(v) for k, v in (data.get("Options") or {}).items()},
                   labels={str(k): str(v) for k, v in (data.get("Labels") or {}).items()})

    def to_json(self) -> str:
        return json.dumps({"Driver": self.driver, "Options": self.options,
                           "Labels": self.labels}, sort_keys=True, separators=(",", ":"))


class VolumeUser(NamedTuple):
    """A container that mounts the volume, and the compose project and service it is of."""

    container: str
    project: str
    service: str


@dataclass(frozen=True)
class RebuildFacts:
    """What the preflight found on the host (the host program's facts and rebuild-facts)."""

    docker_ok: bool = True
    docker_error: str = ""
    compose_cmd: tuple[str, ...] = ()
    compose_file_exists: bool = False
    config_ok: bool = False
    config_error: str = ""
    config_yaml: str = ""
    container_image: str = ""
    docker_root: str = ""
    image: str = ""
    image_present: bool = False
    volume_exists: bool = False
    volume_spec: VolumeSpec | None = None
    volume_users: tuple[VolumeUser, ...] = ()
    size_kb: int | None = None
    avail_kb: int | None = None
    measure_error: str = ""
    keep_exists: bool = False
    state_text: str | None = None


def parse_stack_facts(facts: Mapping[str, Any]) -> RebuildFacts:
    """The part of the host's facts the rebuild needs (pure)."""
    return RebuildFacts(
        docker_ok=facts.get("docker.ok") == "1",
        docker_error=str(facts.get("docker.error", "")),
        compose_cmd=tuple(str(facts.get("compose.cmd", "")).split()),
        compose_file_exists=facts.get("compose.file_exists") == "1",
        config_ok=facts.get("compose.config_ok") == "1",
        config_error=str(facts.get("compose.config_error", "")),
        config_yaml=config_text(facts),
        container_image=str(facts.get("container.image", "")),
    )


def add_volume_facts(base: RebuildFacts, image: str, facts: Mapping[str, Any]) -> RebuildFacts:
    """``base`` completed with the host program's rebuild-facts (pure)."""
    rows = facts.get("volume.users")
    users = [VolumeUser(str(r.get("name", "")), str(r.get("project", "")),
                        str(r.get("service", "")))
             for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict)]

    def kb(key: str) -> int | None:
        v = facts.get(key, "")
        return int(v) if isinstance(v, str) and v.isdigit() else None

    def text(key: str) -> str:
        return text_of(facts, key)

    state = facts.get("state")
    return replace(
        base, image=image, docker_root=text("docker.root"),
        image_present=facts.get("image.present") == "1",
        volume_exists=facts.get("volume.exists") == "1",
        volume_spec=VolumeSpec.from_json(text("volume.json")) if "volume.json" in facts
        else None,
        volume_users=tuple(users), size_kb=kb("volume.size_kb"), avail_kb=kb("volume.avail_kb"),
        measure_error=text("volume.measure_error"),
        keep_exists=facts.get("keep.exists") == "1",
        state_text=text_of(facts, "state", shown=True) if isinstance(state, str) else None,
    )


def service_image(config_yaml: str, service: str) -> str:
    """The image of ``service`` in a normalized compose config, or ''."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return ""
    svc = ((data.get("services") or {}) if isinstance(data, dict) else {}).get(service) or {}
    return str(svc.get("image") or "") if isinstance(svc, dict) else ""


def config_services(config_yaml: str) -> tuple[str, ...]:
    """The services of a normalized compose config, in file order."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return ()
    services = data.get("services") if isinstance(data, dict) else None
    return tuple(str(s) for s in services) if isinstance(services, dict) else ()



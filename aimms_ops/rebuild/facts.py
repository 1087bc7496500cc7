"""What rebuild-volume's preflight finds on the host: facts.sh and rebuild-facts.sh,
read-only, parsed by pure functions (gathered by plan.gather)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from typing import NamedTuple

import yaml

from aimms_ops.host.compose import decode_config


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
    """What the preflight found on the host (facts.sh plus rebuild-facts.sh)."""

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


def parse_stack_facts(facts: dict[str, str]) -> RebuildFacts:
    """The part of facts.sh's output the rebuild needs (pure)."""
    return RebuildFacts(
        docker_ok=facts.get("docker.ok") == "1",
        docker_error=facts.get("docker.error", ""),
        compose_cmd=tuple(facts.get("compose.cmd", "").split()),
        compose_file_exists=facts.get("compose.file_exists") == "1",
        config_ok=facts.get("compose.config_ok") == "1",
        config_error=facts.get("compose.config_error", ""),
        config_yaml=decode_config(facts),
        container_image=facts.get("container.image", ""),
    )


def add_volume_facts(base: RebuildFacts, image: str, text: str) -> RebuildFacts:
    """``base`` completed with the output of rebuild-facts.sh (pure)."""
    one: dict[str, str] = {}
    users = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "volume.user":
            name, _, rest = value.partition("\t")
            project, _, service = rest.partition("\t")
            users.append(VolumeUser(name, project, service))
        else:
            one[key] = value

    def kb(key: str) -> int | None:
        v = one.get(key, "")
        return int(v) if v.isdigit() else None

    state_text = None
    if one.get("state.exists") == "1":
        try:
            state_text = base64.b64decode(one.get("state.b64", "")).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            state_text = ""
    return replace(
        base, image=image, docker_root=one.get("docker.root", ""),
        image_present=one.get("image.present") == "1",
        volume_exists=one.get("volume.exists") == "1",
        volume_spec=VolumeSpec.from_json(one["volume.json"]) if "volume.json" in one else None,
        volume_users=tuple(users), size_kb=kb("volume.size_kb"), avail_kb=kb("volume.avail_kb"),
        measure_error=one.get("volume.measure_error", ""),
        keep_exists=one.get("keep.exists") == "1", state_text=state_text,
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



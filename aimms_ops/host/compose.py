"""Docker and Compose on the host: what the stack's compose config says.

The host program's ``facts`` (``aimms_ops.host.events.facts``) carry the config as
compose printed it; the functions here are pure, tested with canned text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from aimms_ops.core.layout import compose_label


@dataclass(frozen=True)
class VolumeDecl:
    """How the compose file declares a volume."""

    key: str
    name: str
    external: bool


def compose_volumes(config_yaml: str) -> dict[str, VolumeDecl]:
    """The volumes of a normalized compose config (``compose config``), by real name."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, VolumeDecl] = {}
    vols = data.get("volumes") if isinstance(data, dict) else None
    if not isinstance(vols, dict):
        return out
    for key, decl in vols.items():
        decl = decl or {}
        external = decl.get("external", False)
        name = decl.get("name") or key
        if isinstance(external, dict):  # the older form: external: {name: x}
            name = external.get("name", name)
            external = True
        out[str(name)] = VolumeDecl(key=str(key), name=str(name), external=bool(external))
    return out


def compose_services_using(config_yaml: str, volume_key: str) -> list[str]:
    """The services of a compose config that mount the volume declared as ``volume_key``."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return []
    users = []
    for svc, sdecl in (data.get("services") or {}).items():
        for mount in (sdecl or {}).get("volumes") or []:
            source = mount.get("source") if isinstance(mount, dict) else str(mount).split(":")[0]
            if source == volume_key:
                users.append(str(svc))
    return users


def config_text(facts: Mapping[str, Any]) -> str:
    """The compose config text the facts carry, or ''."""
    config = facts.get("compose.config", "")
    return config if isinstance(config, str) else ""


#: Compose's project label (core.layout's, the one definition on both sides).
project_label = compose_label

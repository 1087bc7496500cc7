"""Docker and Compose on the host: facts about the stack, parsed from plain output.

Each remote read is a command (a packaged script) plus a pure parser of its
output, so the parsing is tested with canned text and the command runs for real.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import yaml

from aimms_ops.core.layout import compose_label


def parse_facts(text: str) -> dict[str, str]:
    """Parse ``key=value`` lines (the format of facts.sh); later keys win."""
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            facts[key] = value
    return facts


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


def decode_config(facts: dict[str, str]) -> str:
    """The compose config text carried base64-encoded in the facts, or ''."""
    raw = facts.get("compose.config_b64", "")
    try:
        return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""
    except (binascii.Error, ValueError):
        return ""


#: Compose's project label (core.layout's, the one definition on both sides).
project_label = compose_label

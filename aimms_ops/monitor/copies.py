"""The databases restores set aside, or left half-built, as status shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimms_ops.core import units
from aimms_ops.core.checks import Check, State
from aimms_ops.dump.beside import NEW_PREFIX as _NEW

#: What the name of a copy a restore is building starts with (one definition: beside.py).
NEW_PREFIX = _NEW.decode()


@dataclass(frozen=True)
class RestoreCopy:
    name: str
    size: int
    original: str | None  # the database it was, for one set aside
    stamp: str | None  # when it was set aside (YYYYmmdd_HHMMSS, UTC)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "original": self.original,
                "since": self.stamp}


def _text(raw: bytes) -> str:
    """A name as status shows it: a byte that is not UTF-8 as ``\\xe9``."""
    return raw.decode("utf-8", "backslashreplace")


def parse_copies(found: Any) -> list[RestoreCopy]:
    """The ``restore.copies`` of the host's status facts: ``name``, ``size`` and
    ``setting`` (the aimms_ops.replaced setting, or null) of each (names that are not
    UTF-8 with surrogate escapes)."""
    out = []
    for row in found if isinstance(found, list) else []:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or \
                not isinstance(row.get("size"), int):
            continue
        setting = row.get("setting")
        value = setting.partition("=")[2].split(" ") if isinstance(setting, str) else []
        original = stamp = None
        if len(value) == 4:
            try:
                original, stamp = _text(bytes.fromhex(value[0])), value[1]
            except ValueError:
                pass
        name = _text(row["name"].encode("utf-8", "surrogateescape"))
        out.append(RestoreCopy(name, row["size"], original, stamp))
    return out


def check_copies(copies: list[RestoreCopy]) -> Check | None:
    """What restores left in the cluster: copies set aside (their space), and half-built
    ones (a restore under way, or one that was killed: the next restore removes them)."""
    if not copies:
        return None
    aside = [c for c in copies if c.original is not None]
    half = [c for c in copies if c.name.startswith(NEW_PREFIX) and c.original is None]
    parts = []
    if aside:
        parts.append(f"{len(aside)} database(s) kept aside by restores "
                     f"({', '.join(sorted({c.original or '' for c in aside}))}; "
                     f"{units.size(sum(c.size for c in aside))})")
    if half:
        parts.append(f"{len(half)} half-built by a restore under way or killed "
                     f"({units.size(sum(c.size for c in half))})")
    fix = "fab drop-replaced removes those kept aside; fab restore-undo puts them back"
    if half:
        fix += "; the next restore removes half-built ones"
    return Check("restore copies", State.WARNING if half else State.OK, "; ".join(parts), fix)

"""The databases restores set aside, or left half-built, as status shows them."""

from __future__ import annotations

from dataclasses import dataclass

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


def _text(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "backslashreplace")


def parse_copies(text: str) -> list[RestoreCopy]:
    """``HEXNAME SIZE HEXSETTING`` lines (status-facts.sh); the setting ``-`` when none."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            name = _text(parts[0])
            setting = _text(parts[2]) if parts[2] != "-" else ""
        except ValueError:
            continue
        value = setting.partition("=")[2].split(" ")
        original = stamp = None
        if len(value) == 4:
            try:
                original, stamp = _text(value[0]), value[1]
            except ValueError:
                pass
        out.append(RestoreCopy(name, int(parts[1]), original, stamp))
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

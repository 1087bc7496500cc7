"""The units every task shows: sizes, ages and durations, each formatted in one place.

``size(n)`` is bytes in binary units (``1.9 MiB``), ``age(seconds)`` how long ago
something happened (``45m``, ``2h05m``, ``30h``, ``3d8h``), ``duration(seconds)`` how
long something took (``12.3 s``, ``4m05s``, ``1h02m``), and ``parse_duration`` reads what
``--max-age`` accepts (``26h``, ``90m``, ``2d``).

(``retention.py`` keeps its own ``Nd old``: it runs alone on the host, inlined into the
backup script, and speaks in the whole days of ``retention_days``.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd])\s*$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def size(n: float) -> str:
    """Bytes in binary units: ``177 B``, ``1.9 MiB``, ``41.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def age(seconds: float | None) -> str:
    """How long ago: ``45m``, ``2h05m`` (under 10 hours), ``30h`` (under 3 days), ``3d8h``.

    Whole hours up to 72 read against a ``--max-age`` given in hours (``30h old (max
    26h)``); a negative age (a clock ahead) is ``0m``, an unknown one (``None``) ``?``.
    """
    if seconds is None:
        return "?"
    secs = max(0, int(seconds))
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 10 * 3600:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    if secs < 72 * 3600:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d{(secs % 86400) // 3600}h"


def iso(when: datetime) -> str:
    """A moment as JSON gives it: UTC, ISO 8601, to the second, ``Z`` (``2026-01-01T02:00:00Z``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_of(when: datetime, now: datetime | None = None) -> str:
    """:func:`age` of a moment (an aware datetime): how long before ``now`` (default: now)."""
    return age(((now or datetime.now(UTC)) - when).total_seconds())


def duration(seconds: float) -> str:
    """How long something took: ``0.4 s``, ``12.3 s``, ``4m05s`` (from a minute), ``1h02m``."""
    secs = max(0.0, float(seconds))
    if round(secs, 1) < 60:
        return f"{secs:.1f} s"
    whole = int(secs)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def parse_duration(text: str) -> int | None:
    """``26h``, ``90m``, ``2d`` (or ``1.5d``) as whole seconds; ``None`` if it is not one.

    Only a positive number followed by ``m``, ``h`` or ``d`` is accepted; the caller
    says what was expected.
    """
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        return None
    return int(float(m.group(1)) * _SECONDS[m.group(2)])

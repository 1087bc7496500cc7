"""The backup log's RESULT and ping lines, parsed: what each run of backup and verify said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from aimms_ops import units
from aimms_ops.backup.names import EXTENSION_RE

_RESULT = re.compile(r"^(\S+) (backup|verify)\[(\d+)\] RESULT (ok|failed:)\s*(.*)$")


@dataclass(frozen=True)
class LoggedRun:
    """One ``RESULT`` line of the backup log: how a backup or verify run ended."""

    kind: str  # "backup" or "verify"
    pid: int
    at: datetime
    ok: bool
    name: str | None  # the backup made (backup) or verified (verify)
    reason: str | None  # why it failed
    detail: str  # the rest of the line

    def as_dict(self) -> dict[str, object]:
        return {"result": "ok" if self.ok else "failed", "at": units.iso(self.at),
                "name": self.name, "reason": self.reason, "detail": self.detail}


def _logged_at(stamp: str) -> datetime | None:
    """The UTC time a log line starts with (``now_utc`` of lib.sh), or None."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_results(text: str) -> list[LoggedRun]:
    """The RESULT lines of the log, oldest first (pure)."""
    runs = []
    for line in text.splitlines():
        m = _RESULT.match(line.strip())
        at = _logged_at(m.group(1)) if m else None
        if m is None or at is None:
            continue
        ok = m.group(4) == "ok"
        rest = m.group(5).strip()
        name = None
        reason = None
        if ok:
            name = rest.split(" ", 1)[0] or None
        else:
            reason = rest
            tail = re.search(rf" \((aimms_postgres_[^ ()]+{EXTENSION_RE})\)$", rest)
            if tail:
                name = tail.group(1)
                reason = rest[: tail.start()]
        runs.append(LoggedRun(m.group(2), int(m.group(3)), at, ok, name, reason, rest))
    return runs


_PING = re.compile(r"^(\S+) (backup|verify)\[(\d+)\] ping (\S+): (ok|failed: .*?)(?: \((\S+)\))?$")


@dataclass(frozen=True)
class LoggedPing:
    """One ``ping EVENT: ok|failed: WHY`` line of the log: how a ping to the monitor went."""

    kind: str  # "backup" or "verify"
    at: datetime
    event: str  # start, ok, exit:N, fail
    ok: bool
    error: str | None

    def as_dict(self) -> dict[str, object]:
        return {"job": self.kind, "at": units.iso(self.at), "event": self.event,
                "result": "ok" if self.ok else "failed", "error": self.error}


def parse_pings(text: str) -> list[LoggedPing]:
    """The ping lines of the log, oldest first (pure)."""
    out = []
    for line in text.splitlines():
        m = _PING.match(line.strip())
        at = _logged_at(m.group(1)) if m else None
        if m is None or at is None:
            continue
        ok = m.group(5) == "ok"
        out.append(LoggedPing(m.group(2), at, m.group(4), ok,
                              None if ok else m.group(5)[len("failed: "):]))
    return out


def last_run(runs: list[LoggedRun], kind: str) -> LoggedRun | None:
    for run in reversed(runs):
        if run.kind == kind:
            return run
    return None

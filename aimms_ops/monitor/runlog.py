"""The backup log's RESULT and ping lines, parsed: what each run of backup and verify said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from aimms_ops.core import units
from aimms_ops.core.names import EXTENSION_RE

_RESULT = re.compile(r"^(\S+) (backup|verify)\[(\d+)\] RESULT (ok|failed:)\s*(.*)$")
_START = re.compile(r"^(\S+) (backup|verify)\[(\d+)\] START ")
_DATABASES = re.compile(r"^\S+ backup\[(\d+)\] DATABASES ((?:[0-9a-f]+ ?)*)$")
_LINE = re.compile(r"^\S+ [\w-]+\[\d+\] ")


def text_of(line: str) -> str:
    """What a line of the host's log says, without its time and run (``TIME KIND[PID]
    TEXT``); a line that is not one (a program's own message on stderr) whole."""
    m = _LINE.match(line)
    return line[m.end():] if m else line


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
    databases: tuple[str, ...] | None = None  # what the run dumped (its DATABASES line)
    seq: int = 0  # where in the log: later lines have higher numbers
    died: bool = False  # a START with no RESULT and no live holder of the lock

    def as_dict(self) -> dict[str, object]:
        result = "died" if self.died else "ok" if self.ok else "failed"
        return {"result": result, "at": units.iso(self.at),
                "name": self.name, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class LoggedStart:
    """One ``START`` line: a run of backup or verify began."""

    kind: str
    pid: int
    at: datetime
    seq: int


def _logged_at(stamp: str) -> datetime | None:
    """The UTC time a log line starts with (``now_utc`` of lib.sh), or None."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_starts(text: str) -> list[LoggedStart]:
    """The START lines of the log, oldest first (pure)."""
    out = []
    for seq, line in enumerate(text.splitlines()):
        m = _START.match(line.strip())
        at = _logged_at(m.group(1)) if m else None
        if m is not None and at is not None:
            out.append(LoggedStart(m.group(2), int(m.group(3)), at, seq))
    return out


def parse_results(text: str) -> list[LoggedRun]:
    """The RESULT lines of the log, oldest first, each backup's with the databases its
    run logged (pure)."""
    runs = []
    dumped: dict[int, tuple[str, ...]] = {}
    for seq, line in enumerate(text.splitlines()):
        d = _DATABASES.match(line.strip())
        if d is not None:
            try:
                dumped[int(d.group(1))] = tuple(bytes.fromhex(h).decode("utf-8", "surrogateescape")
                                                for h in d.group(2).split())
            except ValueError:
                pass
            continue
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
        pid = int(m.group(3))
        dbs = dumped.pop(pid, None) if m.group(2) == "backup" else None
        runs.append(LoggedRun(m.group(2), pid, at, ok, name, reason, rest, dbs, seq))
    return runs


def died_run(runs: list[LoggedRun], starts: list[LoggedStart], kind: str,
             live: set[int]) -> LoggedRun | None:
    """The last run of ``kind`` when it started, logged no result, and no live process
    of that pid holds the lock (it was killed: SIGKILL, the host went down); else None.

    ``runs`` and ``starts`` must come from the same text (their ``seq`` are compared).
    """
    start = next((s for s in reversed(starts) if s.kind == kind), None)
    if start is None or start.pid in live:
        return None
    if any(r.kind == kind and r.seq > start.seq for r in runs):
        return None
    when = start.at.strftime("%Y-%m-%d %H:%M UTC")
    reason = (f"the run started at {when} ({kind}[{start.pid}]) logged no result and holds "
              "no lock: it was killed")
    return LoggedRun(kind, start.pid, start.at, False, None, reason, reason, seq=start.seq,
                     died=True)


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

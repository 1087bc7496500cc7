"""``fab info``: the whole state on one screen.

The backups on the host and on each offsite target (how many, how much, oldest to
newest), the pins, the last run and the next one (from the schedule, in the host's
time), the last deep verify, what you would lose now (the age of the newest good copy,
anywhere), the space left and what restores set aside, under the status's own summary
line. The facts are status's (one round trip) and the offsite listing; everything here
is a pure function of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aimms_ops.backup.listing import good_backups
from aimms_ops.core import units
from aimms_ops.core.names import BackupFile
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.hostfacts import HostFacts, gather
from aimms_ops.monitor.runlog import LoggedRun
from aimms_ops.monitor.schedule import next_run
from aimms_ops.monitor.status import StatusReport, judge
from aimms_ops.offsite.copies import TargetListing, list_copies
from aimms_ops.pitr.state import PitrState


@dataclass(frozen=True)
class Row:
    """One line of the screen: what, and what it is; ``data`` for --json."""

    what: str
    text: str
    data: object


@dataclass(frozen=True)
class Info:
    host: str
    report: StatusReport
    rows: tuple[Row, ...]

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "state": self.report.state.name,
                "exit_code": int(self.report.state), "summary": self.report.summary,
                **{_key(r.what): r.data for r in self.rows}}


def _key(what: str) -> str:
    return "_".join(what.replace("'", "").split()).lower()


def _when(at: datetime, now: datetime) -> str:
    """``2026-12-07 02:00 UTC (5h ago)``, or ``(in 19h)`` for a moment to come."""
    seconds = (now - at).total_seconds()
    rel = f"{units.age(seconds)} ago" if seconds >= 0 else f"in {units.age(-seconds)}"
    return f"{at:%Y-%m-%d %H:%M} UTC ({rel})"


def _span(items: list[tuple[datetime, int]], now: datetime) -> tuple[str, dict]:
    """How many, how much, oldest to newest."""
    if not items:
        return "none", {"count": 0, "bytes": 0, "oldest": None, "newest": None}
    times = sorted(t for t, _ in items)
    total = sum(size for _, size in items)
    text = (f"{len(items)}, {units.size(total)}, {times[0]:%Y-%m-%d %H:%M} → "
            f"{_when(times[-1], now)}")
    return text, {"count": len(items), "bytes": total, "oldest": units.iso(times[0]),
                  "newest": units.iso(times[-1])}


def _run(run: LoggedRun | None, now: datetime) -> tuple[str, object]:
    if run is None:
        return "none yet", None
    result = "died" if run.died else "ok" if run.ok else f"failed: {run.reason}"
    return f"{result}, {_when(run.at, now)}", run.as_dict()


def describe(hf: HostFacts, host: Host, report: StatusReport,
             listings: list[TargetListing], pitr: PitrState | None = None) -> Info:
    """The screen of ``host`` (pure)."""
    now = hf.now
    backups: list[BackupFile] = hf.backups or []
    rows: list[Row] = []
    regular = [(b.created, b.size) for b in backups if not b.safety]
    text, data = _span(regular, now)
    safety = [b for b in backups if b.safety]
    if safety:
        text += f"; and {len(safety)} safety copies"
    rows.append(Row("backups on the host", text if hf.backups is not None else
                    f"no backup dir ({host.backup_dir})", data))
    newest = [b.created for b in good_backups(backups)[:1]]
    for lst in listings:
        if not lst.ok:
            rows.append(Row(f"offsite {lst.target}", f"cannot list it: {lst.error}",
                            {"error": lst.error}))
            continue
        whole = [c for c in lst.copies if c.complete and not c.safety and c.created]
        text, data = _span([(c.created, c.plaintext_size) for c in whole if c.created], now)
        rows.append(Row(f"offsite {lst.target}", text, data))
        newest += [c.created for c in whole if c.created]
    pinned = [b for b in backups if b.pinned]
    rows.append(Row("pinned", ", ".join(
        b.name + (f" ({b.pin.reason})" if b.pin and b.pin.reason else "") for b in pinned)
        or "none", [b.name for b in pinned]))
    text, ran = _run(report.last_backup, now)
    rows.append(Row("last backup", text, ran))
    for what, schedule in (("next backup", host.cron_schedule),
                           ("next deep verify", host.verify_schedule)):
        if not schedule:
            continue
        at = next_run(schedule, now, hf.utc_offset)
        rows.append(Row(what, f"{_when(at, now)}, cron {schedule!r} in the host's time"
                        if at else f"cron {schedule!r}: never", units.iso(at) if at else None))
    text, ran = _run(report.last_verify, now)
    rows.append(Row("last deep verify", text, ran))
    if pitr is not None:
        rows += _pitr_rows(pitr)
    wal_age = pitr.wal_age() if pitr is not None and pitr.on and pitr.oldest else None
    if wal_age is not None:
        rows.append(Row("you would lose now", f"the writes of the last {units.duration(wal_age)}"
                        " and of the WAL segment being written (PITR; at most a minute "
                        "under writes)", int(wal_age)))
    elif newest:
        age = (now - max(newest)).total_seconds()
        rows.append(Row("you would lose now", f"up to {units.age(age)} of writes (the newest "
                        "good copy's age)", int(age)))
    else:
        rows.append(Row("you would lose now", "everything: no good copy anywhere", None))
    if report.disk is not None:
        d = report.disk
        left = f", about {d.days_left:.0f} days at the current growth" if d.days_left else ""
        rows.append(Row("space", f"{units.size(d.free)} free of {units.size(d.total)} in "
                        f"{host.backup_dir}{left}", d.as_dict()))
    aside = report.replaced
    rows.append(Row("set aside by restores", ", ".join(
        f"{c.name} ({units.size(c.size)})" for c in aside) or "none",
        [c.as_dict() for c in aside]))
    return Info(host.name, report, tuple(rows))


def _pitr_rows(pitr: PitrState) -> list[Row]:
    backups = [b for b in pitr.window.get("backups", []) if not b.get("error")]
    fulls = [b for b in backups if b.get("type") == "full"]
    window = (f"{units.iso(pitr.oldest)} → {units.iso(pitr.newest) if pitr.newest else '?'}"
              if pitr.oldest else "nothing yet (no PITR backup)")
    if not pitr.on:
        window = "archiving is not running (fab status: pitr)"
    size = sum(int(b.get("repo_size") or 0) for b in backups)
    return [Row("PITR window", window, pitr.as_dict()),
            Row("PITR backups", f"{len(backups)} ({len(fulls)} full), {units.size(size)} in "
                "the repository" if backups else "none", len(backups))]


def info(remote: HostRemote, max_age: int, max_age_text: str) -> Info:
    """Gather the facts (status's round trip, then the offsite listing, then PITR's) and
    describe them."""
    hf = gather(remote)
    report = judge(hf, remote.host, max_age, max_age_text)
    listings = list_copies(remote) if remote.host.offsite else []
    pitr = None
    if remote.host.pitr is not None:
        from aimms_ops.pitr import state as pitr_state

        pitr = pitr_state.read(remote)
        report.checks.append(pitr_state.check(pitr, remote.host))
    return describe(hf, remote.host, report, listings, pitr)

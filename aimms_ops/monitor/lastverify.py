"""The deep verify in ``fab status`` and ``fab doctor``: the last verify of the newest backup
of its time, against the verify's schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aimms_ops.backup.listing import good_backups
from aimms_ops.core import units
from aimms_ops.core.checks import Check, State
from aimms_ops.core.names import BackupFile, created_from_name
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.runlog import LoggedRun


def schedule_period(schedule: str | None) -> timedelta:
    """How often a cron schedule runs, roughly: hourly, daily, weekly or monthly."""
    if not schedule:
        return timedelta(days=7)
    if schedule.startswith("@"):
        return {"@hourly": timedelta(hours=1), "@daily": timedelta(days=1),
                "@midnight": timedelta(days=1), "@weekly": timedelta(days=7),
                "@monthly": timedelta(days=31)}.get(schedule, timedelta(days=7))
    _minute, hour, dom, month, dow = schedule.split()
    if month != "*" or dom != "*":
        return timedelta(days=31)
    if dow != "*":
        return timedelta(days=7)
    if hour == "*" or "/" in hour or "," in hour:
        return timedelta(hours=1)
    return timedelta(days=1)


def deciding_verify(runs: list[LoggedRun],
                    backups: list[BackupFile] | None = None) -> LoggedRun | None:
    """The last verify run of a backup that was the newest when it ran (the scheduled
    verify's, a ``fab verify --deep`` of latest); a verify of an older file (``fab verify
    --deep --file=OLD``, by hand) does not decide the state, whatever its result."""
    # When each backup was made, by its name (UTC), as the verify's own file is dated: a
    # file's mtime is when it was copied or touched, which says nothing of that.
    # The backups there are (the log's runs only when the dir could not be listed: they
    # may be of another dir, or gone).
    names = ([b.name for b in good_backups(backups)] if backups is not None else
             [r.name for r in runs if r.kind == "backup" and r.ok and r.name])
    made = [at for name in names if (at := created_from_name(name)) is not None]
    for run in reversed(runs):
        if run.kind != "verify":
            continue
        verified = created_from_name(run.name) if run.name else None
        if verified is None or not any(verified < at <= run.at for at in made):
            return run
    return None


def check_verify(runs: list[LoggedRun], host: Host, now: datetime, record: dict[str, str],
                 backups: list[BackupFile] | None = None) -> Check | None:
    """The result of the last deep verify of the newest backup of its time
    (:func:`deciding_verify`); None when no verify is scheduled."""
    if not host.verify_schedule:
        return None
    name = "deep verify"
    period = schedule_period(host.verify_schedule)
    run = deciding_verify(runs, backups)
    if run is None:
        since = record.get("verify_since", "")
        try:
            since_at = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            since_at = None
        if since_at is not None and now - since_at > period + timedelta(days=1):
            return Check(name, State.WARNING, "no deep verify logged since it was scheduled "
                         f"{units.age((now - since_at).total_seconds())} ago",
                         "is cron running? see fab doctor; run one: fab verify --deep")
        return Check(name, State.OK, "no deep verify has run yet "
                     f"(scheduled {host.verify_schedule})")
    age = (now - run.at).total_seconds()
    if not run.ok:
        return Check(name, State.CRITICAL, f"last deep verify failed {units.age(age)} ago: "
                     f"{run.reason}", "see fab logs; run fab verify --deep --file=latest")
    if age > (period + timedelta(days=1)).total_seconds():
        return Check(name, State.WARNING, f"last deep verify is {units.age(age)} old "
                     f"({run.name})", "is cron running? see fab doctor")
    return Check(name, State.OK, f"ok {units.age(age)} ago ({run.detail})")

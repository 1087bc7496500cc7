"""``fab restore --to=MOMENT``: the whole cluster brought back to a moment from the PITR
repository, into a new volume, checked, then swapped in (agent/pitr_restore.py).

The moment is checked against the window the repository covers before anything runs;
the plan names the one command sent, the volume the old data is kept in, and that the
sessions end.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.host.commands import Command, program
from aimms_ops.host.events import Event, Events
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.pitr.state import PitrState

_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                     r"(Z|[+-]\d{2}(:?\d{2})?)?$")
MOMENT_HINT = ('a moment like "2026-12-06 14:03:00" (UTC unless it ends in an offset '
               'such as +01:00 or Z), or latest')


def parse_moment(text: str) -> datetime | None:
    """``latest`` (None) or an aware datetime; an OpsError for anything else."""
    t = text.strip()
    if t == "latest":
        return None
    if not _MOMENT.match(t):
        raise OpsError(f"--to={t!r} is not a moment", f"give {MOMENT_HINT}", code=2)
    iso = t.replace(" ", "T").replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise OpsError(f"--to={t!r} is not a moment", f"give {MOMENT_HINT}", code=2) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Plan:
    host: str
    to: str
    keep: str
    rows: list[tuple[str, str]]
    command: Command

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "to": self.to, "keep": self.keep, "plan": dict(self.rows),
                "commands": [self.command.shown]}


def make_plan(host: Host, state: PitrState, moment: datetime | None, run_id: str,
              keep: str | None = None) -> Plan:
    """The plan of a restore to ``moment`` (None: the newest point), checked against the
    window (pure)."""
    if host.pitr is None:
        raise OpsError(f"{host.name} has no pitr: in the inventory: there is no repository "
                       "to restore to a moment from", "restore a dump instead: fab restore "
                       "--file=latest", code=2)
    if not state.on:
        raise OpsError(f"PITR is not running on {host.name}", "fab status says why; fab "
                       "install-backups turns it on", code=2)
    oldest, newest = state.oldest, state.newest
    if oldest is None:
        raise OpsError(f"the PITR repository on {host.name} has no backup yet",
                       "fab pitr-backup --type=full", code=2)
    window = f"{units.iso(oldest)} to {units.iso(newest) if newest else oldest}"
    if moment is not None and moment < oldest:
        raise OpsError(f"--to={units.iso(moment)} is before the oldest point the repository "
                       f"reaches ({window})", "pick a moment in that window", code=2)
    if moment is not None and newest is not None and moment > newest:
        raise OpsError(f"--to={units.iso(moment)} is after the newest archived WAL "
                       f"({window})", "wait a minute for the next segment, or use "
                       "--to=latest", code=2)
    to = "latest" if moment is None else moment.astimezone(UTC).strftime(
        "%Y-%m-%d %H:%M:%S.%f+00")
    vol = host.volumes.postgres
    keep = keep or f"{vol}.before-pitr-{run_id}"
    c = host.compose
    cmd = program(["pitr-restore", "--to", to, "--project", c.project, "--service",
                   c.postgres_service, "--superuser", host.postgres.superuser,
                   "--project-dir", c.project_dir, "--compose-file", c.file,
                   "--volume", vol, "--keep", keep, "--run-id", run_id,
                   "--backup-dir", host.backup_dir, "--log-file", host.log_file,
                   "--lock-timeout", str(host.lock_timeout), "--report"])
    rows = [("host", host.name),
            ("to", "the newest archived WAL" if moment is None else units.iso(moment)),
            ("window", window),
            ("how", "pgbackrest restore into a new volume, WAL replayed by a throwaway "
                    "postgres, every database read; the live cluster runs meanwhile"),
            ("swap", f"{c.postgres_service} stops (its sessions end), the live data is "
                     f"copied into volume {keep}, the recovered data into {vol}, "
                     f"{c.postgres_service} starts"),
            ("kept", f"volume {keep} (the data as it is now)"),
            ("disk", "about twice the cluster's size free in Docker's data root (checked "
                     "first; nothing is changed when it is not)"),
            ("command", cmd.shown)]
    return Plan(host.name, to, keep, rows, cmd)


def run(remote: HostRemote, plan: Plan, on_event: Callable[[Event], None]) -> Event:
    """Send the plan's command; its ``pitr-restored`` event."""
    events = Events(on_event)
    res = remote.run(plan.command.line, on_stdout=events.feed, what="pitr-restore")
    done = events.last("pitr-restored")
    if not res.ok or done is None:
        raise OpsError(f"the restore to {plan.to} failed on {remote.name}: "
                       f"{res.last_error_line()}", "see the log: fab logs")
    return done


def run_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")

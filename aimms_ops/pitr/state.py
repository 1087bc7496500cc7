"""What PITR looks like on a host: archiving, the window a restore can reach, the
backups in the repository; judged as one monitoring check (core.pitr.judge)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aimms_ops.core import pitr, units
from aimms_ops.core.checks import Check, State
from aimms_ops.core.errors import OpsError
from aimms_ops.host.events import parse
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host


@dataclass(frozen=True)
class PitrState:
    facts: dict[str, Any]

    @property
    def on(self) -> bool:
        """Archiving runs with aimms-ops' settings in a container that has pgbackrest."""
        f = self.facts
        return bool(f.get("pgbackrest") and f.get("archive_mode") == "on"
                    and f.get("archive_command") == dict(pitr.ARCHIVE_SETTINGS)["archive_command"])

    @property
    def window(self) -> dict[str, Any]:
        return self.facts.get("window") or {}

    @property
    def oldest(self) -> datetime | None:
        t = self.window.get("oldest")
        return datetime.fromtimestamp(t, UTC) if t else None

    @property
    def newest(self) -> datetime | None:
        t = pitr.newest_point(self.facts)
        return datetime.fromtimestamp(t, UTC) if t else None

    def wal_age(self) -> float | None:
        """Seconds since the newest archived WAL segment."""
        t, now = self.facts.get("last_archived_time"), self.facts.get("now")
        return None if t is None or now is None else max(0.0, now - t)

    def as_dict(self) -> dict[str, Any]:
        return {"on": self.on, "oldest": _iso(self.oldest), "newest": _iso(self.newest),
                "wal_age_seconds": self.wal_age(), "backups": self.window.get("backups", []),
                "failed_count": self.facts.get("failed_count"),
                "last_failed_wal": self.facts.get("last_failed_wal") or None}


def _iso(when: datetime | None) -> str | None:
    return units.iso(when) if when else None


def read(remote: HostRemote) -> PitrState:
    """The host's PITR facts (one call of the host program)."""
    host = remote.host
    res = remote.run_program("pitr-facts", host.compose.project, host.compose.postgres_service,
                             host.postgres.superuser, "--backup-dir", host.backup_dir)
    event = parse(res.stdout).last("pitr") if res.ok else None
    if event is None:
        raise OpsError(f"cannot read PITR's state on {remote.name}: {res.last_error_line()}")
    return PitrState(event)


def start_hint(host: Host, compose: str = "") -> str:
    """The command that starts postgres with the PITR override, with the host's compose."""
    c = host.compose
    return (f"cd {shlex.quote(c.project_dir)} && {compose or 'docker-compose'} -f "
            f"{shlex.quote(c.file)} -f {pitr.OVERRIDE_FILE} -p {shlex.quote(c.project)} "
            f"up -d {shlex.quote(c.postgres_service)}")


def check(state: PitrState, host: Host) -> Check:
    """The ``pitr`` check of ``fab status``."""
    f = state.facts
    if f.get("error"):
        return Check("pitr", State.CRITICAL, f["error"], "see: fab doctor")
    level, detail, fix = pitr.judge(f, offsite=host.pitr.offsite if host.pitr else None)
    fixes = {"start": start_hint(host, f.get("compose") or ""), "install": "fab install-backups",
             "repo": f"check the repository {host.pitr.repo if host.pitr else ''} "
                     "(space, owner) and the postgres log: docker logs <container>",
             "backup": "fab pitr-backup --type=full",
             "push": "see the log (fab logs) for rclone's error; the copy resumes by itself"}
    if level == "OK":
        age = state.wal_age()
        detail = (f"archiving; restorable from {units.iso(state.oldest) if state.oldest else '?'}"
                  f" to {units.iso(state.newest) if state.newest else '?'}"
                  + (f" (newest WAL {units.duration(age)} ago)" if age is not None else ""))
    return Check("pitr", State[level], detail, fixes.get(fix, ""))

"""The host's facts for status, doctor and info, gathered in one SSH round trip.

The host program's facts, list-backups and status-facts run in one start of it
(``batch``); their ``facts`` events make :class:`HostFacts`. The host's python3 version is
read by the shell first: a host where python3 cannot run the program says so
(:class:`NoHostProgram`) instead of facts that are all missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from aimms_ops.backup.install import parse_record
from aimms_ops.backup.listing import parse_listing
from aimms_ops.core import HOST_PYTHON
from aimms_ops.core.errors import OpsError
from aimms_ops.core.events import facts_line
from aimms_ops.core.names import BackupFile
from aimms_ops.host import bundle, shell
from aimms_ops.host.events import CutShort, Facts, facts_of, parse, text_of
from aimms_ops.host.remote import PYTHON3_FIX
from aimms_ops.inventory.connected import HostRemote, facts_args
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.copies import RestoreCopy, parse_copies
from aimms_ops.monitor.runlog import (
    LoggedPing,
    LoggedRun,
    LoggedStart,
    parse_pings,
    parse_results,
    parse_starts,
)
from aimms_ops.rebuild.state import STATE_FILE

#: The one fact read without the host program: which python3 the host has ("" none), as
#: the ``facts`` event of ``python`` (the version: digits and a dot, nothing to escape).
_VERSION = "@VERSION@"
PYTHON_VERSION = "echo " + shell.quote(facts_line("python", {"python3.version": _VERSION})) \
    .replace(_VERSION, "'\"$(python3 -c 'import sys; print(*sys.version_info[:2], "
             "sep=chr(46))' 2>/dev/null)\"'")


class NoHostProgram(OpsError):
    """The host's python3 cannot run the host program (``detail``: why, as a check says)."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"{detail} on {host}: aimms-ops' host program cannot run there",
                         PYTHON3_FIX)
        self.detail = detail


@dataclass(frozen=True)
class HostFacts:
    """Everything status and doctor judge, read in one SSH round trip."""

    facts: Facts  # the host program's facts
    extra: Facts  # its status-facts
    backups: list[BackupFile] | None  # None: the backup dir does not exist
    fingerprint: str = ""
    rebuild_state: str = ""  # the state file of an unfinished rebuild-volume, or ""

    @property
    def now(self) -> datetime:
        epoch = self.extra.get("now.epoch", "")
        if epoch.isdigit():
            return datetime.fromtimestamp(int(epoch), tz=UTC)
        return datetime.now(UTC)

    @property
    def utc_offset(self) -> int:
        """Seconds the host's clock (cron's) is ahead of UTC."""
        text = self.extra.get("now.utc_offset", "0")
        return int(text) if text.lstrip("-").isdigit() else 0

    @property
    def runs(self) -> list[LoggedRun]:
        return parse_results(text_of(self.extra, "log.results", shown=True))

    @property
    def starts(self) -> list[LoggedStart]:
        return parse_starts(text_of(self.extra, "log.results", shown=True))

    @property
    def backup_lock_holders(self) -> set[int]:
        """The pids holding the backup lock now (facts: notes of live processes)."""
        return {int(p) for p in self.facts.get("lock.backup.live", "").split() if p.isdigit()}

    @property
    def pings(self) -> list[LoggedPing]:
        return parse_pings(text_of(self.extra, "log.pings", shown=True))

    @property
    def log_tail(self) -> list[str]:
        return text_of(self.extra, "log.tail", shown=True).splitlines()

    @property
    def container_log(self) -> list[str]:
        return text_of(self.extra, "container.log", shown=True).splitlines()

    @property
    def crontab(self) -> str | None:
        """The login user's crontab, or None when crontab is not installed."""
        if self.extra.get("crontab.available") != "1":
            return None
        return text_of(self.extra, "crontab", shown=True)

    @property
    def restore_copies(self) -> list[RestoreCopy]:
        return parse_copies(self.extra.get("restore.copies"))

    @property
    def record(self) -> dict[str, str]:
        return parse_record(text_of(self.extra, "record", shown=True))


def parse_gathered(text: str, host: Host, fingerprint: str = "") -> HostFacts:
    """The facts in the output of :func:`gather_command` (pure)."""
    found = parse(text)
    python = facts_of(found, "python") or {}
    extra = facts_of(found, "status-facts")
    stack, backups = facts_of(found, "facts"), facts_of(found, "list-backups")
    if extra is None or stack is None or backups is None:
        why = python_problem(python.get("python3.version"))
        if why:
            raise NoHostProgram(host.name, why)
        cut = [of for of, got in (("facts", stack), ("list-backups", backups),
                                  ("status-facts", extra)) if got is None]
        raise CutShort(f"the host program's {' and '.join(cut)} on {host.name} ended before "
                       "its report (its output was cut short)",
                       "run it again; if it fails again, run fab check to see what fails "
                       "on the host")
    return HostFacts(stack, {**python, **extra}, parse_listing(backups, host.backup_dir),
                     fingerprint, text_of(extra, "rebuild.state", shown=True).strip())


def python_problem(seen: str | None) -> str:
    """Why python3 ``seen`` (its version; "" none) cannot run the host program, or ""."""
    if seen is None:
        return ""
    try:
        major, minor = (int(x) for x in seen.split("."))
    except ValueError:
        return "no python3"
    if (major, minor) < HOST_PYTHON:
        return f"python3 {seen} is too old"
    return ""


def gather_command(host: Host) -> str:
    """One remote command: the python3 version, then one start of the host program for
    its facts, list-backups and status-facts (with the state file of an unfinished
    rebuild)."""
    state = str(PurePosixPath(host.backup_dir) / STATE_FILE)
    status_args = ["status-facts", host.compose.project, host.compose.postgres_service,
                   host.backup_script, host.layout.config_file, host.layout.verify_script,
                   host.layout.install_record, host.log_file, host.postgres.superuser,
                   "--rebuild-state", state]
    batch = ["batch"]
    for args in (["facts", *facts_args(host)], ["list-backups", host.backup_dir], status_args):
        batch += [str(len(args)), *args]
    return "; ".join([PYTHON_VERSION, bundle.program_command(batch)])


def gather(remote: HostRemote) -> HostFacts:
    """Read every fact status and doctor need, in one SSH round trip."""
    res = remote.run(gather_command(remote.host), what="the status scripts")
    return parse_gathered(res.stdout, remote.host, remote.server_key_fingerprint)

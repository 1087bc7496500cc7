"""The host's facts for status and doctor, gathered in one SSH round trip.

The host program's facts, list-backups and status-facts run in one remote command; their
sections are parsed into :class:`HostFacts`. The host's python3 version is read by the
shell first: a host where python3 cannot run the program says so
(:class:`NoHostProgram`) instead of facts that are all missing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from aimms_ops.backup.install import parse_record
from aimms_ops.backup.listing import parse_listing
from aimms_ops.core import HOST_PYTHON
from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import BackupFile
from aimms_ops.host import bundle, shell
from aimms_ops.host.compose import parse_facts
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

_SECTIONS = ("python", "facts", "backups", "status", "rebuild")
#: The one fact read without the host program: which python3 the host has ("" none).
PYTHON_VERSION = ("echo \"python3.version=$(python3 -c 'import sys; "
                  "print(*sys.version_info[:2], sep=chr(46))' 2>/dev/null)\"")


class NoHostProgram(OpsError):
    """The host's python3 cannot run the host program (``detail``: why, as a check says)."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"{detail} on {host}: aimms-ops' host program cannot run there",
                         PYTHON3_FIX)
        self.detail = detail


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8", "replace") if value else ""
    except (binascii.Error, ValueError):
        return ""


@dataclass(frozen=True)
class HostFacts:
    """Everything status and doctor judge, read in one SSH round trip."""

    facts: dict[str, str]  # the host program's facts
    extra: dict[str, str]  # its status-facts
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
        return parse_results(_b64(self.extra.get("log.results_b64", "")))

    @property
    def starts(self) -> list[LoggedStart]:
        return parse_starts(_b64(self.extra.get("log.results_b64", "")))

    @property
    def backup_lock_holders(self) -> set[int]:
        """The pids holding the backup lock now (facts: notes of live processes)."""
        return {int(p) for p in self.facts.get("lock.backup.live", "").split() if p.isdigit()}

    @property
    def pings(self) -> list[LoggedPing]:
        return parse_pings(_b64(self.extra.get("log.pings_b64", "")))

    @property
    def log_tail(self) -> list[str]:
        return _b64(self.extra.get("log.tail_b64", "")).splitlines()

    @property
    def container_log(self) -> list[str]:
        return _b64(self.extra.get("container.log_b64", "")).splitlines()

    @property
    def crontab(self) -> str | None:
        """The login user's crontab, or None when crontab is not installed."""
        if self.extra.get("crontab.available") != "1":
            return None
        return _b64(self.extra.get("crontab.b64", ""))

    @property
    def restore_copies(self) -> list[RestoreCopy]:
        return parse_copies(_b64(self.extra.get("restore.copies_b64", "")))

    @property
    def record(self) -> dict[str, str]:
        return parse_record(_b64(self.extra.get("record.b64", "")))


def split_sections(text: str) -> dict[str, str]:
    """The output of :func:`gather_command`, cut at its ``@@NAME`` lines (pure)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@") and line[2:] in _SECTIONS:
            current = line[2:]
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) + "\n" for k, v in out.items()}


def parse_gathered(text: str, host: Host, fingerprint: str = "") -> HostFacts:
    """Parse the output of :func:`gather_command` (pure)."""
    sections = split_sections(text)
    extra = parse_facts(sections.get("python", "") + sections.get("status", ""))
    if "now.epoch" not in extra:
        why = python_problem(extra.get("python3.version"))
        if why:
            raise NoHostProgram(host.name, why)
        raise OpsError("the host program printed no status facts",
                       "run fab check to see what fails on the host")
    return HostFacts(parse_facts(sections.get("facts", "")), extra,
                     parse_listing(sections.get("backups", ""), host.backup_dir), fingerprint,
                     sections.get("rebuild", "").strip())


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
    """One remote command: the python3 version, then the host program's facts,
    list-backups and status-facts, and the state file of an unfinished rebuild."""
    status_args = [host.compose.project, host.compose.postgres_service, host.backup_script,
                   host.layout.config_file, host.layout.verify_script, host.layout.install_record,
                   host.log_file, host.postgres.superuser]
    parts = [shell.join(["echo", "@@python"]), PYTHON_VERSION]
    for section, args in (("facts", ["facts", *facts_args(host)]),
                          ("backups", ["list-backups", host.backup_dir]),
                          ("status", ["status-facts", *status_args])):
        parts.append(shell.join(["echo", f"@@{section}"]))
        parts.append(bundle.program_command(args))
    state = str(PurePosixPath(host.backup_dir) / STATE_FILE)
    parts += [shell.join(["echo", "@@rebuild"]),
              f"cat -- {shell.quote(state)} 2>/dev/null || true"]
    return "; ".join(parts)


def gather(remote: HostRemote) -> HostFacts:
    """Read every fact status and doctor need, in one SSH round trip."""
    res = remote.run(gather_command(remote.host), what="the status scripts")
    return parse_gathered(res.stdout, remote.host, remote.server_key_fingerprint)

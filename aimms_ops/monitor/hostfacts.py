"""The host's facts for status and doctor, gathered in one SSH round trip.

facts.sh, list-backups.sh and status-facts.sh run in one remote command; their
sections are parsed into :class:`HostFacts`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from aimms_ops.backup.install import parse_record
from aimms_ops.backup.listing import parse_listing
from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import BackupFile
from aimms_ops.host import bundle, shell
from aimms_ops.host.compose import parse_facts
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

_SECTIONS = ("facts", "backups", "status")


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8", "replace") if value else ""
    except (binascii.Error, ValueError):
        return ""


@dataclass(frozen=True)
class HostFacts:
    """Everything status and doctor judge, read in one SSH round trip."""

    facts: dict[str, str]  # facts.sh
    extra: dict[str, str]  # status-facts.sh
    backups: list[BackupFile] | None  # None: the backup dir does not exist
    fingerprint: str = ""

    @property
    def now(self) -> datetime:
        epoch = self.extra.get("now.epoch", "")
        if epoch.isdigit():
            return datetime.fromtimestamp(int(epoch), tz=UTC)
        return datetime.now(UTC)

    @property
    def runs(self) -> list[LoggedRun]:
        return parse_results(_b64(self.extra.get("log.results_b64", "")))

    @property
    def starts(self) -> list[LoggedStart]:
        return parse_starts(_b64(self.extra.get("log.results_b64", "")))

    @property
    def backup_lock_holders(self) -> set[int]:
        """The pids holding the backup lock now (facts.sh: notes of live processes)."""
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
    if "status" not in sections:
        raise OpsError("the status scripts printed nothing usable",
                       "run fab check to see what fails on the host")
    return HostFacts(parse_facts(sections.get("facts", "")), parse_facts(sections["status"]),
                     parse_listing(sections.get("backups", ""), host.backup_dir), fingerprint)


def gather_command(host: Host) -> str:
    """One remote command running facts.sh, list-backups.sh and status-facts.sh."""
    status_args = [host.compose.project, host.compose.postgres_service, host.backup_script,
                   host.layout.config_file, host.layout.verify_script, host.layout.install_record,
                   host.log_file, host.postgres.superuser]
    parts = []
    for section, script, args in (("facts", "facts.sh", facts_args(host)),
                                  ("backups", "list-backups.sh", [host.backup_dir]),
                                  ("status", "status-facts.sh", status_args)):
        parts.append(shell.join(["echo", f"@@{section}"]))
        parts.append(bundle.script_command(script, args))
    return "; ".join(parts)


def gather(remote: HostRemote) -> HostFacts:
    """Read every fact status and doctor need, in one SSH round trip."""
    res = remote.run(gather_command(remote.host), what="the status scripts")
    return parse_gathered(res.stdout, remote.host, remote.server_key_fingerprint)

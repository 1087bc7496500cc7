"""The records of a rebuild run on the host: its state file, its audit line, its names."""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.rebuild.facts import VolumeSpec

if TYPE_CHECKING:
    from aimms_ops.rebuild.plan import RebuildPlan

STEPS = ("stop", "keep", "rm", "create", "start", "wait", "restore", "verify")
STATE_FILE = ".rebuild-state"
DONE_SUFFIX = ".done"
AUDIT_FILE = "rebuild-audit.log"


def keep_name(volume: str, now: datetime) -> str:
    """The name of the volume that keeps the old data: ``<volume>_before_rebuild_<UTC>``."""
    return f"{volume}_before_rebuild_{now.astimezone(UTC):%Y%m%d_%H%M%S}"


def new_run_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def operator() -> str:
    """Who runs this: local user and host name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class RunState:
    """A run as its state file records it (``TIMESTAMP KEY=VALUE`` lines)."""

    run: str
    started: str = ""
    by: str = ""
    volume: str = ""
    volume_spec: VolumeSpec | None = None
    backup: str = ""
    backup_sha256: str = ""
    keep: str = ""
    begun: dict[str, str] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def last_step(self) -> str | None:
        """The last step recorded as done, or None."""
        done = [s for s in STEPS if s in self.done]
        return done[-1] if done else None

    @property
    def volume_deleted(self) -> bool:
        """True once the old volume is gone: from here on it is never deleted again."""
        return "rm" in self.done or any(s in self.begun for s in STEPS[STEPS.index("create"):])

    def describe(self) -> str:
        where = f"after step {self.last_step}" if self.last_step else "before its first step"
        failed = "".join(f"; {step} failed: {why.partition(' ')[2]}"
                         for step, why in self.failed.items())
        return (f"run {self.run} (started {self.started or '?'} by {self.by or '?'}, "
                f"stopped {where}{failed})")


def parse_state(text: str | None) -> RunState | None:
    """Parse a state file; None when there is none or it names no run (pure)."""
    if not text:
        return None
    one: dict[str, str] = {}
    stamps: dict[str, str] = {}
    begun: dict[str, str] = {}
    done: dict[str, str] = {}
    failed: dict[str, str] = {}
    for line in text.splitlines():
        ts, _, rest = line.partition(" ")
        key, sep, value = rest.partition("=")
        if not sep:
            continue
        if key in ("begin", "done", "failed"):
            step, _, detail = value.partition(" ")
            target = {"begin": begun, "done": done, "failed": failed}[key]
            target[step] = f"{ts} {detail}".strip()
            if key == "begin":
                failed.pop(step, None)
        else:
            one[key] = value
            stamps.setdefault(key, ts)
    if not one.get("run"):
        return None
    spec = VolumeSpec.from_json(one["volume_spec"]) if one.get("volume_spec") else None
    return RunState(run=one["run"], started=stamps.get("run", ""), by=one.get("by", ""),
                    volume=one.get("volume", ""), volume_spec=spec,
                    backup=one.get("backup", ""), backup_sha256=one.get("backup_sha256", ""),
                    keep=one.get("keep", ""), begun=begun, done=done, failed=failed)


def header_lines(plan: RebuildPlan, by: str) -> list[str]:
    """The first lines of a new run's state file."""
    spec = plan.volume_spec or VolumeSpec("local", {}, {})
    return [f"run={plan.run_id}", f"by={by}", f"host={plan.host}", f"volume={plan.volume}",
            f"volume_spec={spec.to_json()}", f"backup={plan.dump.source}",
            f"backup_location={plan.dump.location}", f"backup_sha256={plan.dump.sha256}",
            f"keep={plan.keep or ''}"]


def audit_line(fields: dict[str, object]) -> str:
    """``rebuild-volume key=value ...``; None values left out, others quoted as needed (pure)."""
    parts = ["rebuild-volume"]
    for k, v in fields.items():
        if v is None:
            continue
        text = str(v)
        if not re.fullmatch(r"[A-Za-z0-9_./:@+,-]+", text):
            text = shlex.quote(text)
        parts.append(f"{k}={text}")
    return " ".join(parts)


def backup_name(path: str, host: Host) -> str | None:
    """The backup name of ``path`` when it lies in the host's backup dir, else None."""
    p = PurePosixPath(path)
    return p.name if str(p.parent) == str(PurePosixPath(host.backup_dir)) else None


def read_state(remote: HostRemote) -> RunState | None:
    """The unfinished run recorded on the host, if any."""
    path = str(PurePosixPath(remote.host.backup_dir) / STATE_FILE)
    res = remote.run(["cat", "--", path], what="cat")
    return parse_state(res.stdout) if res.ok else None


def recorded_backup_name(remote: HostRemote) -> str | None:
    """The backup name of the unfinished run when its backup lies in the backup dir."""
    state = read_state(remote)
    if state is None or state.volume != remote.host.volumes.postgres:
        return None
    return backup_name(state.backup, remote.host)

"""Making a backup and applying retention on the host, with the packaged script.

The backup is made on the host by ``backup-postgres.sh`` (the same file cron runs);
this module builds its arguments, reads its events (``host.events``) and returns data
for the task layer to render.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from aimms_ops.backup.listing import list_remote
from aimms_ops.backup.settings import script_args, secret_input
from aimms_ops.core import units
from aimms_ops.core.errors import ConnectionLost, OpsError
from aimms_ops.core.layout import BACKUP_SCRIPT
from aimms_ops.core.names import validate_label, validate_name, validate_reason
from aimms_ops.host.events import Event, Events, parse
from aimms_ops.inventory.connected import HostRemote


@dataclass(frozen=True)
class BackupResult:
    """What one run of the backup script made."""

    name: str
    path: str
    size: int
    sha256: str
    seconds: int
    container: str
    pruned: tuple[str, ...] = ()
    suspicious: str | None = None  # "suspicious: size dropped from X to Y" (the guard)


@dataclass(frozen=True)
class PruneDecision:
    name: str
    action: str  # "keep" or "remove"
    reason: str
    rule: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "action": self.action, "rule": self.rule,
                "reason": self.reason}


def parse_prune(found: Events) -> list[PruneDecision]:
    """The ``prune`` events of a run, in order."""
    return [PruneDecision(str(e.get("name", "")), str(e.get("action", "")),
                          str(e.get("reason", "")), str(e.get("rule", "")))
            for e in found.of("prune")]


def run_backup(remote: HostRemote, label: str | None = None,
               on_log: Callable[[str], None] | None = None, *,
               safety: bool = False, allow_shrink: bool = False,
               on_event: Callable[[Event], None] | None = None) -> BackupResult:
    """Make a backup now with the packaged script (the one cron runs).

    ``safety``: a safety copy, labelled with one of SAFETY_LABELS, which the script
    pins for ``safety_pin_days``. ``allow_shrink`` accepts a backup that the size-drop
    guard would call suspicious. ``on_event``: each event as it comes (the dump's
    progress, a wait for a lock).
    """
    extra = ["--echo", "--report"]
    if allow_shrink:
        extra.append("--allow-shrink")
    if label:
        extra += ["--label", validate_label(label, safety=safety)]
    try:
        found = Events(on_event)
        res = remote.run_script(BACKUP_SCRIPT, *script_args(remote.host, *extra),
                                stdin=secret_input(remote.host), on_stderr=on_log,
                                on_stdout=found.feed)
    except ConnectionLost as exc:
        raise ConnectionLost(f"{exc.message} (the backup itself goes on on the host)",
                             "see its RESULT line with fab logs, and fab list-backups",
                             code=exc.code) from None
    if not res.ok:
        raise _failure(remote, res.rc, found, res.stderr)
    r = found.last("result") or {}
    try:
        return BackupResult(
            name=str(r["name"]), path=str(r["path"]), size=int(r["size"]),
            sha256=str(r["sha256"]), seconds=int(r["seconds"]),
            container=str(r.get("container") or ""),
            pruned=tuple(d.name for d in parse_prune(found) if d.action == "remove"),
            suspicious=r.get("suspicious") or None,
        )
    except (KeyError, TypeError, ValueError):
        raise OpsError(f"the backup script on {remote.name} reported no result",
                       "see fab logs") from None


_TARGET = re.compile(r" dumping into (aimms_postgres_\S+) with ")


def _failure(remote: HostRemote, rc: int, found: Events, stderr: str) -> OpsError:
    """What a backup run that did not end well leaves: the reason it gave (or that it
    died, killed), and what the host really published, looked up there: a run killed
    after it renamed its backup into place published a good backup all the same."""
    died = "RESULT failed:" not in stderr and (rc < 0 or rc >= 128)
    why = (f"the backup script died ({_signal_name(rc)}) before it logged a result" if died
           else _failure_reason(stderr))
    result = found.last("result")
    target = str(result["name"]) if result and result.get("name") else None
    if target is None:
        named = _TARGET.findall(stderr)
        target = named[-1] if named else None
    if target is None:
        return OpsError(f"backup on {remote.name} failed: {why}",
                        f"see fab logs; nothing was published in {remote.host.backup_dir}")
    try:
        published = next((b for b in list_remote(remote) if b.name == target and b.sha256),
                         None)
    except OpsError:
        return OpsError(f"backup on {remote.name} failed: {why}; whether {target} was "
                        "published could not be checked", "see fab list-backups and fab logs")
    if published is not None:
        return OpsError(f"backup on {remote.name} failed after it published {target} "
                        f"({units.size(published.size)}, with its .sha256): {why}",
                        "that backup is whole (checked before it was published); retention and "
                        "offsite copies of the run may not have run: see fab logs")
    return OpsError(f"backup on {remote.name} failed: {why}",
                    f"see fab logs; {target} was not published (the next run removes its "
                    "temporary file)")


def _signal_name(rc: int) -> str:
    if rc == 137:
        return "status 137: SIGKILL"
    if rc < 0:
        return "killed by a signal"
    return f"status {rc}"


def _failure_reason(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if "RESULT failed:" in line:
            return line.split("RESULT failed:", 1)[1].strip()
        if line.startswith(("backup failed:", "backup-postgres.sh:")):
            return line.split(":", 1)[1].strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def plan_digest(plan: list[PruneDecision]) -> str:
    """What the host checks before it removes anything: the decision it would apply must
    be the one shown (sha256 of its ``ACTION<TAB>NAME`` lines; orphans aside)."""
    text = "".join(f"{d.action}\t{d.name}\n" for d in plan if d.rule != "orphan")
    return hashlib.sha256(text.encode()).hexdigest()


def prune(remote: HostRemote, *, dry_run: bool,
          expect: list[PruneDecision] | None = None) -> list[PruneDecision]:
    """Apply (or with ``dry_run`` only plan) the retention policy on the host.

    With ``expect`` (the plan a dry run returned) the host removes nothing unless its
    decision is still exactly that one.
    """
    extra = ["--prune-only", "--report"] + (["--dry-run"] if dry_run else [])
    if expect is not None:
        extra += ["--expect-plan", plan_digest(expect)]
    res = remote.run_script(BACKUP_SCRIPT, *script_args(remote.host, *extra),
                            stdin=secret_input(remote.host))
    if not res.ok:
        raise OpsError(f"retention on {remote.name} failed: {_failure_reason(res.stderr)}",
                       "see fab logs")
    return parse_prune(parse(res.stdout))


def set_pin(remote: HostRemote, name: str, *, pinned: bool, by: str = "",
            reason: str = "", on_event: Callable[[Event], None] | None = None) -> bool:
    """Pin (or unpin) the backup ``name`` on the host; unpin returns whether it was pinned.
    ``on_event``: a wait for a running backup, as it begins."""
    validate_name(name)
    host = remote.host
    if pinned:
        args = ["pin", host.backup_dir, name, by, validate_reason(reason)]
    else:
        args = ["unpin", host.backup_dir, name]
    res = remote.run_program(*args, on_stdout=Events(on_event).feed)
    if res.rc == 66:
        raise OpsError(f"no backup named {name} on {remote.name}", "see fab list-backups")
    if not res.ok:
        raise OpsError(f"cannot {'pin' if pinned else 'unpin'} {name} on {remote.name}: "
                       f"{res.last_error_line()}")
    return pinned or "was=1" in res.stdout.splitlines()

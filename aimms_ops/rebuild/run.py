"""Running rebuild-volume's plan: the lock, the records on the host, the steps.

The executor sends the commands of the plan's steps, and nothing else but its own
records (the state file, the audit log) and the lock: each command's ``line`` as it
is, its output read as its ``reads`` says.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.core.lock import HELD
from aimms_ops.host import bundle, events
from aimms_ops.host.commands import Command
from aimms_ops.host.remote import Progress, Remote, RunResult, bounded
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.rebuild.plan import RebuildPlan, Step
from aimms_ops.rebuild.state import DONE_SUFFIX, audit_line, header_lines, operator
from aimms_ops.restore import TableRows, run_stream
from aimms_ops.restore.execute import table_rows

#: Rows counted in one table of the rebuilt cluster.
TableCount = TableRows


@contextmanager
def locked(remote: HostRemote) -> Iterator[None]:
    """Hold the host's cluster lock (exclusive) for the block: nothing else touches it."""
    owner = f"rebuild-volume by {operator()} pid {os.getpid()}"
    cmd = bundle.program_command(["hold", remote.host.backup_dir, owner])
    with remote.hold(cmd, ready=HELD, what="the rebuild lock") as failed:
        if failed is not None:
            facts = events.facts_of(events.parse(failed.stdout), "hold") or {}
            holder = facts.get("holder") or "unknown"
            if facts.get("busy") == "rebuild":
                raise OpsError(f"another rebuild-volume is running on {remote.name} "
                               f"({holder})", "wait for it to end; nothing was changed")
            if facts.get("busy") == "backup":
                raise OpsError(f"a backup is running on {remote.name} ({holder})",
                               "wait for it to end (fab logs), then run again; nothing was "
                               "changed")
            if facts.get("busy") in ("restore", "verify"):
                raise OpsError(f"a {facts['busy']} is running on {remote.name} ({holder})",
                               "wait for it to end, then run again; nothing was changed")
            raise OpsError(f"cannot take the rebuild lock on {remote.name}: "
                           f"{failed.last_error_line()}")
        yield


# --- running it ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    name: str
    action: str  # "ran", "done before", "skipped"
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class RebuildReport:
    plan: RebuildPlan
    steps: tuple[StepResult, ...]
    databases: tuple[str, ...]
    tables: tuple[TableCount, ...]
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.plan.host, "run": self.plan.run_id, "result": "ok",
            "volume": self.plan.volume, "kept": self.plan.keep,
            "backup": self.plan.dump.source, "seconds": round(self.seconds, 1),
            "steps": [{"step": s.name, "result": s.action, "seconds": round(s.seconds, 1),
                       "detail": s.detail} for s in self.steps],
            "databases": list(self.databases),
            "tables": [asdict(t) for t in self.tables],
            "get_back": list(self.plan.get_back),
        }


class _Record:
    """Appends to the state file and the audit log on the host."""

    def __init__(self, remote: Remote, plan: RebuildPlan) -> None:
        self.remote = remote
        self.plan = plan

    def append(self, *lines: str) -> None:
        res = self.remote.run_program("rebuild-record", "append", self.plan.state_file, *lines)
        if not res.ok:
            raise OpsError(f"cannot write the rebuild state {self.plan.state_file} on "
                           f"{self.remote.name}: {res.last_error_line()}")

    def close(self, dest: str) -> None:
        self.remote.run_program("rebuild-record", "close", self.plan.state_file, dest)

    def audit(self, line: str) -> bool:
        try:
            res = self.remote.run_program("rebuild-record", "audit", self.plan.audit_file, line)
        except OpsError:
            return False
        return res.ok


StepEvent = Callable[[Step, str, float, str], None]
RestoreProgress = Callable[[int], AbstractContextManager[Progress]]


@dataclass
class _Found:
    """What the commands of this run found: the databases present, the rows counted."""

    databases: tuple[str, ...] = ()
    tables: list[TableCount] = field(default_factory=list)


def execute(remote: HostRemote, plan: RebuildPlan, *,
            on_step: StepEvent | None = None,
            restore_progress: RestoreProgress | None = None) -> RebuildReport:
    """Run the plan's steps in order, recording each on the host before and after.

    ``on_step(step, event, seconds, detail)`` is told "start", "ran", "done before" and
    "skipped".
    """
    rec = _Record(remote, plan)
    by = operator()
    started = time.monotonic()
    results: list[StepResult] = []
    found = _Found()
    where = "the start"  # the step running, for the records of a failure
    current: Step | None = None

    def tell(step: Step, event: str, seconds: float = 0.0, detail: str = "") -> None:
        if on_step is not None:
            on_step(step, event, seconds, detail)

    def audit(result: str, **extra: object) -> None:
        rec.audit(audit_line({
            "run": plan.run_id, "result": result, "host": plan.host, "volume": plan.volume,
            "backup": plan.dump.source, "sha256": plan.dump.sha256[:16], "kept": plan.keep,
            "by": by, "continued": "yes" if plan.resumed else None,
            "seconds": round(time.monotonic() - started, 1), **extra}))

    try:
        if plan.resumed is None and plan.state_present:
            aside = plan.set_aside.run if plan.set_aside else "unreadable"
            rec.close(f"{plan.state_file}.abandoned-{aside}")
        if plan.resumed is None:
            rec.append(*header_lines(plan, by))
        else:
            rec.append(f"resumed_by={by}")
        for step in plan.steps:
            where, current = step.name, step
            if step.action != "run":
                event = "done before" if step.action == "done" else "skipped"
                results.append(StepResult(step.name, event, 0.0, step.note))
                tell(step, event, 0.0, step.note)
                continue
            tell(step, "start")
            rec.append(f"begin={step.name}")
            t0 = time.monotonic()
            detail = ""
            for cmd in step.commands:
                detail = _send(remote, plan, step, cmd, found, restore_progress) or detail
            seconds = time.monotonic() - t0
            rec.append(f"done={step.name} seconds={seconds:.1f}")
            results.append(StepResult(step.name, "ran", seconds, detail))
            tell(step, "ran", seconds, detail)
        where, current = "the end", None
        rec.append("finished=ok")
        rec.close(plan.state_file + DONE_SUFFIX)
        audit("ok", steps=",".join(r.name for r in results if r.action == "ran"))
    except KeyboardInterrupt:
        bounded(lambda: audit("interrupted", at=where), 10)
        raise
    except OpsError as exc:
        try:
            rec.append(f"failed={where} {exc.message}")
        except OpsError:
            pass
        audit("failed", at=where, reason=exc.message)
        hint = _failure_hint(plan, current)
        if current is not None and current.keeps_old_volume:
            # The old volume is still there: do not leave the stack down for nothing.
            hint = f"{_start_again(remote, plan)}; {hint}"
        raise OpsError(f"{where} failed: {exc.message}", hint, exc.code) from None
    return RebuildReport(plan, tuple(results), found.databases, tuple(found.tables),
                         time.monotonic() - started)


def _failure_hint(plan: RebuildPlan, step: Step | None) -> str:
    if step is None:
        back = ""
    elif step.keeps_old_volume:
        back = f"the volume {plan.volume} was not deleted; "
    else:
        back = f"the old volume is gone{f' (its data is in {plan.keep})' if plan.keep else ''}; "
    return (f"{back}fix the cause, then run the same command again: it continues where it "
            f"stopped (state in {plan.state_file})")


def _start_again(remote: Remote, plan: RebuildPlan) -> str:
    """Start the stack on its old volume after a failure before the volume was deleted."""
    for cmd in plan.step("start").commands:
        try:
            res = remote.run(cmd.line, what="compose up")
        except OpsError as exc:
            return f"the stack could not be started again: {exc.message}"
        if not res.ok:
            return f"the stack could not be started again: {res.last_error_line()}"
    return "the stack was started again on the old volume"


#: What the failure of a command that reads postgres means, by what it reads.
_CANNOT = {"idle": "cannot look for other sessions", "databases": "cannot list the databases",
           "counts": "cannot count the rows of {about}"}


def _send(remote: HostRemote, plan: RebuildPlan, step: Step, cmd: Command, found: _Found,
          progress: RestoreProgress | None) -> str | None:
    """Send one command of the plan and read its output; a detail for the step, or None."""
    if cmd.reads == "restore":
        ctx = progress(plan.dump.size) if progress is not None else nullcontext(None)
        with ctx as advance:
            result = run_stream(
                remote, cmd, plan.dump.size, progress=advance, on_stderr=None,
                hint="the new volume holds what the restore made of it",
                cut_hint="the new volume holds what the restore made of it")
        return (f"{', '.join(plan.dump.databases)} restored in "
                f"{units.duration(result.seconds)}")
    res = remote.run(cmd.line, what=f"step {step.name}")
    if cmd.reads in ("estimates", "analyze"):
        return None  # the rows and ANALYZE after the restore; the verify counts them exactly
    if cmd.reads == "volume-rm" and not res.ok and "no such volume" in res.stderr.lower():
        # Deleted by the interrupted run just before it could record it.
        return f"{plan.volume} was already deleted"
    if not res.ok:
        if cmd.reads in _CANNOT:
            raise OpsError(f"{_CANNOT[cmd.reads].format(about=cmd.about)}: "
                           f"{res.last_error_line()}")
        raise OpsError(f"{cmd.short}: {error_line(res.stderr) or res.last_error_line()}")
    return _read(cmd, res, plan, found, remote.host.postgres.superuser)


def _read(cmd: Command, res: RunResult, plan: RebuildPlan, found: _Found,
          superuser: str) -> str | None:
    """What the output of a command that succeeded says (pure but for ``found``)."""
    if cmd.reads == "wait":
        said = events.facts_of(events.parse(res.stdout), "wait-postgres") or {}
        return f"container {str(said.get('container') or '?')[:12]}"
    if cmd.reads == "copy":
        return _check_copy(res.stdout, plan)
    if cmd.reads == "idle" and res.stdout.strip() not in ("", "0"):
        raise OpsError("another restore is still running in the cluster (a psql session of "
                       f"{superuser}), probably the interrupted run's: wait for it to end")
    if cmd.reads == "databases":
        present = {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}
        missing = [d for d in plan.dump.databases if d not in present]
        if missing:
            raise OpsError("databases of the dump missing after the restore: "
                           f"{', '.join(missing)}")
        found.databases = plan.dump.databases
    if cmd.reads == "counts":
        found.tables += [TableCount(cmd.about, t, n) for t, n in parse_counts(res.stdout)]
        return f"{len(found.databases)} databases, {len(found.tables)} tables counted"
    return None


def error_line(stderr: str) -> str:
    """The line of docker's (or compose's) stderr that says what went wrong (pure)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"^(See|Run) '.*--help'", ln)]
    for ln in reversed(lines):
        if re.search(r"error|Error|ERROR|denied|not found|No such", ln):
            return ln
    return lines[-1] if lines else ""


def _check_copy(stdout: str, plan: RebuildPlan) -> str:
    """Compare the file counts and bytes of both sides of the copy."""
    sides = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            sides[parts[0]] = (int(parts[1]), int(parts[2]))
    src, dst = sides.get("/from"), sides.get("/to")
    if src is None or dst is None:
        said = " | ".join(ln.strip() for ln in stdout.splitlines() if ln.strip())[-200:]
        raise OpsError(f"the check of the copy in {plan.keep} printed no file count and "
                       f"size for both sides: {said or 'nothing'!r}")
    if src != dst:
        raise OpsError(f"the copy in {plan.keep} does not match {plan.volume}: "
                       f"{src[0]} files, {src[1]} bytes against {dst[0]} files, {dst[1]} "
                       "bytes")
    return f"{src[0]} files, {units.size(src[1])} copied into {plan.keep}"


def parse_counts(text: str) -> list[tuple[str, int]]:
    """``{"table": NAME, "rows": N}`` lines into pairs (pure; other lines are skipped)."""
    return [row for _, row in table_rows(text) if row is not None]

"""``fab rebuild-volume``: recreate the postgres volume from a backup, or drop a kept one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from aimms_ops.cli.base import confirm, connect, ops_task
from aimms_ops.cli.restore import named_dump
from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import DUMP_FILE_HINT
from aimms_ops.output import console as output


@ops_task(help={
    "file": DUMP_FILE_HINT,
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "dry_run": "print the checks and every command in order, change nothing",
    "no_keep_old": "do not keep a copy of the old volume's data (not recommended)",
    "new_run": "set aside an unfinished rebuild recorded on the host and start over",
    "json": "print the plan (with --dry-run) or the report as JSON",
    "drop_kept": "remove NAME, a volume kept by an earlier rebuild (see fab volumes), "
                 "after typing its name; nothing is rebuilt",
    "from_": "rebuild from the copy on this offsite target (decrypted here, verified first)",
    "identity": "the age identity file that decrypts offsite copies (with --from)",
})
def rebuild_volume(c, file=None, yes=False, dry_run=False, no_keep_old=False, new_run=False,
                   json=False, drop_kept=None, from_=None, identity=None):
    """Recreate the postgres volume from a backup: stop, keep, delete, create, start, restore.

    Everything that can be checked is checked before the stack is stopped (the backup,
    the compose file and service, the volume declared external, the disk for the copy
    of the old data). Each step is recorded on the host: a run cut short (Ctrl-C, a
    dropped connection) is continued by running the same command again, and never
    deletes the volume a second time. The Redis volume is never touched.
    """
    from aimms_ops import rebuild as rb

    if drop_kept is not None:
        if file:
            raise OpsError("--drop-kept and --file do not go together",
                           "remove the kept volume, then rebuild, in two runs")
        _drop_kept(c, drop_kept, yes=yes, dry_run=dry_run)
        return
    if not file:
        raise OpsError("--file is required", "e.g. fab rebuild-volume --file=latest")
    with connect(c) as remote:
        def unfinished() -> str | None:
            recorded = None if new_run else rb.recorded_backup_name(remote)
            if recorded:
                output.note(f"latest: continuing the unfinished rebuild with its backup "
                            f"{recorded}")
            return recorded

        dump = named_dump(remote, file, from_, identity, latest=unfinished)
        if dry_run:
            plan = rb.prepare(remote, dump, keep_old=not no_keep_old, new_run=new_run)
            _show_rebuild_plan(plan, json)
            output.note("dry run: nothing was changed" + (
                "" if plan.resumed else "; a run started later names its own run id and "
                "kept volume, in those commands"))
            return
        with rb.locked(remote):
            plan = rb.prepare(remote, dump, keep_old=not no_keep_old, new_run=new_run)
            if not json:
                _show_rebuild_plan(plan, False)
            what = ("continue the rebuild of" if plan.resumed else "delete and recreate")
            confirm(plan.volume, f"{what} volume {plan.volume} on {plan.host}", yes)
            try:
                report = rb.execute(
                    remote, plan, on_step=_rebuild_event(len(plan.steps)),
                    restore_progress=lambda total: output.transfer_progress("restoring",
                                                                            total))
            except KeyboardInterrupt:
                raise OpsError("interrupted: the stack may be down",
                               f"run the same command again: it continues where it stopped "
                               f"(state in {plan.state_file})", code=130) from None
    if json:
        output.print_json(report.as_dict())
        return
    _show_rebuild_report(report)


def _drop_kept(c: Any, name: str, *, yes: bool, dry_run: bool) -> None:
    """``rebuild-volume --drop-kept=NAME``: remove one volume kept by an earlier rebuild."""
    from aimms_ops.monitor import volumes as vol

    if not isinstance(name, str) or not name:
        raise OpsError("--drop-kept needs the name of a kept volume", "see fab volumes")
    with connect(c) as remote:
        kept = vol.check_droppable(name, vol.volumes(remote), remote.host)
        output.table(["remove kept volume", ""],
                     [["host", remote.name], ["volume", kept.name],
                      ["kept from", kept.kept_from or "?"], ["size", kept.size or "?"],
                      ["age", units.age(kept.age_seconds)],
                      ["command", f"docker volume rm {kept.name}"]],
                     title=f"the old data in {kept.name} is deleted for good")
        if dry_run:
            output.note("dry run: nothing was changed")
            return
        confirm(kept.name, f"delete volume {kept.name} on {remote.name}", yes)
        vol.drop_kept(remote, kept)
    output.note(f"removed {kept.name} ({kept.size or '?'}) from {remote.name}")


def _rebuild_event(total: int) -> Callable:
    from aimms_ops import rebuild as rb

    def on_step(step: Any, event: str, seconds: float, detail: str) -> None:
        n = rb.STEPS.index(step.name) + 1
        if event == "start":
            output.note(f"[{n}/{total}] {step.name}: {step.title} ...")
        elif event == "ran":
            output.note(f"[{n}/{total}] {step.name}: done in {units.duration(seconds)}"
                        + (f" ({detail})" if detail else ""))
        else:
            output.note(f"[{n}/{total}] {step.name}: {event}: {detail}")

    return on_step


def _show_rebuild_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        output.print_json(plan.as_dict())
        return
    head = [
        ["host", plan.host],
        ["volume", f"{plan.volume} (deleted and created again, empty)"],
        ["backup", f"{plan.dump.source} ({plan.dump.location}, {units.size(plan.dump.size)})"],
        ["old data kept in", plan.keep or "NOT KEPT (--no-keep-old)"],
        ["services", ", ".join(plan.services) + " (stopped and started again)"],
        ["untouched", f"{plan.redis_volume} (Redis volume)"],
        ["run", plan.run_id + (" (continued)" if plan.resumed else "")],
        ["state file", plan.state_file],
        ["audit log", plan.audit_file],
    ]
    if plan.set_aside is not None:
        head.append(["set aside", f"unfinished {plan.set_aside.describe()}"])
    output.table(["rebuild-volume", ""], head, title=f"rebuild-volume plan for {plan.host}")
    output.table(["check", "result"], [list(c) for c in plan.checks],
                 title="preflight (nothing is stopped before all of these pass)")
    # Plain lines, one command per line, so that they can be read and copied as they are.
    print("steps, in order, with the commands they send (--json: each exactly as sent):")
    for i, step in enumerate(plan.steps, 1):
        action = {"run": "RUN ", "done": "done", "skip": "skip"}[step.action]
        note = f"  [{step.note}]" if step.note else ""
        print(f"{i}. {action} {step.name}: {step.title}{note}")
        for cmd in step.commands:
            print(f"     $ {cmd.shown}")
    sys.stdout.flush()


def _show_rebuild_report(report: Any) -> None:
    plan = report.plan
    output.table(["step", "result", "seconds", "detail"],
                 [[s.name, s.action, f"{s.seconds:.1f}", s.detail] for s in report.steps],
                 title=f"rebuilt {plan.volume} on {plan.host} from {plan.dump.source} "
                 f"in {units.duration(report.seconds)} (run {plan.run_id})")
    output.table(["database", "table", "rows"],
                 [[t.database, t.table, t.rows] for t in report.tables],
                 title=f"databases present: {', '.join(report.databases)}")
    if plan.keep:
        print(f"The old data is kept in the volume {plan.keep}. To get it back:")
        for line in plan.get_back:
            print(f"  {line}")
    else:
        print("The old data was not kept (--no-keep-old).")

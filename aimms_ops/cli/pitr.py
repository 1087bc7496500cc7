"""PITR's tasks: ``pitr-backup``, ``pitr-off``; turning it on is part of
``install-backups`` (:func:`install`), the restore to a moment is ``restore --to``."""

from __future__ import annotations

from typing import Any

from aimms_ops.cli.base import confirm, connect, ops_task
from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.output import console as output


def install(remote: Any, *, yes: bool, dry_run: bool, json: bool) -> dict[str, Any] | None:
    """The PITR part of install-backups: its plan, the consent, the run."""
    from aimms_ops.pitr import setup, state

    plan = setup.enable_plan(remote.host, state.read(remote))
    if plan is None:
        if not json:
            output.note(f"{remote.name}: PITR is on; nothing to change")
        return {"enable": False, "steps": [], "commands": []}
    if not json:
        output.table(["PITR step", "what"], plan.steps,
                     title=f"PITR on {remote.name}" + (" (dry run)" if dry_run else ""))
        for cmd in plan.commands:
            output.note(f"command: {cmd.shown}")
    if dry_run:
        return plan.as_dict()
    confirm(remote.name, f"restart postgres on {remote.name} with PITR", yes)
    with output.live() as shown:
        setup.run(remote, plan, shown)
    if not json:
        output.note(f"{remote.name}: PITR is on")
    return plan.as_dict()


@ops_task(help={
    "type": "full, diff (default: differential, against the last full) or incr",
    "json": "print the backup as JSON {host, type, label, size, repo_size, seconds}",
})
def pitr_backup(c, type="diff", json=False):
    """Take a PITR backup now (pgBackRest), as the cron jobs do.

    Under the same locks as the dumps, logged and pinged like them.
    """
    from aimms_ops.host.events import Events
    from aimms_ops.pitr import setup

    if type not in ("full", "diff", "incr"):
        raise OpsError(f"--type={type} is not a PITR backup type", "use full, diff or incr",
                       code=2)
    with connect(c) as remote:
        if remote.host.pitr is None:
            raise OpsError(f"{remote.name} has no pitr: in the inventory",
                           "add pitr: {} to the host, then fab install-backups", code=2)
        cmd = setup.backup_command(remote.host, type)
        with output.live() as shown:
            events = Events(shown)
            res = remote.run(cmd.line, on_stdout=events.feed, what="pitr-backup")
        done = events.last("pitr-result")
        if not res.ok or done is None:
            raise OpsError(f"the PITR backup failed on {remote.name}: "
                           f"{res.last_error_line()}", "see the log: fab logs")
        if json:
            output.print_json({"host": remote.name, **{k: v for k, v in done.items()
                                                        if k != "event"}})
            return
        output.note(f"{remote.name}: PITR {type} backup {done.get('label')} "
                    f"({units.size(done.get('size') or 0)}, "
                    f"{units.size(done.get('repo_size') or 0)} in the repository) in "
                    f"{units.duration(done.get('seconds') or 0)}")


@ops_task(help={
    "dry_run": "print the plan, change nothing",
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "json": "print the plan as JSON {host, dry_run, enable, steps, commands}",
})
def pitr_off(c, yes=False, dry_run=False, json=False):
    """Turn PITR off: the archive settings reset, postgres restarted without the override.

    The repository and its passphrase are kept (a restore may still need them); the
    PITR cron lines go. Remove pitr: from the inventory too, or install-backups turns it
    on again.
    """
    from aimms_ops.backup import install as backup_install
    from aimms_ops.pitr import setup, state

    with connect(c) as remote:
        plan = setup.disable_plan(remote.host, state.read(remote))
        if json:
            output.print_json({"host": remote.name, "dry_run": dry_run, **plan.as_dict()})
        else:
            output.table(["step", "what"], plan.steps, title=f"PITR off on {remote.name}"
                         + (" (dry run)" if dry_run else ""))
            for cmd in plan.commands:
                output.note(f"command: {cmd.shown}")
        if dry_run or not plan.commands:
            if dry_run:
                output.note("dry run: nothing was changed")
            return
        confirm(remote.name, f"restart postgres on {remote.name} without PITR", yes)
        with output.live() as shown:
            setup.run(remote, plan, shown)
        backup_install.remove_cron(remote, ("pitr-full", "pitr-diff", "pitr-push",
                                            "drill-pitr"))
        output.note(f"{remote.name}: PITR is off; the repository is kept")

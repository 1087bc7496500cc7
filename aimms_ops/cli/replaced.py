"""``fab restore-undo`` and ``fab drop-replaced``: the databases a restore set aside."""

from __future__ import annotations

from aimms_ops.cli.base import confirm, connect, ops_task
from aimms_ops.core.errors import OpsError, key_path
from aimms_ops.output import console as output


@ops_task(help={
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "dry_run": "print what would be swapped back, change nothing",
})
def restore_undo(c, yes=False, dry_run=False):
    """Put back the databases the last restore replaced (kept aside by it); the restored
    ones are dropped. One transaction; the sessions on them are ended first."""
    from aimms_ops.restore import replaced as rp

    with connect(c) as remote:
        aside = rp.set_aside(remote)
        if not aside:
            raise OpsError(f"no restore on {remote.name} has set a database aside",
                           "nothing to undo (fab status lists what is kept)")
        last = [a for a in aside if a.stamp == aside[0].stamp]
        output.table(["undo the restore of " + last[0].when, ""],
                     [[key_path("", a.original), f"{a.name} takes its place again; the "
                       "restored one is dropped"] for a in last])
        if dry_run:
            output.note("dry run: nothing was changed")
            return
        confirm(remote.name, f"undo the last restore on {remote.name}", yes)
        for line in rp.undo(remote):
            output.note(line)


@ops_task(help={
    "name": "drop only this database set aside (its aimms_ops_old_ name); default: all",
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "dry_run": "print what would be dropped, change nothing",
})
def drop_replaced(c, name=None, yes=False, dry_run=False):
    """Drop the databases restores replaced and kept aside (fab status lists them)."""
    from aimms_ops.core import units
    from aimms_ops.restore import replaced as rp

    with connect(c) as remote:
        aside = rp.set_aside(remote)
        if name is not None:
            aside = [a for a in aside if a.name == name]
            if not aside:
                raise OpsError(f"no database set aside is named {name!r}",
                               "fab status lists them (names start aimms_ops_old_)")
        if not aside:
            output.note(f"no database is set aside on {remote.name}")
            return
        output.table(["dropped for good", "it was", "kept since", "size"],
                     [[a.name, key_path("", a.original), a.when, units.size(a.size)]
                      for a in aside])
        if dry_run:
            output.note("dry run: nothing was changed")
            return
        confirm(remote.name, f"drop {len(aside)} database(s) set aside on {remote.name}", yes)
        for line in rp.drop(remote, [a.name for a in aside]):
            output.note(line)

"""``fab restore-undo`` and ``fab drop-replaced``: the databases a restore set aside."""

from __future__ import annotations

from typing import Any

from aimms_ops.cli.base import confirm, connect, ops_task
from aimms_ops.core.errors import OpsError, key_path
from aimms_ops.output import console as output


@ops_task(help={
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "dry_run": "print what would be swapped back, change nothing",
    "json": "print it as JSON {host, dry_run, restore_of, put_back: [{database, aside}], "
            "done}",
})
def restore_undo(c, yes=False, dry_run=False, json=False):
    """Put back the databases the last restore replaced and kept aside.

    The restored ones are dropped. One transaction; the sessions on them are ended
    first."""
    from aimms_ops.restore import replaced as rp

    with connect(c) as remote:
        aside = rp.set_aside(remote)
        if not aside:
            raise OpsError(f"no restore on {remote.name} has set a database aside",
                           "nothing to undo (fab status lists what is kept)")
        last = [a for a in aside if a.stamp == aside[0].stamp]
        result = {"host": remote.name, "dry_run": dry_run, "restore_of": last[0].when,
                  "put_back": [{"database": a.original, "aside": a.name} for a in last],
                  "done": []}
        if not json:
            output.table(["undo the restore of " + last[0].when, ""],
                         [[key_path("", a.original), f"{a.name} takes its place again; the "
                           "restored one is dropped"] for a in last])
        if not dry_run:
            confirm(remote.name, f"undo the last restore on {remote.name}", yes)
            result["done"] = rp.undo(remote)
    _finish(result, json, dry_run)


def _finish(result: dict[str, Any], json: bool, dry_run: bool) -> None:
    """The end of either task: the JSON, or the dry run's word, or what the host did."""
    if json:
        output.print_json(result)
    elif dry_run:
        output.note("dry run: nothing was changed")
    for line in [] if json else result["done"]:
        output.note(line)


@ops_task(help={
    "name": "drop only this database set aside (its aimms_ops_old_ name); default: all",
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "dry_run": "print what would be dropped, change nothing",
    "json": "print it as JSON {host, dry_run, dropped: [{name, was, since, size}], done}",
})
def drop_replaced(c, name=None, yes=False, dry_run=False, json=False):
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
        result: dict[str, Any] = {
            "host": remote.name, "dry_run": dry_run, "done": [],
            "dropped": [{"name": a.name, "was": a.original, "since": a.when, "size": a.size}
                        for a in aside]}
        if not aside and not json:
            output.note(f"no database is set aside on {remote.name}")
            return
        if aside and not json:
            output.table(["dropped for good", "it was", "kept since", "size"],
                         [[a.name, key_path("", a.original), a.when, units.size(a.size)]
                          for a in aside])
        if aside and not dry_run:
            confirm(remote.name, f"drop {len(aside)} database(s) set aside on {remote.name}",
                    yes)
            result["done"] = rp.drop(remote, [a.name for a in aside])
    _finish(result, json, dry_run)

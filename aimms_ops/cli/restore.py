"""``fab restore``: the plan, the confirmation, the safety copy, the restore.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aimms_ops.cli.base import confirm, connect, ops_task
from aimms_ops.core import units
from aimms_ops.core.errors import OpsError, key_path, shown
from aimms_ops.core.names import DUMP_FILE_HINT, stream_check
from aimms_ops.core.retention import PRE_RESTORE
from aimms_ops.dump.beside import KEEP_REPLACED_DAYS
from aimms_ops.output import console as output


@ops_task(help={
    "file": DUMP_FILE_HINT,
    "database": "restore only this database of the dump; default: all",
    "as_": "with --database: restore it under this new name beside the live one, "
           "which is left untouched",
    "dry_run": "print the plan (who is cut off, what is replaced), change nothing",
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "no_safety_backup": "skip the safety copy of the current state taken first",
    "from_": "restore from the copy on this offsite target (decrypted here, verified first)",
    "identity": "the age identity file that decrypts offsite copies (with --from)",
    "json": "print the plan and what was restored as JSON {host, dry_run, plan, commands, "
            "safety_backup, restored}",
    "to": "point-in-time recovery (pitr: in the inventory): the whole cluster as it was at "
          "this moment, e.g. \"2026-12-06 14:03:00\" (UTC unless it ends in an offset) "
          "or latest",
})
def restore(c, file=None, database=None, yes=False, no_safety_backup=False, from_=None,
            identity=None, as_=None, dry_run=False, json=False, to=None):
    """Restore a pg_dumpall backup onto the host: the whole cluster, or --database.

    All or nothing: every database is rebuilt beside the live one under a name no
    application uses; once all are rebuilt they are swapped in, in one transaction
    (the sessions on the replaced databases ended then), and the replaced ones are kept
    aside (fab restore-undo puts them back, fab drop-replaced removes them). A failure
    before the swap leaves the live cluster as it was.

    With --from=TARGET the backup is the copy on that offsite target (the host's backup
    dir may be empty): fetched through the host, checked, decrypted on this machine
    into the download folder and checked again; then restored as a local file.
    """
    from aimms_ops import restore as rs
    from aimms_ops.backup import run
    from aimms_ops.host.remote import in_background
    from aimms_ops.restore import source as dumpsource

    if to is not None:
        others = [f for f, v in (("--file", file), ("--database", database), ("--as", as_),
                                 ("--from", from_), ("--no-safety-backup", no_safety_backup))
                  if v]
        if others:
            raise OpsError(f"--to restores the whole cluster from the PITR repository; it "
                           f"takes no {', '.join(others)}", "drop them, or drop --to", code=2)
        restore_to(c, to, yes=yes, dry_run=dry_run, json=json)
        return
    if not file:
        raise OpsError("--file is required", "e.g. fab restore --file=latest")
    # A local dump is checked while the connection is made.
    check = dumpsource.start_local_check(file) if from_ is None and file != "latest" else None
    with connect(c) as remote:
        # The live cluster is read while the dump is checked: neither needs the other.
        live = in_background(lambda: rs.live_cluster(remote))
        dump = named_dump(remote, file, from_, identity, check=check)
        plan = rs.make_plan(remote, dump, database, safety_backup=not no_safety_backup,
                            live=live.result, as_name=as_)
        rows = plan_rows(plan)
        result: dict[str, Any] = {
            "host": plan.host, "dry_run": dry_run, "plan": dict(rows),
            "commands": [cmd.shown for cmd in plan.commands], "safety_backup": None,
            "restored": None}
        if not json:
            output.table(["restore plan", ""], rows)
        if dry_run:
            if json:
                output.print_json(result)
            output.note("dry run: nothing was changed")
            return
        what = (f"restore {plan.database} as {plan.as_name}" if plan.as_name else
                f"restore {plan.database}" if plan.database else "restore the whole cluster")
        confirm(remote.name, f"{what} on {remote.name}", yes)
        if plan.safety_backup:
            output.note(f"safety copy of the current state (label {PRE_RESTORE}) ...")
            try:
                with output.live() as shown:
                    safety = run.run_backup(remote, label=PRE_RESTORE, safety=True,
                                            on_event=shown)
            except OpsError as exc:
                raise OpsError(f"nothing was restored: the safety backup failed: {exc.message}",
                               "fix that first, or pass --no-safety-backup to restore "
                               "without one") from None
            output.note(f"  kept {safety.path} ({units.size(safety.size)})")
            result["safety_backup"] = safety.path
        try:
            with output.live() as shown:
                report = rs.execute(remote, plan, on_event=shown,
                                    progress=shown.transfer("restoring", plan.dump.size))
        except KeyboardInterrupt:
            raise OpsError("interrupted: the restore was stopped part-way",
                           f"{rs.failure_hint(plan)}; run it again: {rs.rerun_command(plan)}",
                           code=130) from None
    if json:
        result["restored"] = {
            "databases": list(report.databases), "seconds": round(report.seconds, 1),
            "bytes": report.bytes_streamed, "aside": report.aside,
            "tables": [{"database": t.database, "table": t.table, "rows": t.rows}
                       for t in report.tables]}
        output.print_json(result)
        return
    output.table(["database", "table", "rows (estimate)"],
                 [[key_path("", t.database), t.table, t.rows] for t in report.tables],
                 title=f"restored {', '.join(key_path('', db) for db in report.databases)} "
                 f"on {plan.host} in "
                 f"{units.duration(report.seconds)} ({units.size(report.rate)}/s of dump)")
    if report.aside:
        output.note("the databases replaced are kept aside: " + ", ".join(
            f"{db} as {aside}" for db, aside in report.aside.items()))
        output.note("put them back: fab restore-undo; remove them: fab drop-replaced")


def named_dump(remote: Any, file: str, from_: str | None, identity: str | None, *,
               check: Any = None, latest: Callable[[], str | None] | None = None):
    """The dump that ``--file`` (and ``--from``) name, read once: the copy on an offsite
    target, fetched and decrypted here; a backup on the host, ``latest`` being the newest
    regular one unless ``latest()`` names another; or a local file."""
    if from_ is not None:
        from aimms_ops.cli.offsite import offsite_source

        file = offsite_source(remote, file, from_, identity)
    if file == "latest":
        from aimms_ops.backup import listing

        file = (latest() if latest else None) or listing.pick(
            listing.list_remote(remote), "latest").name
    return inspect_source(remote, file, check)


def inspect_source(remote: Any, file: str, check: Any = None):
    """The dump ``file`` names, read once: a local file (checked here, by ``check`` when
    it was started already) or a backup on the host."""
    from aimms_ops.restore import source as dumpsource

    local = dumpsource.local_dump(file)
    if local is not None:
        check = check or dumpsource.LocalCheck(local)
        with output.transfer_progress(f"verifying {local.name}", local.stat().st_size) as adv:
            return check.result(progress=adv)
    return dumpsource.resolve_source(remote, file)


def plan_rows(plan: Any) -> list[list[str]]:
    """The restore plan as (what, detail) rows: the table people read, the JSON's plan."""
    d = plan.dump
    if d.sha256_recorded:
        sha = "matches its .sha256"
    else:
        sha = f"no .sha256 beside it ({stream_check(d.format)} and completion marker checked)"
    rows = [
        ["host", plan.host],
        ["container", plan.container],
        ["dump", f"{d.source} ({d.location}, {units.size(d.size)}, {d.format})"],
        ["checks", f"sha256 {sha}; stream and completion marker OK"],
        ["dump holds", ", ".join(shown(db) for db in d.databases)],
        ["rebuilt beside, then swapped in", ", ".join(
            f"{shown(db)} (replaces the live one, {units.size(plan.current_sizes[db])})"
            if db in plan.current_sizes else f"{shown(db)} (new)" for db in plan.affected)],
        ["if any step fails", "nothing is changed: the rebuilt copies are removed"],
        ["the replaced ones", "kept aside until fab drop-replaced, or the first backup or "
         f"restore after {KEEP_REPLACED_DAYS} days (fab restore-undo puts them back)"
         if plan.replaced else "none"],
        ["sessions ended at the swap", "; ".join(
            f"{shown(s.database)}: {s.user}@{s.client}"
            + (f" ({shown(s.application)})" if s.application else "")
            for s in plan.sessions) or "none now (any open then are ended)"],
        ["disk", f"about {units.size(plan.needed)} needed beside the live databases"
         + (f", {units.size(plan.free)} free" if plan.free is not None else "")],
    ]
    if plan.as_name:
        rows[5] = ["restored as", f"{shown(plan.database)} of the dump as the new database "
                   f"{shown(plan.as_name)}; {shown(plan.database)} on the host is untouched"]
    if plan.kept_databases:
        rows.append(["left as they are", ", ".join(shown(db) for db in plan.kept_databases)])
    props = [db for db in ("template1", "postgres") if db in plan.affected]
    if props:
        rows.append(["their own properties", ", ".join(
            f"{db}: from the {'dump' if db in d.properties else 'live cluster'}"
            for db in props)])
    if plan.database:
        rows.append(["roles", "untouched (they must exist)"])
    else:
        rows.append(["roles", f"{len(d.roles)} set exactly as in the dump (attributes, "
                     "password, settings, memberships) in the swap's transaction; the "
                     "missing ones made first (dropped again if the restore fails)"])
        if plan.other_roles:
            rows.append(["roles not in the dump", "left as they are: " + ", ".join(
                shown(r) for r in plan.other_roles)])
    rows.append(["safety copy", f"yes, label {PRE_RESTORE} (never what latest means)"
                 if plan.safety_backup else "NO"])
    return rows


def restore_to(c: Any, to: str, *, yes: bool, dry_run: bool, json: bool) -> None:
    """``restore --to``: the PITR plan, the confirmation, the run."""
    from aimms_ops.pitr import restore as pitr_restore
    from aimms_ops.pitr import state

    moment = pitr_restore.parse_moment(str(to))
    with connect(c) as remote:
        plan = pitr_restore.make_plan(remote.host, state.read(remote), moment,
                                      pitr_restore.run_id())
        result: dict[str, Any] = {"dry_run": dry_run, **plan.as_dict(), "restored": None}
        if not json:
            output.table(["restore plan", ""], plan.rows)
        if dry_run:
            if json:
                output.print_json(result)
            output.note("dry run: nothing was changed")
            return
        confirm(remote.name, f"bring the whole cluster on {remote.name} back to "
                f"{plan.rows[1][1]}", yes)
        with output.live() as shown:
            done = pitr_restore.run(remote, plan, shown)
        result["restored"] = {k: v for k, v in done.items() if k != "event"}
        if json:
            output.print_json(result)
            return
        output.note(f"{remote.name}: the cluster is back to {done.get('stopped')} in "
                    f"{units.duration(float(done.get('seconds') or 0))}; the data it "
                    f"replaced is in volume {plan.keep}")

"""Tasks that look and judge: check, status, verify, volumes, doctor.
"""

from __future__ import annotations

from typing import Any

from invoke import Exit

from aimms_ops.cli.base import connect, host_name, load_inventory, log_note, ops_task
from aimms_ops.core import units
from aimms_ops.core.checks import State
from aimms_ops.core.errors import OpsError
from aimms_ops.output import console as output


@ops_task(reads_only=True, help={
    "json": "print the checks as JSON {host, inventory, state, exit_code, checks}",
})
def check(c, json=False):
    """Can aimms-ops work on the host now? ssh, docker, compose, postgres, volumes, backup dir.

    Its one job: the connection and the stack, before anything else (a new host, after a
    change). Whether the backups are good: fab status; why they are not: fab doctor; the
    whole picture for people: fab info.
    """
    from aimms_ops.core.checks import worst
    from aimms_ops.monitor import health

    inv = load_inventory()
    with connect(c, inv) as remote:
        rows = health.check(remote)
    if json:
        output.print_json({"host": remote.name, "inventory": str(inv.path.resolve()),
                           "state": worst(rows).name, "exit_code": int(worst(rows)),
                           "checks": [r.as_dict() for r in rows]})
    else:
        output.checks_table(rows, title=f"aimms-ops check: {remote.name} "
                            f"(inventory {inv.path.resolve()})")
    failed = [r.name for r in rows if not r.ok]
    if failed:
        raise Exit(f"check failed: {', '.join(failed)}", code=int(worst(rows)) or 1)


@ops_task(reads_only=True, help={
    "json": "print one JSON object instead of the summary line and the table",
    "max_age": "how old the newest good backup may be: 26h (default), 90m, 2d",
})
def status(c, json=False, max_age="26h"):
    """Are the backups good right now? One summary line, then the checks (for monitors).

    Its one job: the judgement a monitor pages on. The first line is AIMMS-OPS
    OK|WARNING|CRITICAL|UNKNOWN - what matters, and the exit code is the monitoring
    plugins' one: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The stack alone: fab check;
    why a backup fails: fab doctor; the whole picture: fab info.
    """
    from aimms_ops.monitor import status as st

    try:
        seconds = st.parse_max_age(max_age)
        with connect(c) as remote:
            report = st.status(remote, seconds, str(max_age).strip())
            from aimms_ops.cli.offsite import offsite_status_checks

            off = offsite_status_checks(remote, seconds, str(max_age).strip())
            report.checks += off
            if off and all(ch.ok for ch in off):
                report.ok_text += "; offsite copies current on " + ", ".join(
                    ch.name.removeprefix("offsite ") for ch in off)
    except OpsError as exc:
        line = st.unknown_line(str(exc))
        if json:
            output.print_json({"host": host_name(c), "state": "UNKNOWN", "exit_code": 3,
                               "summary": line, "checks": []})
        else:
            output.write(line + "\n")
        raise Exit(code=3) from None
    if json:
        output.print_json(report.as_dict())
    else:
        output.write(report.summary + "\n")
        output.checks_table(report.checks, title=f"status of {report.host} at "
                            f"{report.checked_at:%Y-%m-%d %H:%M:%S} UTC")
    if report.state:
        raise Exit(code=int(report.state))


@ops_task(reads_only=True, help={
    "json": "print one JSON object {host, state, exit_code, summary, backups_on_the_host, "
            "offsite_NAME, pinned, last_backup, next_backup, last_deep_verify, "
            "you_would_lose_now, space, set_aside_by_restores}",
    "max_age": "how old the newest good backup may be: 26h (default), 90m, 2d",
})
def info(c, json=False, max_age="26h"):
    """The whole state on one screen, with the exit code of fab status.

    Backups here and offsite, pins, the last and next run, the last deep verify, what
    you would lose now, the space left."""
    from aimms_ops.monitor import info as inf
    from aimms_ops.monitor import status as st

    seconds = st.parse_max_age(max_age)
    with connect(c) as remote:
        shown = inf.info(remote, seconds, str(max_age).strip())
    if json:
        output.print_json(shown.as_dict())
    else:
        output.write(shown.report.summary + "\n")
        output.table(["", ""], [[r.what, r.text] for r in shown.rows],
                     title=f"{shown.host} at {shown.report.checked_at:%Y-%m-%d %H:%M} UTC "
                     "(fab status: the checks)")
    if shown.report.state:
        raise Exit(code=int(shown.report.state))


@ops_task(help={
    "file": "backup name on the host, or latest (default)",
    "deep": "restore it into a throwaway container and report databases, tables and rows",
    "json": "print one JSON object instead of tables",
    "offsite": "read back the copy on every offsite target (or on --offsite=NAME) instead",
    "identity": "the age identity file that decrypts offsite copies (with --offsite)",
}, optional=["offsite"])
def verify(c, file="latest", deep=False, json=False, offsite=None, identity=None):
    """Verify a backup on the host: checksum, its stream, completion marker; --deep restores it.

    --deep starts a throwaway container from the production postgres image, with a
    volume of its own and no network, restores the backup into it as fab restore
    would, counts the rows of every table, and removes the container and the volume
    whatever happens. Production's container and volumes are never touched.
    """
    from aimms_ops.monitor import verify as vf

    if offsite == "":
        raise OpsError("--offsite= names no target",
                       "use --offsite for every target, or --offsite=NAME")
    if offsite:
        from aimms_ops.cli.offsite import verify_offsite

        return verify_offsite(c, file, None if offsite is True else offsite, identity, json)
    vf.check_file(file)
    with connect(c) as remote:
        if deep:
            output.note(f"trial restore of {file} on {remote.name} into a throwaway "
                        "container ...")
        with output.live() as shown:
            report = vf.verify(remote, file, deep, on_log=log_note, on_event=shown)
    if json:
        output.print_json(report.as_dict())
    else:
        output.checks_table(report.checks, title=f"verify {report.file} on {report.host}"
                            + (" (trial restore)" if deep else ""))
        if deep and report.databases:
            rows = [[t.database, t.table, t.rows] for t in report.tables]
            rows += [[db, "(no tables)", ""] for db in report.databases
                     if not any(t.database == db for t in report.tables)]
            output.table(["database", "table", "rows"], rows,
                         title=f"restored into {report.container}: "
                         f"{', '.join(report.databases)}")
    if report.state is not State.OK:
        bad = next((ch for ch in report.checks if ch.state is report.state), None)
        what = f"{bad.name}: {bad.detail}" if bad else report.state.name
        verb = "failed" if report.state is State.CRITICAL else "warns"
        raise Exit(f"verify {verb}: {what}", code=int(report.state))
    if not json:
        total = sum(t.rows for t in report.tables)
        output.note(f"{report.file} is good" + (
            f": restored {len(report.databases)} databases, {len(report.tables)} tables, "
            f"{total} rows in {report.seconds} s; the throwaway container and volume are "
            "removed" if deep else " (checks only; --deep restores it for real)"))


@ops_task(reads_only=True, help={"json": "print a JSON list of objects instead of the table"})
def volumes(c, json=False):
    """The stack's volumes: external or not, size, who mounts them, what would destroy them."""
    from aimms_ops.monitor import volumes as vol

    with connect(c) as remote:
        found = vol.volumes(remote)
    if json:
        output.print_json([v.as_dict() for v in found])
        return
    def ext(v) -> str:
        return {True: "yes", False: "NO", None: "not in compose"}[v.external]

    output.table(["volume", "external", "size", "mounted by", "destroyed by"],
                 [[v.name, ext(v), v.size or ("-" if v.exists else "does not exist"),
                   ", ".join(f"{m.container} ({m.state})" for m in v.mounted_by) or "nothing",
                   "\n".join(v.destroyed_by)] for v in found],
                 title=f"volumes of {remote.host.compose.project} on {remote.name}")
    preserved = list(dict.fromkeys(p for v in found for p in v.preserved_by
                                   if "(external" not in p or all(w.external for w in found)))
    if preserved:
        output.table(["what preserves the data"], [[p] for p in preserved])
    risky = [v.name for v in found if v.external is False]
    if risky:
        output.note(f"not external (compose down -v deletes them): {', '.join(risky)}")
    _show_kept(vol.kept_volumes(found))


def _show_kept(kept: list[Any]) -> None:
    if not kept:
        return
    total = sum(v.size_bytes or 0 for v in kept)
    output.table(["kept volume", "kept from", "size", "age", "to remove it"],
                 [[v.name, v.kept_from, v.size or "?",
                   units.age(v.age_seconds), f"fab rebuild-volume --drop-kept={v.name}"]
                  for v in kept],
                 title=f"volumes kept by earlier rebuilds: {len(kept)}, {units.size(total)}")


@ops_task(help={"json": "print one JSON object instead of the table",
                "ping": "also send a test ping from the host to the inventory's ping URL(s)"})
def doctor(c, json=False, ping=False):
    """Why do the backups fail? Each check of the manual procedure's list, with its fix.

    Its one job: troubleshooting, deeper than fab status (the installed files, cron and
    its daemon, the compressor, python3, the container's log, a test ping with --ping);
    the connection and the stack alone: fab check.
    """
    from aimms_ops.monitor import doctor as dr

    with connect(c) as remote:
        report = dr.doctor(remote)
        if ping:
            report.checks.extend(dr.send_test_ping(remote))
    if json:
        output.print_json(report.as_dict())
    else:
        output.checks_table(report.checks, title=f"doctor on {report.host}")
        if report.container_log:
            output.table(["last lines of the postgres container's log"],
                         [[ln] for ln in report.container_log])
        if report.last_run_log:
            output.table(["the failed backup run, from the log"],
                         [[ln] for ln in report.last_run_log])
    if report.state is not State.OK:
        bad = [ch.name for ch in report.checks if not ch.ok]
        raise Exit(f"doctor: {report.state.name}: {', '.join(bad)}", code=int(report.state))

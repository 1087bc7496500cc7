"""The command line: Fabric tasks, their flags, prompts, printing and exit codes.

Tasks are thin: they load the inventory, connect, call a domain module and
render what it returns. Every problem the operator can fix ends as one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric import Connection
from invoke import Collection, Exit, task

from . import output, units
from .checks import State
from .errors import ConnectionLost, OpsError, shown

DEBUG_ENV = "AIMMS_OPS_DEBUG"


def _host_name(c: Any) -> str | None:
    """The host named with ``fab -H NAME``, or None for the inventory's default."""
    if isinstance(c, Connection):
        return c.original_host
    return None


def ops_task(*, help: dict[str, str] | None = None, **task_options: Any) -> Callable:
    """Declare a task whose user-facing failures end as one clean line."""

    def deco(fn: Callable) -> Any:
        @functools.wraps(fn)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(c, *args, **kwargs)
            except Exit:
                raise
            except OpsError as exc:
                raise Exit(f"error: {exc}", code=exc.code) from None
            except KeyboardInterrupt:
                raise Exit("interrupted: run the same command again to finish (downloads "
                           "resume, rebuilds continue where they stopped)", code=130) from None
            except EOFError:
                # paramiko's word for a transport that closed under a call that has no
                # ConnectionLost of its own: the connection is gone, nothing else.
                lost = ConnectionLost("the SSH connection was lost", "check the network and "
                                      "run the task again (downloads resume where they "
                                      "stopped)")
                raise Exit(f"error: {lost}", code=lost.code) from None
            except Exception as exc:
                if os.environ.get(DEBUG_ENV):
                    raise
                raise Exit(f"internal error: {type(exc).__name__}: {exc} "
                           f"(set {DEBUG_ENV}=1 to see the traceback)", code=70) from None

        return task(help=help or {}, **task_options)(wrapper)

    return deco


def check_hosts_argument(argv: list[str]) -> None:
    """Refuse a ``-H`` value that is not text (bytes that are not UTF-8) with one line.

    Fabric builds the connection for ``-H`` before any task runs and fails on such a
    name with a traceback; the fabfile calls this first.
    """
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-H", "--hosts") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(("--hosts=", "-H")) and arg not in ("-H",):
            value = arg.split("=", 1)[1] if arg.startswith("--hosts=") else arg[2:]
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SystemExit(f"error: -H {shown(value)} is not a host name (not valid UTF-8 "
                             "text); name a host of the inventory") from None


def _inventory():
    from . import inventory

    inv = inventory.load()
    for line in inv.warnings:
        _warn_once(line)
    return inv


@functools.cache
def _warn_once(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _open(c: Any, inv: Any = None):
    from .remote import open_host

    inv = inv or _inventory()
    return open_host(inv.host(_host_name(c)))


def confirm(expected: str, action: str, yes: bool) -> None:
    """Typed confirmation of a destructive ``action``: the operator types ``expected``.

    ``--yes`` skips it; without a terminal and without ``--yes`` it refuses.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise OpsError(f"refusing to {action} without confirmation: stdin is not a terminal",
                       "pass --yes to confirm from a script", code=2)
    try:
        answer = input(f"Type {expected} to {action}: ")
    except EOFError:
        answer = ""
    if answer.strip() != expected:
        raise OpsError("not confirmed: nothing was changed", code=2)


def _download_dir(inv: Any, dest: str | None) -> Path:
    return Path(os.path.expanduser(dest or inv.download_dir))


@ops_task()
def check(c):
    """Check the connection and the stack: ssh, docker, compose, postgres, volumes, backup dir."""
    from . import health
    from .checks import worst

    inv = _inventory()
    with _open(c, inv) as remote:
        rows = health.check(remote)
    output.checks_table(rows, title=f"aimms-ops check: {remote.name} "
                        f"(inventory {inv.path.resolve()})")
    failed = [r.name for r in rows if not r.ok]
    if failed:
        raise Exit(f"check failed: {', '.join(failed)}", code=int(worst(rows)) or 1)


@ops_task(help={
    "label": "a word added to the file name (letters, digits, - and _), e.g. pre-migration",
    "download": "also download the new backup into the local download folder",
    "allow_shrink": "accept a backup less than half the size of those before it (the "
                    "size-drop guard would otherwise skip retention and report it)",
})
def backup(c, label=None, download=False, allow_shrink=False):
    """Back up the whole cluster now, with the same script cron runs."""
    import time

    from . import backups

    if label is not None:
        backups.validate_label(label)
    inv = _inventory()
    with _open(c, inv) as remote:
        started = time.monotonic()
        output.note(f"backing up {remote.name} ...")
        result = backups.run_backup(remote, label=label, on_log=lambda line: output.note(
            "  " + line.split(" ", 2)[-1]), allow_shrink=allow_shrink)
        elapsed = time.monotonic() - started
        output.table(["name", "size", "sha256", "duration"],
                     [[result.name, units.size(result.size), result.sha256,
                       units.duration(elapsed)]],
                     title=f"backup made on {remote.name}: {result.path}")
        if result.pruned:
            output.note(f"retention removed {len(result.pruned)}: {', '.join(result.pruned)}")
        if result.suspicious and result.suspicious.startswith("suspicious"):
            output.note(f"warning: {result.suspicious}; retention removed nothing (if "
                        "intended: fab backup --allow-shrink)")
        if download:
            listing = backups.list_remote(remote)
            _do_download(remote, backups.pick(listing, result.name), _download_dir(inv, None))


def _do_download(remote: Any, b: Any, dest: Path) -> None:
    from . import backups

    def progress(total: int, initial: int):
        return output.transfer_progress(f"downloading {b.name}", total, initial)

    try:
        d = backups.download(remote, b, dest, progress_factory=progress)
    except KeyboardInterrupt:
        raise OpsError(f"interrupted: the part downloaded so far is kept in {dest}",
                       "run the same download again: it resumes", code=130) from None
    if d.already_present:
        output.note(f"{d.path} is already here and matches sha256 {d.sha256}")
        return
    rate = (d.size - d.resumed_from) / d.seconds if d.seconds else 0
    resumed = f", resumed at {units.size(d.resumed_from)}" if d.resumed_from else ""
    output.note(f"downloaded {d.path} ({units.size(d.size)} in {units.duration(d.seconds)}, "
                f"{units.size(rate)}/s{resumed}); sha256 {d.sha256} verified")


@ops_task(help={"json": "print a JSON list of objects instead of tables"})
def list_backups(c, json=False):
    """List the backups on the host (newest first) and those already downloaded."""
    from . import backups
    from .offsite_tasks import _offsite_json, _offsite_listings, _show_offsite

    inv = _inventory()
    with _open(c, inv) as remote:
        remote_list = backups.list_remote(remote)
        listings = _offsite_listings(remote)
    local_list = backups.list_local(_download_dir(inv, None))
    if json:
        output.print_json(_offsite_json(remote_list + local_list, listings))
        return
    output.table(["name", "size", "age", "checksum", "pinned"],
                 [[b.name, units.size(b.size), units.age_of(b.created), b.checksum_state,
                   _pin_cell(b)]
                  for b in remote_list],
                 title=f"backups on {remote.name}:{remote.host.backup_dir}")
    if local_list:
        output.table(["name", "size", "age", "checksum"],
                     [[b.name, units.size(b.size), units.age_of(b.created), b.checksum_state]
                      for b in local_list],
                     title=f"downloaded to {_download_dir(inv, None)}")
    _show_offsite(remote, remote_list, listings)


def _pin_cell(b: Any) -> str:
    if not b.pinned:
        return ""
    from datetime import UTC, datetime

    until = (f" until {datetime.fromtimestamp(b.pin.until, tz=UTC):%Y-%m-%d}"
             if b.pin.until else "")
    return f"yes{until}" + (f": {b.pin.reason}" if b.pin.reason else "")


@ops_task(help={
    "file": "backup name on the host, or latest (default)",
    "dest": "local folder (default: download_dir of the inventory, ./backups)",
})
def download(c, file="latest", dest=None):
    """Download a backup, resumable, verified against its sha256."""
    from . import backups

    inv = _inventory()
    if file != "latest":
        backups.validate_name(file)
    with _open(c, inv) as remote:
        b = backups.pick(backups.list_remote(remote), file)
        _do_download(remote, b, _download_dir(inv, dest))


def whole_number(flag: str, value: Any) -> int:
    """Parse an integer flag here: Invoke's own int flags end in a traceback on bad input."""
    try:
        return int(str(value).strip())
    except ValueError:
        raise OpsError(f"{flag} must be a whole number, got {shown(value, 24)}") from None


@ops_task(help={"lines": "how many lines of the log to show (default 50)"})
def logs(c, lines="50"):
    """Show the end of the backup log on the host."""
    from . import backups

    n = whole_number("--lines", lines)
    if not 1 <= n <= 100_000:
        raise OpsError(f"--lines must be between 1 and 100000, got {n}")
    with _open(c) as remote:
        sys.stdout.write(backups.read_log(remote, n))


@ops_task(help={
    "dry_run": "print what would be kept and removed, remove nothing",
    "yes": "do not ask for confirmation",
    "json": "print a JSON list of {name, action, rule, reason} (with --dry-run, or after "
            "removing)",
})
def prune(c, dry_run=False, yes=False, json=False):
    """Apply the retention policy now, printing each backup: kept or removed, and the rule.

    The decision is made on the host by the same code the nightly run uses; after the
    confirmation the host removes exactly what was shown, or nothing if the backups
    changed meanwhile.
    """
    from . import backups

    with _open(c) as remote:
        plan = backups.prune(remote, dry_run=True)
        doomed = [d for d in plan if d.action == "remove"]
        if json and (dry_run or not doomed):
            output.print_json([d.as_dict() for d in plan])
            return
        if not json:
            output.table(["name", "action", "rule", "why"],
                         [[d.name, d.action, d.rule, d.reason] for d in plan],
                         title=f"retention on {remote.name}: {remote.host.policy.describe()}")
        if dry_run or not doomed:
            output.note("nothing to remove" if not doomed else
                        f"dry run: {len(doomed)} would be removed")
            return
        confirm(remote.name, f"remove {len(doomed)} backups from {remote.name}", yes)
        done = backups.prune(remote, dry_run=False, expect=plan)
        if json:
            output.print_json([d.as_dict() for d in done])
        removed = [d.name for d in done if d.action == "remove"]
        output.note(f"removed {len(removed)}: {', '.join(removed)}")


def _who() -> str:
    from .rebuild import operator

    return operator()


@ops_task(help={
    "file": "the backup to pin (its name, see fab list-backups), or latest",
    "reason": "why it is kept (one line), e.g. 'before the 2026 migration'",
})
def pin(c, file=None, reason=""):
    """Pin a backup: retention never removes it (a NAME.pin file beside it: who, when, why)."""
    from . import backups

    if not file:
        raise OpsError("--file is required", "e.g. fab pin --file=latest --reason='...'")
    if file != "latest":
        backups.validate_name(file)
    backups.validate_reason(reason)
    with _open(c) as remote:
        if file == "latest":
            file = backups.pick(backups.list_remote(remote), "latest").name
        backups.set_pin(remote, file, pinned=True, by=_who(), reason=reason)
    output.note(f"pinned {file} on {remote.name}" + (f": {reason}" if reason else "")
                + " (retention never removes it; fab unpin releases it)")


@ops_task(help={"file": "the pinned backup (its name, see fab list-backups)"})
def unpin(c, file=None):
    """Remove a backup's pin: retention's rules apply to it again."""
    from . import backups

    if not file:
        raise OpsError("--file is required", "e.g. fab unpin --file=NAME")
    backups.validate_name(file)
    with _open(c) as remote:
        was = backups.set_pin(remote, file, pinned=False)
    output.note(f"unpinned {file} on {remote.name}" if was else
                f"{file} on {remote.name} was not pinned; nothing changed")


@ops_task(help={"dry_run": "print what would change, change nothing"})
def install_backups(c, dry_run=False):
    """Install the backup script, its settings, the backup dir and the cron jobs.

    The daily backup runs on cron_schedule; with verify_schedule in the inventory a
    deep verify (a trial restore of the newest backup into a throwaway container) is
    installed next to the backup script and runs on that schedule too.
    """
    from . import install

    with _open(c) as remote:
        plan = install.plan(remote)
        _note_compressor(remote.name, plan.compressor)
        if not plan.changed:
            output.note(f"{remote.name}: backups already installed; nothing to change")
            return
        output.table(["item", "change", "detail"],
                     [[ch.item, ch.action, ch.detail] for ch in plan.changes],
                     title=f"install-backups on {remote.name}"
                     + (" (dry run)" if dry_run else ""))
        if dry_run:
            return
        for note in install.apply(remote, plan):
            output.note(note)
        output.note(f"{remote.name}: {len(plan.changes)} change(s) applied")


def _note_compressor(host: str, facts: dict[str, str]) -> None:
    from .doctor import compressor_check

    found = compressor_check(facts)
    if found is not None:
        output.note(f"{host}: backups compressed on the host by {found.detail}"
                    + (f"; {found.fix}" if found.fix else ""))


@ops_task(help={
    "file": "a local .sql.gz or .sql, the name of a backup on the host, or latest",
    "database": "restore only this database of the dump (recreated first); default: all",
    "yes": "do not ask for confirmation (needed when not run from a terminal)",
    "no_safety_backup": "skip the pre-restore backup of the current state",
    "from_": "restore from the copy on this offsite target (decrypted here, verified first)",
    "identity": "the age identity file that decrypts offsite copies (with --from)",
})
def restore(c, file=None, database=None, yes=False, no_safety_backup=False, from_=None,
            identity=None):
    """Restore a pg_dumpall backup onto the host: the whole cluster, or --database.

    With --from=TARGET the backup is the copy on that offsite target (the host's backup
    dir may be empty): fetched through the host, checked, decrypted on this machine
    into the download folder and checked again; then restored as a local file.
    """
    from . import backups, dumpsource
    from . import restore as rs

    if not file:
        raise OpsError("--file is required", "e.g. fab restore --file=latest")
    # A local dump is checked while the connection is made.
    check = dumpsource.start_local_check(file) if from_ is None and file != "latest" else None
    with _open(c) as remote:
        if from_ is not None:
            from .offsite_tasks import _restore_source

            file = _restore_source(remote, file, from_, identity)
        if file == "latest":
            file = backups.pick(backups.list_remote(remote), "latest").name
        dump = _inspect(remote, file, check)
        plan = rs.make_plan(remote, dump, database, safety_backup=not no_safety_backup)
        _print_restore_plan(plan)
        what = (f"restore {plan.database}" if plan.database else "restore the whole cluster")
        confirm(remote.name, f"{what} on {remote.name}", yes)
        if plan.safety_backup:
            output.note("safety copy of the current state (label pre-restore) ...")
            try:
                safety = backups.run_backup(remote, label="pre-restore", safety=True)
            except OpsError as exc:
                raise OpsError(f"nothing was restored: the safety backup failed: {exc.message}",
                               "fix that first, or pass --no-safety-backup to restore "
                               "without one") from None
            output.note(f"  kept {safety.path} ({units.size(safety.size)})")
        try:
            with output.transfer_progress("restoring", plan.dump.size) as advance:
                report = rs.execute(remote, plan, progress=advance)
        except KeyboardInterrupt:
            raise OpsError("interrupted: the restore was stopped part-way",
                           f"{rs.failure_hint(plan)}; run it again: {rs.rerun_command(plan)}",
                           code=130) from None
    output.table(["database", "table", "rows (estimate)"],
                 [[t.database, t.table, t.rows] for t in report.tables],
                 title=f"restored {', '.join(report.databases)} on {plan.host} in "
                 f"{units.duration(report.seconds)} ({units.size(report.rate)}/s of dump)")


def _inspect(remote: Any, file: str, check: Any = None):
    from . import dumpsource

    local = dumpsource.local_dump(file)
    if local is not None:
        check = check or dumpsource.LocalCheck(local)
        with output.transfer_progress(f"verifying {local.name}", local.stat().st_size) as adv:
            return check.result(progress=adv)
    return dumpsource.resolve_source(remote, file)


def _print_restore_plan(plan: Any) -> None:
    d = plan.dump
    if d.sha256_recorded:
        sha = "matches its .sha256"
    else:
        sha = "no .sha256 beside it (gzip stream and completion marker checked)"
    rows = [
        ["host", plan.host],
        ["container", plan.container],
        ["dump", f"{d.source} ({d.location}, {units.size(d.size)}, {d.format})"],
        ["checks", f"sha256 {sha}; stream and completion marker OK"],
        ["dump holds", ", ".join(shown(db) for db in d.databases)],
        ["dropped and recreated", ", ".join(
            f"{shown(db)} (now {units.size(plan.current_sizes[db])})" if db in plan.current_sizes
            else f"{shown(db)} (new)" for db in plan.affected)],
    ]
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
                     "password, settings, memberships)"])
        if plan.other_roles:
            rows.append(["roles not in the dump", "left as they are: " + ", ".join(
                shown(r) for r in plan.other_roles)])
    rows.append(["safety copy", "yes, label pre-restore (never what latest means)"
                 if plan.safety_backup else "NO"])
    output.table(["restore plan", ""], rows)


@ops_task(help={
    "json": "print one JSON object instead of the summary line and the table",
    "max_age": "how old the newest good backup may be: 26h (default), 90m, 2d",
})
def status(c, json=False, max_age="26h"):
    """Backup status for people and monitors: one summary line, then the checks.

    The first line is AIMMS-OPS OK|WARNING|CRITICAL|UNKNOWN - what matters, and the
    exit code is the monitoring plugins' one: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    """
    from . import status as st

    try:
        seconds = st.parse_max_age(max_age)
        with _open(c) as remote:
            report = st.status(remote, seconds, str(max_age).strip())
            from .offsite_tasks import offsite_status_checks

            off = offsite_status_checks(remote, seconds, str(max_age).strip())
            report.checks += off
            if off and all(ch.ok for ch in off):
                report.ok_text += "; offsite copies current on " + ", ".join(
                    ch.name.removeprefix("offsite ") for ch in off)
    except OpsError as exc:
        line = st.unknown_line(str(exc))
        if json:
            output.print_json({"host": _host_name(c), "state": "UNKNOWN", "exit_code": 3,
                               "summary": line, "checks": []})
        else:
            sys.stdout.write(line + "\n")
        raise Exit(code=3) from None
    if json:
        output.print_json(report.as_dict())
    else:
        sys.stdout.write(report.summary + "\n")
        sys.stdout.flush()
        output.checks_table(report.checks, title=f"status of {report.host} at "
                            f"{report.checked_at:%Y-%m-%d %H:%M:%S} UTC")
    if report.state:
        raise Exit(code=int(report.state))


@ops_task(help={
    "file": "backup name on the host, or latest (default)",
    "deep": "restore it into a throwaway container and report databases, tables and rows",
    "json": "print one JSON object instead of tables",
    "offsite": "read back the copy on every offsite target (or on --offsite=NAME) instead",
    "identity": "the age identity file that decrypts offsite copies (with --offsite)",
}, optional=["offsite"])
def verify(c, file="latest", deep=False, json=False, offsite=None, identity=None):
    """Verify a backup on the host: checksum, gzip stream, completion marker; --deep restores it.

    --deep starts a throwaway container from the production postgres image, with a
    volume of its own and no network, restores the backup into it as fab restore
    would, counts the rows of every table, and removes the container and the volume
    whatever happens. Production's container and volumes are never touched.
    """
    from . import verify as vf

    if offsite == "":
        raise OpsError("--offsite= names no target",
                       "use --offsite for every target, or --offsite=NAME")
    if offsite:
        from .offsite_tasks import verify_offsite

        return verify_offsite(c, file, None if offsite is True else offsite, identity, json)
    with _open(c) as remote:
        if deep:
            output.note(f"trial restore of {file} on {remote.name} into a throwaway "
                        "container ...")
        report = vf.verify(remote, file, deep, on_log=lambda line: output.note(
            "  " + line.split(" ", 2)[-1]))
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


@ops_task(help={"json": "print a JSON list of objects instead of the table"})
def volumes(c, json=False):
    """The stack's volumes: external or not, size, who mounts them, what would destroy them."""
    from . import volumes as vol

    with _open(c) as remote:
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
    """Troubleshoot the backups: each check of the seed's troubleshooting list, with its fix."""
    from . import doctor as dr

    with _open(c) as remote:
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


@ops_task(help={
    "file": "a local .sql.gz or .sql, the name of a backup on the host, or latest",
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
    from . import backups
    from . import rebuild as rb

    if drop_kept is not None:
        if file:
            raise OpsError("--drop-kept and --file do not go together",
                           "remove the kept volume, then rebuild, in two runs")
        _drop_kept(c, drop_kept, yes=yes, dry_run=dry_run)
        return
    if not file:
        raise OpsError("--file is required", "e.g. fab rebuild-volume --file=latest")
    with _open(c) as remote:
        if from_ is not None:
            from .offsite_tasks import _restore_source

            file = _restore_source(remote, file, from_, identity)
        if file == "latest":
            recorded = None if new_run else rb.recorded_backup_name(remote)
            if recorded:
                output.note(f"latest: continuing the unfinished rebuild with its backup "
                            f"{recorded}")
                file = recorded
            else:
                file = backups.pick(backups.list_remote(remote), "latest").name
        dump = _inspect(remote, file)
        if dry_run:
            plan = rb.prepare(remote, dump, keep_old=not no_keep_old, new_run=new_run)
            _show_rebuild_plan(plan, json)
            output.note("dry run: nothing was changed")
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
    from . import volumes as vol

    if not isinstance(name, str) or not name:
        raise OpsError("--drop-kept needs the name of a kept volume", "see fab volumes")
    with _open(c) as remote:
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
    from . import rebuild as rb

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
    from . import rebuild as rb

    print(f"steps, in order ({rb.PLACEHOLDER}: found once the stack is up):")
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


@ops_task(help={
    "target": "only this offsite target (default: every target of the host)",
    "dry_run": "print what would be pushed and pruned, change nothing",
})
def offsite_sync(c, target=None, dry_run=False):
    """Push every good backup an offsite target lacks, then apply the target's retention.

    The host does it (it holds the store's credentials), under the backup's lock:
    each backup encrypted with age to offsite_recipients, its sha256 and the
    encrypted object's recorded beside it. Idempotent: a second run pushes nothing.
    A target is pruned only when every push to it in this run succeeded.
    """
    from .offsite_tasks import sync_task

    sync_task(c, target, dry_run)


ns = Collection(check, backup, list_backups, download, logs, prune, install_backups, restore,
                status, verify, volumes, doctor, rebuild_volume, pin, unpin, offsite_sync)


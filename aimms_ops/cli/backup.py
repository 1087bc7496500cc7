"""Tasks of the backups themselves: make, list, download, log, prune, pin, install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aimms_ops.cli.base import (
    confirm,
    connect,
    download_dir,
    load_inventory,
    log_note,
    operator_name,
    ops_task,
    whole_number,
)
from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.output import console as output


@ops_task(help={
    "label": "a word added to the file name (letters, digits, - and _), e.g. pre-migration",
    "download": "also download the new backup into the local download folder",
    "allow_shrink": "accept a backup less than half the size of those before it (the "
                    "size-drop guard would otherwise skip retention and report it)",
    "json": "print the backup made as JSON {host, name, path, size, sha256, seconds, "
            "container, pruned, suspicious, downloaded}",
})
def backup(c, label=None, download=False, allow_shrink=False, json=False):
    """Back up the whole cluster now, with the same script cron runs."""
    import time

    from aimms_ops.backup import listing, run
    from aimms_ops.core import names

    if label is not None:
        names.validate_label(label)
    inv = load_inventory()
    with connect(c, inv) as remote:
        started = time.monotonic()
        output.note(f"backing up {remote.name} ...")
        with output.live() as shown:
            result = run.run_backup(remote, label=label, on_log=log_note,
                                    allow_shrink=allow_shrink, on_event=shown)
        elapsed = time.monotonic() - started
        if json:
            got = None
            if download:
                found = listing.list_remote(remote)
                got = _do_download(remote, listing.pick(found, result.name),
                                   download_dir(inv, None), quiet=True)
            output.print_json({
                "host": remote.name, "name": result.name, "path": result.path,
                "size": result.size, "sha256": result.sha256, "seconds": round(elapsed, 1),
                "container": result.container, "pruned": list(result.pruned),
                "suspicious": result.suspicious or None,
                "downloaded": str(got.path) if got is not None else None})
            return
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
            found = listing.list_remote(remote)
            _do_download(remote, listing.pick(found, result.name), download_dir(inv, None))


def _do_download(remote: Any, b: Any, dest: Path, *, quiet: bool = False) -> Any:
    """Download ``b`` into ``dest`` with a bar; what was downloaded (``quiet``: no note)."""
    from aimms_ops.backup import download

    def progress(total: int, initial: int):
        return output.transfer_progress(f"downloading {b.name}", total, initial)

    try:
        d = download.download(remote, b, dest, progress_factory=progress)
    except KeyboardInterrupt:
        raise OpsError(f"interrupted: the part downloaded so far is kept in {dest}",
                       "run the same download again: it resumes", code=130) from None
    if quiet:
        return d
    if d.already_present:
        output.note(f"{d.path} is already here and matches sha256 {d.sha256}")
        return d
    rate = (d.size - d.resumed_from) / d.seconds if d.seconds else 0
    resumed = f", resumed at {units.size(d.resumed_from)}" if d.resumed_from else ""
    output.note(f"downloaded {d.path} ({units.size(d.size)} in {units.duration(d.seconds)}, "
                f"{units.size(rate)}/s{resumed}); sha256 {d.sha256} verified")
    return d


@ops_task(reads_only=True, help={"json": "print a JSON list of objects instead of tables"})
def list_backups(c, json=False):
    """List the backups on the host (newest first) and those already downloaded."""
    from aimms_ops.backup import listing
    from aimms_ops.cli.offsite import offsite_json, offsite_listings, show_offsite

    inv = load_inventory()
    with connect(c, inv) as remote:
        remote_list = listing.list_remote(remote)
        listings = offsite_listings(remote)
    local_list = listing.list_local(download_dir(inv, None))
    if json:
        output.print_json(offsite_json(remote_list + local_list, listings))
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
                     title=f"downloaded to {download_dir(inv, None)}")
    show_offsite(remote, remote_list, listings)


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
    "json": "print what was downloaded as JSON {host, name, path, size, sha256, seconds, "
            "resumed_from, already_present}",
})
def download(c, file="latest", dest=None, json=False):
    """Download a backup, resumable, verified against its sha256."""
    from aimms_ops.backup import listing
    from aimms_ops.core import names

    if file != "latest":
        names.validate_name(file)
    inv = load_inventory()
    with connect(c, inv) as remote:
        b = listing.pick(listing.list_remote(remote), file)
        d = _do_download(remote, b, download_dir(inv, dest), quiet=json)
    if json:
        output.print_json({"host": remote.name, "name": b.name, "path": str(d.path),
                           "size": d.size, "sha256": d.sha256, "seconds": round(d.seconds, 1),
                           "resumed_from": d.resumed_from,
                           "already_present": d.already_present})


@ops_task(reads_only=True, help={
    "lines": "how many lines of the log to show (default 50)",
    "follow": "then show each line as the host adds it, until Ctrl-C (tail -F)",
    "json": "print them as JSON {host, lines: [...]} (with --follow: one {host, line} "
            "object per line)",
})
def logs(c, lines="50", json=False, follow=False):
    """Show the end of the backup log on the host (--follow: and what it adds)."""
    import json as _json

    from aimms_ops.backup import listing

    n = whole_number("--lines", lines)
    if not 1 <= n <= 100_000:
        raise OpsError(f"--lines must be between 1 and 100000, got {n}")
    with connect(c) as remote:
        if follow:
            def show(line: str) -> None:
                output.write(_json.dumps({"host": remote.name, "line": line}) + "\n"
                             if json else line + "\n")

            try:
                listing.follow_log(remote, n, show)
            except KeyboardInterrupt:
                pass  # Ctrl-C is how a follow ends
            return
        text = listing.read_log(remote, n)
    if json:
        output.print_json({"host": remote.name, "lines": text.splitlines()})
        return
    output.write(text)


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
    from aimms_ops.backup import run

    with connect(c) as remote:
        plan = run.prune(remote, dry_run=True)
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
        done = run.prune(remote, dry_run=False, expect=plan)
        if json:
            output.print_json([d.as_dict() for d in done])
        removed = [d.name for d in done if d.action == "remove"]
        output.note(f"removed {len(removed)}: {', '.join(removed)}")


@ops_task(help={
    "file": "the backup to pin (its name, see fab list-backups), or latest",
    "reason": "why it is kept (one line), e.g. 'before the 2026 migration'",
    "json": "print the pin as JSON {host, name, pinned, reason}",
})
def pin(c, file=None, reason="", json=False):
    """Pin a backup: retention never removes it (a NAME.pin file beside it: who, when, why)."""
    from aimms_ops.backup import listing, run
    from aimms_ops.core import names

    if not file:
        raise OpsError("--file is required", "e.g. fab pin --file=latest --reason='...'")
    if file != "latest":
        names.validate_name(file)
    names.validate_reason(reason)
    with connect(c) as remote:
        if file == "latest":
            file = listing.pick(listing.list_remote(remote), "latest").name
        with output.live() as shown:
            run.set_pin(remote, file, pinned=True, by=operator_name(), reason=reason,
                        on_event=shown)
    if json:
        output.print_json({"host": remote.name, "name": file, "pinned": True,
                           "reason": reason})
        return
    output.note(f"pinned {file} on {remote.name}" + (f": {reason}" if reason else "")
                + " (retention never removes it; fab unpin releases it)")


@ops_task(help={
    "file": "the pinned backup (its name, see fab list-backups)",
    "json": "print the result as JSON {host, name, pinned: false, was_pinned}",
})
def unpin(c, file=None, json=False):
    """Remove a backup's pin: retention's rules apply to it again."""
    from aimms_ops.backup import run
    from aimms_ops.core import names

    if not file:
        raise OpsError("--file is required", "e.g. fab unpin --file=NAME")
    if file == "latest":
        _refuse_latest(c)
    names.validate_name(file)
    with connect(c) as remote:
        with output.live() as shown:
            was = run.set_pin(remote, file, pinned=False, on_event=shown)
    if json:
        output.print_json({"host": remote.name, "name": file, "pinned": False,
                           "was_pinned": was})
        return
    output.note(f"unpinned {file} on {remote.name}" if was else
                f"{file} on {remote.name} was not pinned; nothing changed")


def _refuse_latest(c: Any) -> None:
    """``unpin --file=latest``: a pin is released by name; say which backups are pinned."""
    from aimms_ops.backup import listing

    with connect(c) as remote:
        pinned = [b.name for b in listing.list_remote(remote) if b.pinned]
    raise OpsError("unpin takes the name of a pinned backup, not latest",
                   f"pinned on {remote.name}: {', '.join(pinned)}" if pinned else
                   f"no backup is pinned on {remote.name}", code=2)


@ops_task(help={
    "dry_run": "print what would change, change nothing",
    "yes": "with pitr: in the inventory, restart postgres for PITR without asking",
    "json": "print the changes as JSON {host, dry_run, changes: [{item, change, detail}], "
            "warnings, pitr}",
})
def install_backups(c, dry_run=False, yes=False, json=False):
    """Install the backup script, its settings, the backup dir and the cron jobs.

    The daily backup runs on cron_schedule; with verify_schedule in the inventory a
    deep verify (a trial restore of the newest backup into a throwaway container) is
    installed next to the backup script and runs on that schedule too. With pitr: in
    the inventory it also turns on point-in-time recovery (pgBackRest): it shows that
    plan and restarts postgres once, with your consent (or --yes).
    """
    from aimms_ops.backup import install
    from aimms_ops.cli import pitr

    with connect(c) as remote:
        plan = install.plan(remote)
        _note_compressor(remote.name, plan.compressor, remote.host.compression)
        for line in plan.warnings:
            output.note(f"warning: {line}")
        result: dict[str, Any] = {
            "host": remote.name, "dry_run": dry_run, "warnings": list(plan.warnings),
            "changes": [{"item": ch.item, "change": ch.action, "detail": ch.detail}
                        for ch in plan.changes], "pitr": None}
        if not plan.changed:
            if not json:
                output.note(f"{remote.name}: backups already installed; nothing to change")
        else:
            if not json:
                output.table(["item", "change", "detail"],
                             [[ch.item, ch.action, ch.detail] for ch in plan.changes],
                             title=f"install-backups on {remote.name}"
                             + (" (dry run)" if dry_run else ""))
            if not dry_run:
                for note in install.apply(remote, plan):
                    output.note(note)
                output.note(f"{remote.name}: {len(plan.changes)} change(s) applied")
        if remote.host.pitr is not None:
            try:
                result["pitr"] = pitr.install(remote, yes=yes, dry_run=dry_run, json=json)
            finally:
                if json:
                    output.print_json(result)
        elif json:
            output.print_json(result)


def _note_compressor(host: str, facts: dict[str, str], compression: str) -> None:
    from aimms_ops.monitor.doctor import compressor_check

    found = compressor_check(facts, compression)
    if found is not None:
        output.note(f"{host}: backups compressed on the host by {found.detail}"
                    + (f"; {found.fix}" if found.fix else ""))

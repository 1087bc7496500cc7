"""The command line of the offsite copies: ``fab offsite-sync`` and the offsite parts of
``list-backups``, ``verify --offsite``, ``restore --from`` and ``status``.

The logic is in :mod:`aimms_ops.offsite`; this module renders it.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invoke import Exit

from aimms_ops.cli.base import connect, download_dir, load_inventory, ops_task
from aimms_ops.core import units
from aimms_ops.core.checks import Check, State
from aimms_ops.core.errors import OpsError
from aimms_ops.output import console as output

# --- list-backups ------------------------------------------------------------------------


def offsite_listings(remote: Any) -> list:
    """The copies on every target of the host; [] when it has none."""
    from aimms_ops.offsite import copies

    if not remote.host.offsite:
        return []
    return copies.list_copies(remote)


def offsite_json(backups: list, listings: list) -> list[dict]:
    """list-backups --json: each backup with the targets holding it, then every copy."""
    out = []
    for b in backups:
        d = b.as_dict()
        if listings:
            d["offsite"] = [lst.target for lst in listings
                            if any(cp.name == b.name and cp.complete for cp in lst.copies)]
        out.append(d)
    for lst in listings:
        out += [cp.as_dict() for cp in lst.copies]
    return out


def show_offsite(remote: Any, remote_list: list, listings: list) -> None:
    if not listings:
        return
    on_host = {b.name for b in remote_list}
    for lst in listings:
        target = remote.host.offsite.target(lst.target)
        if not lst.ok:
            output.note(f"offsite {lst.target} ({target.where}): cannot list: {lst.error}")
            continue
        rows = []
        for cp in lst.copies:
            state = "whole" if cp.complete else "INCOMPLETE"
            verified = (f"verified {units.age_of(cp.verified_at)} ago" if cp.verified_at
                        else "not verified")
            where = "host + offsite" if cp.name in on_host else "ONLY OFFSITE"
            age = units.age_of(cp.created) if cp.created else "?"
            rows.append([cp.name, units.size(cp.plaintext_size), age, state, verified, where])
        rows += [[f"{name} (partial upload)", "", "", "partial", "", ""]
                 for name in lst.partial]
        output.table(["name", "size", "age", "copy", "verified", "where"], rows,
                     title=f"offsite {lst.target}: {target.where}")
    missing = [(b.name, [lst.target for lst in listings if lst.ok and not any(
        cp.name == b.name and cp.complete for cp in lst.copies)]) for b in remote_list
        if b.sha256]
    missing = [(n, ts) for n, ts in missing if ts]
    if missing:
        output.note("not offsite yet: " + ", ".join(f"{n} (missing on {', '.join(ts)})"
                                                   for n, ts in missing[:5])
                    + (" …" if len(missing) > 5 else "") + " (fab offsite-sync pushes them)")


# --- restore --from ----------------------------------------------------------------------


def offsite_source(remote: Any, file: str | None, target: str, identity: str | None) -> str:
    """restore --from=TARGET: the local path of the verified, decrypted copy of ``file``."""
    from aimms_ops.offsite import copies, fetch

    copies.require(remote.host, target)
    ids, id_path = fetch.load_identities(remote.host, identity)
    listing = copies.list_copies(remote, target)[0]
    cp = copies.pick_copy(listing, file or "latest")
    dest = download_dir(load_inventory(), None)
    with output.transfer_progress(f"fetching {cp.name}.age from {target}",
                                  cp.encrypted_size) as advance:
        got = fetch.fetch(remote, cp, dest, ids, id_path, progress=advance)
    output.note(f"fetched {cp.name} from offsite {target} in {got.seconds:.1f} s: encrypted "
                f"sha256 {cp.encrypted_sha256[:16]}… and, decrypted here with {id_path}, "
                f"sha256 {cp.plaintext_sha256[:16]}… verified; kept in {got.path}")
    return str(got.path)


# --- verify --offsite --------------------------------------------------------------------


def verify_offsite(c: Any, file: str, target: str | None, identity: str | None,
                   as_json: bool) -> None:
    """verify --offsite[=NAME]: read each copy back, decrypt it here, check it whole."""
    from aimms_ops.core.names import stream_check
    from aimms_ops.offsite import copies, fetch
    from aimms_ops.restore import source as dumpsource

    rows: list[Check] = []
    results = []
    with connect(c) as remote:
        targets = copies.require(remote.host, target)
        ids, id_path = fetch.load_identities(remote.host, identity)
        listings = {lst.target: lst for lst in copies.list_copies(remote, target)}
        for t in targets:
            lst = listings.get(t.name)
            name = f"offsite {t.name}"
            try:
                if lst is None:
                    raise OpsError("not listed by the host (run fab install-backups)")
                cp = copies.pick_copy(lst, file)
                tmp = Path(tempfile.mkdtemp(prefix="aimms-ops-verify-"))
                try:
                    got = fetch.fetch(remote, cp, tmp, ids, id_path)
                    dump = dumpsource.inspect_local(got.path)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                if not dump.ok:
                    raise OpsError(f"the copy of {cp.name} on {t.name} decrypts but is not a "
                                   f"good dump: {'; '.join(dump.problems)}")
                fetch.mark_verified(remote, cp)
                detail = (f"{cp.name}: encrypted sha256 and plaintext sha256 match, "
                          f"{stream_check(dump.format)} and completion marker OK "
                          f"({', '.join(dump.databases)})")
                rows.append(Check(name, State.OK, detail))
                results.append({"target": t.name, "file": cp.name, "state": "OK",
                                "detail": detail})
            except OpsError as exc:
                rows.append(Check(name, State.CRITICAL, exc.message, exc.hint or ""))
                results.append({"target": t.name, "file": file, "state": "CRITICAL",
                                "detail": exc.message})
    if as_json:
        output.print_json({"host": remote.name, "offsite": results,
                           "state": "OK" if all(r.ok for r in rows) else "CRITICAL"})
    else:
        output.checks_table(rows, title=f"verify of the offsite copies of {file} "
                            f"({remote.name})")
    bad = [r for r in rows if not r.ok]
    if bad:
        raise Exit("verify failed: " + "; ".join(f"{r.name}: {r.detail}" for r in bad),
                   code=2)


# --- status ------------------------------------------------------------------------------


def offsite_status_checks(remote: Any, max_age: int, max_age_text: str) -> list[Check]:
    """fab status: a check per offsite target of the host ([] when it has none)."""
    from aimms_ops.offsite import copies

    if not remote.host.offsite:
        return []
    try:
        listings = copies.list_copies(remote)
    except OpsError as exc:
        return [Check("offsite", State.CRITICAL, exc.message, exc.hint or "")]
    res = remote.run(["bash", "-c", 'grep -a "RESULT offsite " -- "$1" | tail -n 200',
                      "push-results", remote.host.log_file], what="the push results")
    return copies.judge(listings, copies.parse_push_results(res.stdout), datetime.now(UTC),
                         max_age, max_age_text)


@ops_task(help={
    "target": "only this offsite target (default: every target of the host)",
    "dry_run": "print what would be pushed and pruned, change nothing",
    "json": "print each target's result as JSON [{target, ok, detail, pushed, removed, "
            "kept}]",
})
def offsite_sync(c, target=None, dry_run=False, json=False):
    """Push every good backup an offsite target lacks, then apply the target's retention.

    The host does it (it holds the store's credentials), under the backup's lock:
    each backup encrypted with age to offsite_recipients, its sha256 and the
    encrypted object's recorded beside it. Idempotent: a second run pushes nothing.
    A target is pruned only when every push to it in this run succeeded.
    """
    from aimms_ops.offsite import copies, sync

    if target == "":
        raise OpsError("--target= names no target",
                       "leave --target out for every target, or give --target=NAME")
    with connect(c) as remote:
        if target is not None:
            copies.require(remote.host, target)
        with output.live() as shown:
            results = sync.sync(remote, target, dry_run, on_log=None, on_event=shown)
    failed = [r for r in results if not r.ok]
    if json:
        output.print_json([{
            "target": r.target, "ok": r.ok, "detail": r.detail, "dry_run": dry_run,
            "pushed": list(r.pushed),
            "removed": [{"name": n, "reason": why} for n, why in r.removed],
            "kept": [{"name": n, "reason": why} for n, why in r.kept]} for r in results])
        if failed:
            raise Exit(code=1)
        return
    rows = []
    for r in results:
        rows += [[r.target, "push", name, "would push" if dry_run else "pushed"]
                 for name in r.pushed]
        rows += [[r.target, "remove", name, reason] for name, reason in r.removed]
    if rows:
        output.table(["target", "action", "backup", "why"], rows,
                     title=f"offsite-sync of {remote.name}" + (" (dry run)" if dry_run else ""))
    for r in results:
        if r.ok:
            what = "nothing to change" if not r.pushed and not r.removed else (
                f"{len(r.pushed)} {'to push' if dry_run else 'pushed'}, "
                f"{len(r.removed)} {'to remove' if dry_run else 'removed'}")
            output.note(f"{r.target}: {what}" + (f" ({r.detail})" if r.detail and not dry_run
                                                  else ""))
    if failed:
        raise Exit("error: " + "; ".join(f"offsite {r.target} failed: {r.detail}"
                                        for r in failed)
                   + " (the local backups are kept; fix it and run fab offsite-sync again)",
                   code=1)

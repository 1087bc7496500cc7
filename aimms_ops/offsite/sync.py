"""``offsite-sync``: the host pushes what a target lacks, then applies its retention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aimms_ops.core.errors import ConnectionLost
from aimms_ops.host.events import Event, Events
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.offsite.copies import RUN_SCRIPT, require, run_args, script_error


@dataclass(frozen=True)
class TargetSync:
    target: str
    ok: bool
    detail: str
    pushed: tuple[str, ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    kept: tuple[tuple[str, str], ...] = ()


def parse_sync(found: Events, targets: list[str]) -> list[TargetSync]:
    """The events of ``offsite-run.sh sync`` (pure), one TargetSync per target."""
    pushed: dict[str, list[str]] = {t: [] for t in targets}
    removed: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    kept: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    results: dict[str, tuple[bool, str]] = {}
    for e in found.all:
        target = str(e.get("target", ""))
        if target not in pushed:
            continue
        name, reason = str(e.get("name", "")), str(e.get("reason", ""))
        action = e.get("action") if e["event"] == "offsite" else None
        if action == "push":
            pushed[target].append(name)
        elif action == "remove":
            removed[target].append((name, reason))
        elif action == "keep":
            kept[target].append((name, reason))
        elif e["event"] == "offsite-result":
            results[target] = (e.get("ok") is True, str(e.get("detail", "")))
    out = []
    for t in targets:
        ok, detail = results.get(t, (False, "no result reported (see fab logs)"))
        out.append(TargetSync(t, ok, detail, tuple(pushed[t]), tuple(removed[t]),
                              tuple(kept[t])))
    return out


def sync(remote: HostRemote, target: str | None = None, dry_run: bool = False,
         on_log: Callable[[str], None] | None = None,
         on_event: Callable[[Event], None] | None = None) -> list[TargetSync]:
    """Push every good local backup a target lacks (and its retention keeps), then prune;
    ``on_event``: each event as it comes (a wait for the backup lock, a push's progress)."""
    targets = [t.name for t in require(remote.host, target)]
    args = [*run_args(remote.host), "sync", *(["--target", target] if target else []),
            *(["--dry-run"] if dry_run else [])]
    found = Events(on_event)
    try:
        res = remote.run_script(RUN_SCRIPT, *args, on_stderr=on_log, on_stdout=found.feed)
    except ConnectionLost as exc:
        raise ConnectionLost(f"{exc.message} (the sync may go on on the host)",
                             "run the same offsite-sync again: it pushes what is missing",
                             code=exc.code) from None
    results = parse_sync(found, targets)
    if not res.ok and found.last("offsite-result") is None:
        raise script_error(remote, res)
    return results

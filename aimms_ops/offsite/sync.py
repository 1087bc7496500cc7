"""``offsite-sync``: the host pushes what a target lacks, then applies its retention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aimms_ops.core.errors import ConnectionLost
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


def parse_sync(stdout: str, targets: list[str]) -> list[TargetSync]:
    """The report lines of ``offsite-run.sh sync`` (pure), one TargetSync per target."""
    pushed: dict[str, list[str]] = {t: [] for t in targets}
    removed: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    kept: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    results: dict[str, tuple[bool, str]] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        target, _, rest = value.partition(" ")
        if target not in pushed:
            continue
        name, _, reason = rest.partition(" ")
        if key == "offsite.push":
            pushed[target].append(name)
        elif key == "offsite.remove":
            removed[target].append((name, reason))
        elif key == "offsite.keep":
            kept[target].append((name, reason))
        elif key == "offsite.result":
            ok = rest.startswith("ok")
            results[target] = (ok, rest[3:].strip() if ok else rest.removeprefix("failed:")
                               .strip())
    out = []
    for t in targets:
        ok, detail = results.get(t, (False, "no result reported (see fab logs)"))
        out.append(TargetSync(t, ok, detail, tuple(pushed[t]), tuple(removed[t]),
                              tuple(kept[t])))
    return out


def sync(remote: HostRemote, target: str | None = None, dry_run: bool = False,
         on_log: Callable[[str], None] | None = None) -> list[TargetSync]:
    """Push every good local backup a target lacks (and its retention keeps), then prune."""
    targets = [t.name for t in require(remote.host, target)]
    args = [*run_args(remote.host), "sync", *(["--target", target] if target else []),
            *(["--dry-run"] if dry_run else [])]
    try:
        res = remote.run_script(RUN_SCRIPT, *args, on_stderr=on_log)
    except ConnectionLost as exc:
        raise ConnectionLost(f"{exc.message} (the sync may go on on the host)",
                             "run the same offsite-sync again: it pushes what is missing",
                             code=exc.code) from None
    results = parse_sync(res.stdout, targets)
    if not res.ok and not any("offsite.result=" in ln for ln in res.stdout.splitlines()):
        raise script_error(remote, res)
    return results

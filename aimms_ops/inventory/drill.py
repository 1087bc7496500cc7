"""The drill and the metrics in the inventory: a host's ``drill:`` and ``metrics_dir:``.

- ``drill:`` (optional) ``schedule`` (``weekly``, which is Sunday 05:00 in the host's
  time, or a cron schedule; without it ``fab drill`` runs only by hand), ``target`` (an
  offsite target's name, or ``host``; default: the first offsite target, else the host)
  and ``identity`` (the path, on the host, of an age identity whose public key is one of
  ``offsite_recipients``: the drill decrypts the copy there);
- ``metrics_dir:`` (optional, off by default) the dir on the host where the backup and
  the drill write their Prometheus textfile metrics, the one node_exporter's textfile
  collector reads (``--collector.textfile.directory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aimms_ops.core.errors import key_path, problem

#: What ``schedule: weekly`` means: after the nightly backup and the weekly verify.
WEEKLY = "0 5 * * 0"
_KEYS = ("schedule", "target", "identity")


@dataclass(frozen=True)
class Drill:
    """A host's drill settings."""

    schedule: str | None = None
    target: str | None = None
    identity: str | None = None


def _abs_path(v: Any) -> bool:
    return (isinstance(v, str) and v.startswith("/") and "\n" not in v and "\x00" not in v
            and ".." not in v.split("/") and len(v) < 1024)


def parse(data: Mapping[str, Any], key: str, targets: list[str],
          is_schedule: Any) -> tuple[Drill | None, str | None, list[str]]:
    """(the drill, the metrics dir, the problems) of one host's mapping ``data``;
    ``targets``: its offsite targets' names; ``is_schedule``: the cron schedule test."""
    problems: list[str] = []
    metrics_dir = data.get("metrics_dir")
    if metrics_dir is not None and not _abs_path(metrics_dir):
        problems.append(problem(f"{key}.metrics_dir", "the absolute path of a dir on the "
                                "host (node_exporter's textfile collector dir)", metrics_dir))
        metrics_dir = None
    raw = data.get("drill")
    if raw is None:
        return None, metrics_dir, problems
    where = f"{key}.drill"
    if not isinstance(raw, dict):
        problems.append(problem(where, "a mapping with schedule, target, identity", raw))
        return None, metrics_dir, problems
    for k in raw:
        if k not in _KEYS:
            problems.append(problem(key_path(where, k), "no such key; known keys: "
                                    + ", ".join(_KEYS), unknown=True))
    schedule = raw.get("schedule")
    if schedule == "weekly":
        schedule = WEEKLY
    elif schedule is not None and not is_schedule(schedule):
        problems.append(problem(f"{where}.schedule", 'weekly, or a cron schedule of five '
                                'fields like "0 5 * * 0"', schedule))
    target = raw.get("target")
    if target is not None and target not in (*targets, "host"):
        problems.append(problem(f"{where}.target", "host or one of the host's offsite "
                                f"targets ({', '.join(targets) or 'none'})", target))
    identity = raw.get("identity")
    if identity is not None and not _abs_path(identity):
        problems.append(problem(f"{where}.identity", "the absolute path of an age identity "
                                "file on the host", identity))
    return Drill(schedule, target, identity), metrics_dir, problems

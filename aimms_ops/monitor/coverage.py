"""Does a backup hold every database of the live cluster? For ``fab status`` and ``fab verify``.

The live cluster's databases come from the host program's facts (``postgres.databases``);
a backup's come from its dump (quick verify reads them on the host) or from the
``DATABASES`` line its run logged (status, which does not read the dump). template0
is never dumped, and the restore's side copies (``aimms_ops_old_*``, ``aimms_ops_new_*``)
are left out on purpose (aimms_ops/agent/cluster.py): neither counts as missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from aimms_ops.core.checks import Check, State
from aimms_ops.core.errors import shown
from aimms_ops.restore.source import db_name

#: Databases no backup holds on purpose (agent/cluster.py's SIDE_COPY_PATTERNS, and template0).
NOT_DUMPED = re.compile(r"^(?:template0|aimms_ops_(?:old|new)_.*)$", re.S)


def hex_names(text: str) -> list[str] | None:
    """Space-separated hex names (a log's DATABASES line); None when unreadable."""
    try:
        return [db_name(bytes.fromhex(h)) for h in text.split()]
    except ValueError:
        return None


def live_databases(facts: Mapping[str, Any]) -> list[str] | None:
    """The live cluster's databases from the host's facts (names that are not UTF-8 with
    surrogate escapes, as everywhere), or None when postgres gave no list."""
    names = facts.get("postgres.databases")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return list(names)


def missing(live: Iterable[str], backed_up: Iterable[str]) -> list[str]:
    """The live databases the backup lacks (pure), but those no backup holds on purpose."""
    have = set(backed_up)
    return sorted(d for d in live if d not in have and not NOT_DUMPED.match(d))


def check_coverage(name: str, live: list[str] | None, backed_up: list[str] | None,
                   backup: str) -> Check:
    """``name``: the databases of ``backup`` against the live cluster's (pure)."""
    if live is None:
        return Check(name, State.OK, "not compared: the live cluster's databases could not "
                     "be read (see fab check)")
    if backed_up is None:
        return Check(name, State.OK, f"{backup} logged no list of its databases (made "
                     "before aimms-ops recorded it): not compared")
    lacks = missing(live, backed_up)
    if lacks:
        names = ", ".join(shown(d) for d in lacks)
        return Check(name, State.WARNING,
                     f"{backup} lacks live database{'s' if len(lacks) > 1 else ''} {names}",
                     "created after that backup, or left out by it: make one now (fab "
                     "backup) and see fab logs")
    return Check(name, State.OK, f"{backup} holds every live database ({len(backed_up)})")

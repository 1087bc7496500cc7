"""Retention applied on the host: ``retention.decide``'s decision, nothing else, then the
orphans (a checksum or a pin whose backup is gone). The caller holds the backup lock, so
no pin can appear in between.

With an expected plan (the digest of the ``ACTION<TAB>NAME`` lines a dry run showed,
``fab prune``), nothing is removed unless the decision is still exactly that one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from typing import Callable, List

from aimms_ops.agent import dumpfacts
from aimms_ops.core import events, retention


class PruneError(Exception):
    """Retention could not run; nothing (more) was removed."""


def plan_digest(decisions: List[retention.Decision]) -> str:
    """The sha256 of the decision's ``ACTION<TAB>NAME`` lines (what fab prune confirms)."""
    text = "".join("%s\t%s\n" % (d.action, d.name) for d in decisions)
    return hashlib.sha256(text.encode()).hexdigest()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def prune(directory: str, policy: retention.Policy, *, dry_run: bool, expect: str,
          report: Callable[[str], None], log: Callable[[str], None]) -> None:
    """Apply retention to the backups in ``directory``, each decision a ``prune`` event
    for ``report``; PruneError when it cannot."""
    try:
        decisions = retention.decide(retention.scan(directory), policy, time.time())
    except OSError as e:
        raise PruneError("retention failed: cannot read %s: %s" % (directory, e.strerror)) \
            from e
    if expect and plan_digest(decisions) != expect:
        raise PruneError("the backups changed since the plan was shown: nothing was removed "
                         "(run the prune again)")
    for d in decisions:
        reason = " ".join(d.reason.split())
        report(events.line("prune", action=d.action, name=d.name, rule=d.rule, reason=reason))
        if d.keep or dry_run:
            continue
        base = os.path.join(directory, d.name)
        for path in (base, base + ".sha256", base + retention.PIN_SUFFIX):
            _remove(path)
        log("retention: removed %s (%s: %s)" % (d.name, d.rule, reason))
    orphans(directory, dry_run=dry_run, report=report)


def orphans(directory: str, *, dry_run: bool, report: Callable[[str], None]) -> None:
    """A checksum or a pin whose backup is gone is removed, and what the backup recorded
    of what it holds (``agent.dumpfacts``)."""
    for _, ext in retention.EXTENSIONS:
        for side in (".sha256", retention.PIN_SUFFIX):
            pattern = os.path.join(glob.escape(directory), "aimms_postgres_*" + ext + side)
            for path in sorted(glob.glob(pattern)):
                if os.path.exists(path[:-len(side)]):
                    continue
                report(events.line("prune", action="remove", name=os.path.basename(path),
                                   rule="orphan", reason="%s file without a backup"
                                   % side.lstrip(".")))
                if not dry_run:
                    _remove(path)
    dumpfacts.tidy(directory, dry_run)

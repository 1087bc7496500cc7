"""The backup dir commands of the host program: retention, the size-drop guard, pins,
and the units of the host's log, each from ``aimms_ops.core`` (the same code as the
operator's ``fab prune``, ``fab status`` and ``fab pin``).

- ``retention DIR NOW WITHIN_DAYS MIN_KEEP [RULES]``: ``keep|remove<TAB>NAME<TAB>RULE<TAB>
  REASON`` per backup, newest first (removes nothing: the backup script applies it);
- ``size-guard DIR NAME SIZE``: the median the guard compares with, when NAME's SIZE is
  less than half of it (nothing otherwise);
- ``pin DIR NAME BY REASON [--until EPOCH] [--locked]`` / ``unpin DIR NAME``;
- ``latest DIR``: the newest backup that is not a safety copy;
- ``offsite-plan DIR COPIES NOW WITHIN_DAYS MIN_KEEP [RULES]``: an offsite target's
  retention (the same decide, with the pins of the backups here);
- ``size BYTES`` / ``age SECONDS``: the one unit format.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List, Optional

from aimms_ops.core import events, retention, units
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy, LockOpenError

#: How long pin and unpin wait for a running backup or retention run.
PIN_WAIT_SECONDS = 60


def add_commands(sub: Any) -> None:
    p = sub.add_parser("retention", help="what retention keeps and removes")
    p.add_argument("dir")
    p.add_argument("now")
    p.add_argument("within_days")
    p.add_argument("min_keep")
    p.add_argument("rules", nargs="?", default="")
    p.set_defaults(run=decide)
    p = sub.add_parser("size-guard", help="the size-drop guard for a new backup")
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument("size", type=int)
    p.set_defaults(run=size_guard)
    for action in ("pin", "unpin"):
        p = sub.add_parser(action, help="%s a backup" % action)
        p.add_argument("dir")
        p.add_argument("name")
        if action == "pin":
            p.add_argument("by")
            p.add_argument("reason")
            p.add_argument("--until", type=float)
            p.add_argument("--locked", action="store_true",
                           help="the caller holds the backup lock")
        p.add_argument("--wait", type=float, default=PIN_WAIT_SECONDS,
                       help="wait at most this long for a backup or retention run")
        p.set_defaults(run=pin if action == "pin" else unpin)
    p = sub.add_parser("latest", help="the newest backup that is not a safety copy")
    p.add_argument("dir")
    p.set_defaults(run=latest)
    p = sub.add_parser("offsite-plan", help="what an offsite target keeps and removes")
    p.add_argument("dir")
    p.add_argument("copies", help="the target's copies: a file of NAME<TAB>... lines")
    p.add_argument("now")
    p.add_argument("within_days", type=int)
    p.add_argument("min_keep", type=int)
    p.add_argument("rules", nargs="?", default="")
    p.set_defaults(run=offsite_plan)
    p = sub.add_parser("size", help="bytes in the one size format")
    p.add_argument("bytes", type=float)
    p.set_defaults(run=lambda a: print(units.size(a.bytes)) or 0)
    p = sub.add_parser("age", help="seconds in the one age format")
    p.add_argument("seconds", type=float)
    p.set_defaults(run=lambda a: print(units.age(a.seconds)) or 0)


def decide(args: argparse.Namespace) -> int:
    argv = [args.dir, args.now, args.within_days, args.min_keep, args.rules]
    return retention.main(argv)


def regular_sizes(directory: str, skip: str) -> List[int]:
    """The sizes of the regular good backups (a checksum beside them, not a safety copy)
    in ``directory`` other than ``skip``, newest first."""
    found = []
    for b in retention.scan(directory):
        if b.name == skip or retention.is_safety(b.name) or not b.good:
            continue
        if _has_checksum(directory, b.name):
            found.append((b.mtime, b.name, b.size))
    return [size for _, _, size in sorted(found, reverse=True)]


def newest_regular(directory: str) -> Optional[str]:
    """What ``latest`` means: the newest backup that is not a safety copy of a restore
    or a rebuild (None: there is none)."""
    regular = [b for b in retention.scan(directory) if not retention.is_safety(b.name)]
    if not regular:
        return None
    return max(regular, key=lambda b: (b.mtime, b.name)).name


def latest(args: argparse.Namespace) -> int:
    """The newest backup that is not a safety copy (exit 1: none)."""
    name = newest_regular(args.dir)
    if name is None:
        return 1
    print(name)
    return 0


def _has_checksum(directory: str, name: str) -> bool:
    try:
        return os.path.getsize(os.path.join(directory, name + ".sha256")) > 0
    except OSError:
        return False


def offsite_plan(args: argparse.Namespace) -> int:
    """``keep|remove NAME REASON`` lines, newest first: retention.decide_copies with the
    target's policy over its copies and the good backups here (a checksum beside them)."""
    try:
        policy = retention.Policy(within_days=args.within_days, min_keep=args.min_keep,
                                  **retention.parse_rules(args.rules))
        with open(args.copies, encoding="utf-8", errors="replace") as fh:
            copies = [line.split("\t", 1)[0] for line in fh.read().splitlines()]
    except (ValueError, OSError) as e:
        sys.stderr.write("aimms-ops: %s\n" % e)
        return 64
    now = float(args.now) if args.now else time.time()
    for d in copies_plan(args.dir, copies, policy, now):
        print("%s %s %s" % (d.action, d.name, " ".join(d.reason.split())))
    return 0


def copies_plan(directory: str, copies: List[str], policy: retention.Policy,
                now: float) -> List[retention.Decision]:
    """An offsite target's retention, newest first: retention.decide_copies over its
    ``copies`` and the good backups here (a checksum beside them), with their pins."""
    local = [b for b in retention.scan(directory) if _has_checksum(directory, b.name)]
    return retention.decide_copies(local, copies, policy, now)


def size_guard(args: argparse.Namespace) -> int:
    median = retention.size_drop(args.size, regular_sizes(args.dir, args.name))
    if median is not None:
        print(int(median))
    return 0


def _backup_path(directory: str, name: str) -> str:
    if not retention.NAME_RE.match(name):
        raise _Refused(64, "not a backup name: %s" % name)
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise _Refused(66, "no backup named %s in %s" % (name, directory))
    return path


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _under_backup_lock(directory: str, what: str, locked: bool, wait: float, fn: Any) -> int:
    try:
        if locked:
            return int(fn())
        lk = Lock(os.path.join(directory, LOCK_FILES["backup"]), what)
        try:
            lk.acquire(0)
        except LockBusy as busy:
            # The session sees what it waits for, at once (core.events).
            sys.stdout.write(events.line("wait", **{
                "for": "a backup or retention run", "up_to": wait,
                "holder": core_lock.held_by(busy.holders)}) + "\n")
            sys.stdout.flush()
            lk.acquire(wait)
        with lk:
            return int(fn())
    except _Refused as e:
        sys.stderr.write("%s\n" % e)
        return e.status
    except LockBusy as busy:
        sys.stderr.write("a backup or retention run holds %s (%s); try again when it ends\n"
                         % (busy.path, core_lock.held_by(busy.holders)))
        return core_lock.BUSY_STATUS
    except LockOpenError as e:
        sys.stderr.write("%s\n" % e)
        return core_lock.OPEN_STATUS


def write_pin(path: str, by: str, reason: str, until: float = 0) -> None:
    """``PATH.pin`` (retention.pin_text), atomically, 0600; the reason is one line."""
    reason = " ".join(reason.replace("\t", " ").splitlines())
    text = retention.pin_text(by, time.time(), reason, until or None)
    tmp = path + retention.PIN_SUFFIX + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path + retention.PIN_SUFFIX)


def pin(args: argparse.Namespace) -> int:
    def run() -> int:
        path = _backup_path(args.dir, args.name)
        try:
            write_pin(path, args.by, args.reason, args.until or 0)
        except OSError as e:
            raise _Refused(1, "cannot write %s.pin: %s" % (path, e.strerror)) from e
        print("pinned=%s" % args.name)
        return 0
    return _under_backup_lock(args.dir, "pin", args.locked, args.wait, run)


def pin_safety_copy(directory: str, name: str, days: int, by: str) -> None:
    """Pin the safety copy ``name`` for ``days`` (the caller, the backup run that made it,
    holds the backup lock); a backup that is not a safety copy is left as it is. OSError
    when the pin cannot be written."""
    m = retention.NAME_RE.match(name)
    if not m or not retention.is_safety(name) or days <= 0:
        return
    write_pin(os.path.join(directory, name), by,
              "safety copy taken before a %s" % m.group(3).split("-", 1)[1],
              time.time() + days * 86400)


def unpin(args: argparse.Namespace) -> int:
    def run() -> int:
        path = _backup_path(args.dir, args.name) + retention.PIN_SUFFIX
        was = os.path.exists(path)
        if was:
            os.unlink(path)
        print("unpinned=%s" % args.name)
        print("was=%d" % was)
        return 0
    return _under_backup_lock(args.dir, "unpin", False, args.wait, run)

"""The lock commands of the host program (the model: ``aimms_ops.core.lock``).

- ``lock PATH --fd N --pid PID --what WHAT [--shared] [--wait S]``: lock a script's open
  descriptor N of PATH for it; prints the note file (the script removes it on exit).
  Exit 75 with ``held by HOLDERS`` on stdout when still held after S seconds, 73 when it
  cannot be locked.
- ``holders PATH [--pids]``: the notes (or pids) of the live holders, one per line.
- ``clean-killed DIR --pid PID``: what a run killed with SIGKILL left in the backup dir
  (temporary backups, notes of dead holders, side dirs of dead pids); prints the names.
- ``hold DIR OWNER``: the cluster lock, exclusive, for as long as stdin stays open
  (rebuild-volume); its ``facts`` event (core.events) says ``locked`` once it holds it
  (``core.lock.HELD``), or ``busy`` (KIND) and ``holder``, with 75.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from typing import Any, List

from aimms_ops.core import events
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy, LockOpenError


def add_commands(sub: Any) -> None:
    p = sub.add_parser("lock", help="lock a script's open descriptor of a lock file")
    p.add_argument("path")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--what", required=True)
    p.add_argument("--shared", action="store_true")
    p.add_argument("--wait", type=float, default=0)
    p.set_defaults(run=lock_fd)
    p = sub.add_parser("holders", help="the live holders of a lock")
    p.add_argument("path")
    p.add_argument("--pids", action="store_true")
    p.set_defaults(run=show_holders)
    p = sub.add_parser("clean-killed", help="remove what a killed run left")
    p.add_argument("dir")
    p.add_argument("--pid", type=int, required=True)
    p.set_defaults(run=clean_killed)
    p = sub.add_parser("hold", help="hold the cluster lock while stdin is open")
    p.add_argument("dir")
    p.add_argument("owner")
    p.set_defaults(run=hold)


def lock_fd(args: argparse.Namespace) -> int:
    lk = Lock(args.path, args.what, shared=args.shared, fd=args.fd, pid=args.pid)
    try:
        lk.acquire(args.wait)
    except LockBusy as busy:
        print("held by %s" % core_lock.held_by(busy.holders))
        return core_lock.BUSY_STATUS
    except LockOpenError as e:
        sys.stderr.write("aimms-ops: %s\n" % e)
        return core_lock.OPEN_STATUS
    print(lk.note)
    return 0


def show_holders(args: argparse.Namespace) -> int:
    if args.pids:
        for pid in core_lock.live_pids(args.path):
            print(pid)
    else:
        for note in core_lock.holders(args.path):
            print(note)
    return 0


#: What a backup run writes while it works: removed when its run is gone.
TEMP_GLOBS = (".aimms_postgres_*.tmp", "aimms_postgres_*.sha256.tmp")
#: The backup run's side dirs: aimms-backup.PID.XXXXXX in the temporary dir.
SIDE_DIR_PREFIX = "aimms-backup."


def killed_leftovers(directory: str, pid: int, tmpdir: str) -> List[str]:
    """Remove what a killed run left (the caller holds the backup lock: no other run is
    under way); return what was removed."""
    gone = []
    for pattern in TEMP_GLOBS:
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            if os.path.isfile(path):
                try:
                    os.unlink(path)
                    gone.append(os.path.basename(path))
                except OSError:
                    pass
    for name in (LOCK_FILES["backup"], LOCK_FILES["cluster"]):
        gone += core_lock.stale_notes(os.path.join(directory, name), keep=pid)
    uid = os.getuid()
    for path in glob.glob(os.path.join(glob.escape(tmpdir), SIDE_DIR_PREFIX + "*")):
        owner = os.path.basename(path)[len(SIDE_DIR_PREFIX):].split(".", 1)[0]
        try:
            mine = os.stat(path).st_uid == uid and os.path.isdir(path)
        except OSError:
            continue
        if mine and owner.isdigit() and not core_lock.alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def clean_killed(args: argparse.Namespace) -> int:
    gone = killed_leftovers(args.dir, args.pid, os.environ.get("TMPDIR") or tempfile.gettempdir())
    if gone:
        print(" ".join(gone))
    return 0


def hold(args: argparse.Namespace) -> int:
    try:
        os.makedirs(args.dir, exist_ok=True)
    except OSError as e:
        sys.stderr.write("aimms-ops: cannot create %s: %s\n" % (args.dir, e.strerror))
        return 1
    lk = Lock(os.path.join(args.dir, LOCK_FILES["cluster"]), args.owner)
    try:
        lk.acquire(0)
    except LockBusy as busy:
        kind = busy.holders[0].split(" ", 1)[0] if busy.holders else "unknown"
        print(events.facts_line("hold", {
            "busy": "rebuild" if kind == "rebuild-volume" else kind,
            "holder": core_lock.held_by(busy.holders)}))
        return core_lock.BUSY_STATUS
    except LockOpenError as e:
        sys.stderr.write("aimms-ops: %s\n" % e)
        return 1
    with lk:
        print(core_lock.HELD, flush=True)
        while sys.stdin.buffer.read(65536):
            pass
    return 0

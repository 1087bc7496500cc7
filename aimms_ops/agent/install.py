"""The host program's small writing commands, for install-backups and rebuild-volume:

- ``ensure-dirs BACKUP_DIR LOG_FILE``: the backup dir 0700 and the log 0600;
- ``install-file PATH MODE [KEEP_OLD]``: stdin written to PATH atomically with MODE; with
  KEEP_OLD=1 an existing different file is kept as ``PATH.bak-UTCSTAMP`` first
  (its ``facts`` event, core.events, says ``kept``: PATH.bak-…);
- ``rebuild-record append STATE_FILE LINE...`` (``UTC_TIMESTAMP LINE`` per line), ``close
  STATE_FILE DEST`` (the state file moved, when there is one), ``audit LOG_FILE LINE``
  (``UTC_TIMESTAMP LINE from=SSH_CLIENT_ADDRESS``);
- ``wait-postgres PROJECT SERVICE SUPERUSER TIMEOUT``: until the service's postgres really
  accepts connections (``agent/waiting.py``).

A failure is one line on stderr and status 73 (cannot create).
"""

import argparse
import os
import shutil
import sys
import time
from typing import Any

from aimms_ops.agent import waiting
from aimms_ops.agent.hostfacts import now_utc
from aimms_ops.core import events

CANNOT_CREATE = 73


def add_commands(sub: Any) -> None:
    p = sub.add_parser("ensure-dirs", help="the backup dir 0700 and the log 0600")
    p.add_argument("dir")
    p.add_argument("log")
    p.set_defaults(run=ensure_dirs)
    p = sub.add_parser("install-file", help="stdin written to PATH atomically with MODE")
    p.add_argument("path")
    p.add_argument("mode")
    p.add_argument("keep", nargs="?", default="0")
    p.set_defaults(run=install_file)
    p = sub.add_parser("rebuild-record", help="the records of rebuild-volume")
    p.add_argument("action", choices=("append", "close", "audit"))
    p.add_argument("file")
    p.add_argument("lines", nargs="*")
    p.set_defaults(run=rebuild_record)
    waiting.add_commands(sub)


def _fail(e: OSError) -> int:
    sys.stderr.write("aimms-ops: %s\n" % e)
    return CANNOT_CREATE


def _mkdir_for(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def ensure_dirs(args: argparse.Namespace) -> int:
    try:
        os.makedirs(args.dir, exist_ok=True)
        os.chmod(args.dir, 0o700)
        _mkdir_for(args.log)
        with open(args.log, "ab"):
            pass
        os.chmod(args.log, 0o600)
    except OSError as e:
        return _fail(e)
    return 0


def _same(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def install_file(args: argparse.Namespace) -> int:
    path = args.path
    try:
        mode = int(args.mode, 8)
    except ValueError:
        sys.stderr.write("aimms-ops: not a file mode: %s\n" % args.mode)
        return 64
    os.umask(0o077)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        _mkdir_for(path)
        with open(tmp, "wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        if args.keep == "1" and os.path.isfile(path) and not _same(tmp, path):
            old = "%s.bak-%s" % (path, time.strftime("%Y%m%d_%H%M%S", time.gmtime()))
            shutil.copy2(path, old)
            print(events.facts_line("install-file", {"kept": old}), flush=True)
        os.replace(tmp, path)
    except OSError as e:
        return _fail(e)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return 0


def rebuild_record(args: argparse.Namespace) -> int:
    os.umask(0o077)
    try:
        if args.action == "append":
            _mkdir_for(args.file)
            ts = now_utc()
            with open(args.file, "a", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write("".join("%s %s\n" % (ts, line) for line in args.lines))
        elif args.action == "close":
            if len(args.lines) != 1:
                sys.stderr.write("aimms-ops: rebuild-record close STATE_FILE DEST\n")
                return 64
            if os.path.lexists(args.file):
                os.replace(args.file, args.lines[0])
        else:
            if len(args.lines) != 1:
                sys.stderr.write("aimms-ops: rebuild-record audit LOG_FILE LINE\n")
                return 64
            _mkdir_for(args.file)
            client = os.environ.get("SSH_CLIENT", "").split(" ", 1)[0]
            with open(args.file, "a", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write("%s %s from=%s\n" % (now_utc(), args.lines[0], client))
    except OSError as e:
        return _fail(e)
    return 0

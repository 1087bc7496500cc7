"""What the host holds of aimms-ops' own, as ``key=value`` lines (multi-line values
base64-encoded); read-only:

- ``status-facts PROJECT SERVICE BACKUP_SCRIPT CONF VERIFY_SCRIPT RECORD LOG [SUPERUSER]``:
  what ``fab status`` and ``fab doctor`` need beyond ``facts`` and ``list-backups``;
- ``install-state SCRIPT CONF BACKUP_DIR LOG [VERIFY_SCRIPT RECORD PROJECT SERVICE]``: what
  ``fab install-backups`` needs to change only what differs.
"""

import argparse
import collections
import os
import re
import shutil
import sys
import time
from typing import Any, Deque

from aimms_ops.agent import cluster
from aimms_ops.agent.hostfacts import (
    b64,
    compressor_facts,
    crontab_facts,
    emit,
    env_facts,
    file_facts,
    inspect,
    login,
    mode_of,
    readable_file,
    run,
)
from aimms_ops.dump.beside import NEW_PREFIX, OLD_PREFIX

#: The log's lines of each run that status reads: its result, its start (a run that
#: died) and what it dumped (the newest backup's databases).
RESULT_RE = re.compile(rb"^[^ ]+ (backup|verify)\[[0-9]+\] (RESULT|START|DATABASES) ")
PING_RE = re.compile(rb"^[^ ]+ (backup|verify)\[[0-9]+\] ping ")

#: Every database with its size and the setting a restore leaves on a side copy
#: (aimms_ops/dump/beside.py): "NAME SIZE SETTING", names and setting in hex.
DATABASES_SQL = (
    "SELECT encode(textsend(d.datname), 'hex'), pg_database_size(d.oid), "
    "coalesce(encode(textsend((SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c "
    "WHERE s.setdatabase = d.oid AND s.setrole = 0 AND c LIKE 'aimms_ops.replaced=%')), "
    "'hex'), '-') FROM pg_database d")


def side_copies(rows: bytes) -> bytes:
    """The lines of DATABASES_SQL's output that are databases restores set aside or left
    half-built."""
    prefixes = (NEW_PREFIX.hex().encode(), OLD_PREFIX.hex().encode())
    return b"".join(line + b"\n" for line in rows.splitlines() if line.startswith(prefixes))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("status-facts", help="what status and doctor read of the host")
    for name in ("project", "service", "script", "conf", "verify", "record", "log"):
        p.add_argument(name)
    p.add_argument("superuser", nargs="?", default="postgres")
    p.set_defaults(run=status_facts)
    p = sub.add_parser("install-state", help="what install-backups finds installed")
    for name in ("script", "conf", "dir", "log"):
        p.add_argument(name)
    for name in ("verify", "record", "project", "service"):
        p.add_argument(name, nargs="?", default="")
    p.add_argument("--file", nargs=2, action="append", default=[], metavar=("KEY", "PATH"),
                   help="KEY.sha256= and KEY.mode= of one more file")
    p.set_defaults(run=install_state)


def _log_facts(path: str) -> None:
    results: Deque[bytes] = collections.deque(maxlen=120)
    tail: Deque[bytes] = collections.deque(maxlen=5000)
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                line += b"\n"
            tail.append(line)
            if RESULT_RE.match(line):
                results.append(line)
    lines = list(tail)
    emit("log.results_b64", b64(b"".join(results)))
    emit("log.tail_b64", b64(b"".join(lines[-60:])))
    emit("log.pings_b64", b64(b"".join([ln for ln in lines if PING_RE.match(ln)][-10:])))


def status_facts(args: argparse.Namespace) -> int:
    emit("now.epoch", str(int(time.time())))
    emit("now.utc_offset", str(time.localtime().tm_gmtoff))  # cron's clock: the host's
    file_facts("script", args.script)
    file_facts("conf", args.conf)
    file_facts("verify", args.verify)
    record = readable_file(args.record)
    if record is not None:
        emit("record.b64", b64(record))
    crontab_facts()
    if shutil.which("pgrep"):
        up = any(run(["pgrep", "-x", name])[0] == 0 for name in ("cron", "crond"))
        emit("cron.daemon", "1" if up else "0")
    if os.path.isfile(args.log):
        emit("log.exists", "1")
        try:
            _log_facts(args.log)
        except OSError:
            pass
    else:
        emit("log.exists", "0")
    cid = cluster.container(args.project, args.service, stopped=True)
    if cid:
        inspect(cid, [("container.exit_code", ".State.ExitCode"),
                      ("container.finished_at", ".State.FinishedAt"),
                      ("container.error", ".State.Error")])
        emit("container.log_b64", b64(run(["docker", "logs", "--tail", "15", cid],
                                          merged=True)[1]))
    running = cluster.container(args.project, args.service)
    if running:
        out = run(["docker", "exec", running, "psql", "-X", "-A", "-t", "-F", " ", "-U",
                   args.superuser, "-d", "template1", "-c", DATABASES_SQL])[1]
        emit("restore.copies_b64", b64(side_copies(out)))
    # Restores and deep verifies read the dump with python3 (this program).
    emit("python3.version", "%d.%d" % sys.version_info[:2])
    compressor_facts()
    env_facts()
    return 0


def install_state(args: argparse.Namespace) -> int:
    file_facts("script", args.script)
    file_facts("conf", args.conf)
    if args.verify:
        file_facts("verify", args.verify)
    for key, path in args.file:
        file_facts(key, path)
    emit("offsite.missing", " ".join(t for t in ("rclone", "age") if not shutil.which(t)))
    emit("dir.mode", mode_of(args.dir) if os.path.isdir(args.dir) else "")
    emit("log.mode", mode_of(args.log) if os.path.isfile(args.log) else "")
    crontab_facts()
    compressor_facts()
    env_facts()
    emit("env.user", login())
    record = readable_file(args.record)
    if record is not None:
        emit("record.b64", b64(record))
    if args.project:
        cid = cluster.container(args.project, args.service, stopped=True)
        emit("container.id", cid)
        if cid:
            inspect(cid, [("container.name", ".Name"), ("container.image", ".Config.Image")])
    return 0

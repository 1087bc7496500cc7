"""What the host holds of aimms-ops' own, each command's as one ``facts`` event
(``aimms_ops.core.events``); read-only:

- ``status-facts PROJECT SERVICE BACKUP_SCRIPT CONF VERIFY_SCRIPT RECORD LOG [SUPERUSER]
  [--rebuild-state FILE]``: what ``fab status`` and ``fab doctor`` need beyond ``facts``
  and ``list-backups`` (the three in one start of the program: ``batch``, agent/main.py);
  the state file of an unfinished rebuild-volume too;
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
from typing import Any, Deque, Dict, List

from aimms_ops.agent import cluster
from aimms_ops.agent.hostfacts import (
    Report,
    compressor_facts,
    crontab_facts,
    env_facts,
    file_facts,
    inspect,
    login,
    mode_of,
    readable_file,
    run,
    text,
)
from aimms_ops.dump.beside import NEW_PREFIX, OLD_PREFIX

#: The log's lines of each run that status reads: its result, its start (a run that
#: died) and what it dumped (the newest backup's databases).
RESULT_RE = re.compile(rb"^[^ ]+ (backup|verify)\[[0-9]+\] (RESULT|START|DATABASES) ")
PING_RE = re.compile(rb"^[^ ]+ (backup|verify)\[[0-9]+\] ping ")

#: Every database with its size and the setting a restore leaves on a side copy
#: (aimms_ops/dump/beside.py): "NAME SIZE SETTING", name and setting in hex.
DATABASES_SQL = (
    "SELECT encode(textsend(d.datname), 'hex'), pg_database_size(d.oid), "
    "coalesce(encode(textsend((SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c "
    "WHERE s.setdatabase = d.oid AND s.setrole = 0 AND c LIKE 'aimms_ops.replaced=%')), "
    "'hex'), '-') FROM pg_database d")


def side_copies(rows: bytes) -> List[Dict[str, Any]]:
    """The databases of DATABASES_SQL's output that restores set aside or left
    half-built: ``name``, ``size`` and ``setting`` (null: none)."""
    prefixes = (NEW_PREFIX.hex().encode(), OLD_PREFIX.hex().encode())
    out: List[Dict[str, Any]] = []
    for line in rows.splitlines():
        parts = line.split(b" ")
        if not line.startswith(prefixes) or len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            name = bytes.fromhex(parts[0].decode("ascii"))
            setting = None if parts[2] == b"-" else bytes.fromhex(parts[2].decode("ascii"))
        except ValueError:
            continue
        out.append({"name": text(name), "size": int(parts[1]),
                    "setting": None if setting is None else text(setting)})
    return out


def add_commands(sub: Any) -> None:
    p = sub.add_parser("status-facts", help="what status and doctor read of the host")
    for name in ("project", "service", "script", "conf", "verify", "record", "log"):
        p.add_argument(name)
    p.add_argument("superuser", nargs="?", default="postgres")
    p.add_argument("--rebuild-state", default="", metavar="FILE",
                   help="the state file of an unfinished rebuild-volume, read if it exists")
    p.set_defaults(run=status_facts)
    p = sub.add_parser("install-state", help="what install-backups finds installed")
    for name in ("script", "conf", "dir", "log"):
        p.add_argument(name)
    for name in ("verify", "record", "project", "service"):
        p.add_argument(name, nargs="?", default="")
    p.add_argument("--file", nargs=2, action="append", default=[], metavar=("KEY", "PATH"),
                   help="KEY.sha256 and KEY.mode of one more file")
    p.set_defaults(run=install_state)


def _log_facts(out: Report, path: str) -> None:
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
    out.put("log.results", b"".join(results))
    out.put("log.tail", b"".join(lines[-60:]))
    out.put("log.pings", b"".join([ln for ln in lines if PING_RE.match(ln)][-10:]))


def status_facts(args: argparse.Namespace) -> int:
    out = Report("status-facts")
    out.put("now.epoch", str(int(time.time())))
    out.put("now.utc_offset", str(time.localtime().tm_gmtoff))  # cron's clock: the host's
    file_facts(out, "script", args.script)
    file_facts(out, "conf", args.conf)
    file_facts(out, "verify", args.verify)
    record = readable_file(args.record)
    if record is not None:
        out.put("record", record)
    crontab_facts(out)
    if shutil.which("pgrep"):
        up = any(run(["pgrep", "-x", name])[0] == 0 for name in ("cron", "crond"))
        out.put("cron.daemon", "1" if up else "0")
    if os.path.isfile(args.log):
        out.put("log.exists", "1")
        try:
            _log_facts(out, args.log)
        except OSError:
            pass
    else:
        out.put("log.exists", "0")
    cid = cluster.container(args.project, args.service, stopped=True)
    if cid:
        inspect(out, cid, [("container.exit_code", "State.ExitCode"),
                           ("container.finished_at", "State.FinishedAt"),
                           ("container.error", "State.Error")])
        out.put("container.log", run(["docker", "logs", "--tail", "15", cid], merged=True)[1])
    running = cluster.container(args.project, args.service)
    if running:
        rows = run(["docker", "exec", running, "psql", "-X", "-A", "-t", "-F", " ", "-U",
                    args.superuser, "-d", "template1", "-c", DATABASES_SQL])[1]
        out.put("restore.copies", side_copies(rows))
    state = readable_file(args.rebuild_state)
    if state is not None:
        out.put("rebuild.state", state)
    # Restores and deep verifies read the dump with python3 (this program).
    out.put("python3.version", "%d.%d" % sys.version_info[:2])
    compressor_facts(out)
    env_facts(out)
    return out.send()


def install_state(args: argparse.Namespace) -> int:
    out = Report("install-state")
    file_facts(out, "script", args.script)
    file_facts(out, "conf", args.conf)
    if args.verify:
        file_facts(out, "verify", args.verify)
    for key, path in args.file:
        file_facts(out, key, path)
    out.put("offsite.missing", " ".join(t for t in ("rclone", "age") if not shutil.which(t)))
    out.put("dir.mode", mode_of(args.dir) if os.path.isdir(args.dir) else "")
    out.put("log.mode", mode_of(args.log) if os.path.isfile(args.log) else "")
    crontab_facts(out)
    compressor_facts(out)
    env_facts(out)
    out.put("env.user", login())
    record = readable_file(args.record)
    if record is not None:
        out.put("record", record)
    if args.project:
        cid = cluster.container(args.project, args.service, stopped=True)
        out.put("container.id", cid)
        if cid:
            inspect(out, cid, [("container.name", "Name"), ("container.image", "Config.Image")])
    return out.send()

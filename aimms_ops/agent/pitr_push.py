"""``pitr-push``: the PITR repository copied to an offsite target with rclone, every
minute from cron (and after each PITR backup, with ``--sync``).

The postgres container has no network, so pgBackRest cannot reach the target itself:
the host copies the repository's files, which pgBackRest has already encrypted
(AES-256, the passphrase stays on the host), into ``pitr/`` beside the target's dump
copies. The copy only adds files; ``--sync`` (after a backup, whose expire removed old
ones) also removes what the repository no longer holds, and refuses when the repository
looks gone (no backup.info), so that a wiped host never wipes its offsite copy. What
each run did is kept in ``.pitr-push.state`` in the backup dir, for ``fab status``.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from typing import Any, Dict

from aimms_ops.agent.job import Job, JobFailed
from aimms_ops.agent.jobsettings import USAGE_STATUS
from aimms_ops.agent.offsite_targets import OffsiteError, Target, load, reason
from aimms_ops.agent.pitr import job_settings
from aimms_ops.core import pitr
from aimms_ops.core.lock import Lock, LockBusy

STATE = ".pitr-push.state"
LOCK = ".pitr-push.lock"
#: Where the repository goes on the target, beside the dump copies.
FOLDER = "pitr"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("pitr-push", help="the PITR repository copied to an offsite target")
    p.add_argument("--config", required=True, help="the backup script's settings file")
    p.add_argument("--target", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--sync", action="store_true", help="also remove what the repository "
                   "no longer holds")
    p.add_argument("--report", action="store_true")
    p.set_defaults(run=push_command)


def read_state(backup_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(backup_dir, STATE), encoding="utf-8") as fh:
            got = json.load(fh)
        return got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(backup_dir: str, state: Dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=backup_dir, prefix=".pitr-push.")
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, os.path.join(backup_dir, STATE))


def push_command(a: argparse.Namespace) -> int:
    s = job_settings(a.config, "pitr-push")
    if s is None:
        return USAGE_STATUS
    job = Job("pitr-push", s["LOG_FILE"], report=a.report)
    d = s["BACKUP_DIR"]
    lk = Lock(os.path.join(d, LOCK), "pitr push")
    try:
        lk.acquire(0)
    except LockBusy:
        return 0  # the run of the minute before is still copying: it carries on
    state = read_state(d)
    started = time.time()
    try:
        copied = push(s, a.target, a.repo, a.sync)
    except JobFailed as e:
        state.update(target=a.target, last_error=str(e), last_error_at=started)
        _write_state(d, state)
        job.log("RESULT failed: pitr push to %s: %s" % (a.target, e))
        job.event("pitr-push", target=a.target, ok=False, error=str(e))
        lk.release()
        return 1
    state.update(target=a.target, last_ok_at=started, last_error="", copied=copied)
    _write_state(d, state)
    if copied or a.sync:
        job.log("RESULT ok: pitr push to %s: %d file(s) in %.1fs%s" % (
            a.target, copied, time.time() - started, " (synced)" if a.sync else ""))
    job.event("pitr-push", target=a.target, ok=True, copied=copied)
    lk.release()
    return 0


def push(s: Dict[str, str], name: str, repo: str, sync: bool) -> int:
    """Copy (or sync) ``repo`` into the target's ``pitr/``; the files copied."""
    if not os.path.isfile(os.path.join(repo, "backup", pitr.STANZA, "backup.info")):
        raise JobFailed("the repository %s holds no backup.info: nothing is pushed (and "
                        "nothing removed offsite)" % repo)
    work = tempfile.mkdtemp(prefix="aimms-pitr-push.")
    try:
        try:
            target = Target(load(s.get("OFFSITE_CONFIG", "")), name, work)
        except OffsiteError as e:
            raise JobFailed(str(e)) from None
        # rclone's -q (the targets' flags) goes: -v names each file copied.
        argv = [a for a in target.argv("sync" if sync else "copy", "--stats", "0", repo,
                                       target.path(FOLDER)) if a != "-q"]
        res = subprocess.run([*argv[:1], "-v", *argv[1:]], env=target.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=False)
        if res.returncode != 0:
            raise JobFailed("rclone %s to %s: %s" % ("sync" if sync else "copy", name,
                                                     reason(res.stderr)))
        return res.stderr.decode("utf-8", "replace").count(": Copied")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

"""``backup``: a backup of the whole cluster that cannot lie, then retention (what
``backup-postgres.sh`` runs, for cron and ``fab backup`` alike).

A backup is ``aimms_postgres_YYYYMMDD_HHMMSS[_LABEL].sql.gz`` (UTC; ``.sql.zst`` with
zstd) with a ``.sha256`` beside it. It is written under a temporary name, tested (its
stream and the dump's completion marker), fsynced, its checksum written, and only then
renamed into place. Any failure exits non-zero and leaves nothing that looks like a
backup. A backup less than half the size of those before it is published but logged as
suspicious, and no retention runs then (``--allow-shrink`` accepts it). Offsite copies
go before retention may remove a backup. With ``--report`` stdout carries
``result`` and ``prune`` events (core.events).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Dict, List, Optional

from aimms_ops.agent import cluster, jobmetrics, prune
from aimms_ops.agent.job import Interrupted, Job, JobFailed, trap_signals
from aimms_ops.agent.jobsettings import USAGE_STATUS, UsageError, read_settings, require, whole
from aimms_ops.agent.locks import killed_leftovers
from aimms_ops.core import retention
from aimms_ops.core.lock import LOCK_FILES

SCRIPT = "backup-postgres.sh"
#: The job's own flags (True: takes a value), beside the settings table's.
FLAGS = {"--gzip-level": True, "--compressor": True, "--zstd-level": True, "--label": True,
         "--prune-only": False, "--dry-run": False, "--expect-plan": True,
         "--no-prune": False, "--echo": False, "--report": False, "--script": True}
_FLAG_KEYS = {"--gzip-level": "GZIP_LEVEL", "--compressor": "COMPRESSOR",
              "--zstd-level": "ZSTD_LEVEL"}
_LABEL = re.compile(r"^[A-Za-z0-9_-]*$")


def _settings(argv: List[str]) -> Dict[str, str]:
    script = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--script"), "")
    values, extra = read_settings(argv, script + ".conf" if script else "", FLAGS)
    for flag, key in _FLAG_KEYS.items():
        if flag in extra:
            values[key] = extra.pop(flag)
    values.update(extra)
    values.setdefault("COMPRESSION", retention.EXTENSIONS[0][0])
    require(values, "the settings file beside the script: fab install-backups writes it")
    label = values.get("--label", "")
    if not _LABEL.match(label):
        raise UsageError("a label allows letters, digits, - and _ only")
    if len(label) > 64:
        raise UsageError("a label is at most 64 characters")
    for key in ("RETENTION_DAYS", "LOCK_TIMEOUT", "SAFETY_PIN_DAYS", "ALLOW_SHRINK"):
        whole(values, key)
    whole(values, "MIN_KEEP", 1)
    whole(values, "PING_TIMEOUT", 3)
    whole(values, "GZIP_LEVEL", 1, 9)
    whole(values, "ZSTD_LEVEL", 1, 19)
    if values.get("COMPRESSOR") not in ("auto", "igzip", "pigz", "gzip"):
        raise UsageError("COMPRESSOR must be auto, igzip, pigz or gzip")
    compressions = [c for c, _ in retention.EXTENSIONS]
    if values.get("COMPRESSION", compressions[0]) not in compressions:
        raise UsageError("COMPRESSION must be one of: %s (got '%s')"
                         % (" ".join(compressions), values.get("COMPRESSION")))
    try:
        retention.parse_rules(values.get("RETENTION_RULES", ""))
    except ValueError:
        raise UsageError("RETENTION_RULES: expected e.g. daily=7 weekly=4") from None
    if values.get("PING_KIND") not in ("healthchecks", "uptime-kuma"):
        raise UsageError("PING_KIND: healthchecks or uptime-kuma")
    return values


def main(argv: List[str]) -> int:
    try:
        s = _settings(argv)
    except UsageError as e:
        os.write(2, ("%s: %s\n" % (SCRIPT, e)).encode())
        return USAGE_STATUS
    prune_only = "--prune-only" in s
    job = Job("backup", s["LOG_FILE"], echo="--echo" in s, report="--report" in s)
    if not prune_only:
        job.ping_url = s.get("PING_URL", "")
    job.ping_kind, job.ping_timeout = s["PING_KIND"], s["PING_TIMEOUT"]
    trap_signals()
    status = 1
    try:
        status = Backup(job, s).run(prune_only)
    except JobFailed as e:
        job.fail(str(e))
        status = e.status
    except Interrupted:
        job.fail("interrupted")
    except Exception as e:  # noqa: BLE001 - the job's RESULT says what went wrong
        job.fail("unexpected error: %s: %s" % (type(e).__name__, e))
    finally:
        job.cleanup()
        if not prune_only and "--dry-run" not in s:
            problem = jobmetrics.backup(s.get("METRICS_DIR", ""), status == 0,
                                        time.time() - job.started, s["BACKUP_DIR"])
            if problem:
                job.log("warning: %s" % problem)
    return status


class Backup:
    def __init__(self, job: Job, s: Dict[str, str]) -> None:
        self.job = job
        self.s = s
        self.dir = s["BACKUP_DIR"]
        self.cluster: Optional[cluster.Cluster] = None

    def policy(self) -> retention.Policy:
        return retention.Policy(within_days=int(self.s["RETENTION_DAYS"]),
                                min_keep=int(self.s["MIN_KEEP"]),
                                **retention.parse_rules(self.s.get("RETENTION_RULES", "")))

    def prune(self) -> bool:
        try:
            prune.prune(self.dir, self.policy(), dry_run="--dry-run" in self.s,
                        expect=self.s.get("--expect-plan", ""), report=self.job.report,
                        log=self.job.log)
        except prune.PruneError as e:
            self.prune_error = str(e)
            self.job.log("retention failed: %s" % e)
            return False
        return True

    def setup(self, prune_only: bool) -> None:
        from aimms_ops.agent.hosttools import user as current_user

        job, d, user = self.job, self.dir, current_user()
        log_dir = os.path.dirname(self.s["LOG_FILE"])
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        try:
            with open(self.s["LOG_FILE"], "a"):
                pass
            os.chmod(self.s["LOG_FILE"], 0o600)
        except OSError:
            pass
        job.ping("start")
        if not os.path.isdir(d):
            try:
                os.makedirs(d, 0o700)
            except OSError as e:
                raise JobFailed("cannot create backup dir %s: %s (create it for %s, or fix "
                                "backup_dir)" % (d, e.strerror, user)) from None
        if not os.access(d, os.W_OK):
            raise JobFailed("backup dir %s is not writable by %s (chown it to %s, or fix "
                            "backup_dir)" % (d, user, user))
        what = "retention" if prune_only else "backup"
        wait = int(self.s["LOCK_TIMEOUT"])
        # The cluster shared (a restore or rebuild holds it exclusive, and no backup may
        # dump a cluster half-way through one: wait for it), the backup dir exclusive.
        job.lock(os.path.join(d, LOCK_FILES["cluster"]), what,
                 "a restore or rebuild of the cluster", wait, shared=True)
        job.lock(os.path.join(d, LOCK_FILES["backup"]), what,
                 "another backup or retention run", wait)
        gone = killed_leftovers(d, os.getpid(), os.environ.get("TMPDIR")
                                or tempfile.gettempdir())
        if gone:
            job.log("removed what a killed run left: %s" % " ".join(gone))

    def run(self, prune_only: bool) -> int:
        self.setup(prune_only)
        if prune_only:
            rules = self.s.get("RETENTION_RULES", "")
            self.job.log("retention on demand (keep %sd%s, min_keep %s, dry_run=%d)"
                         % (self.s["RETENTION_DAYS"], " " + rules if rules else "",
                            self.s["MIN_KEEP"], "--dry-run" in self.s))
            if not self.prune():
                self.job.say("%s: %s" % (SCRIPT, self.prune_error))
                return 1
            return 0
        return self.backup()

    def backup(self) -> int:
        from aimms_ops.agent.hosttools import user
        from aimms_ops.agent.making import make

        self.user = user()
        return make(self)

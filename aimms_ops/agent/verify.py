"""The deep verify (``verify``): prove that a backup restores, by restoring it into a
throwaway PostgreSQL container. ``verify-backup.sh`` runs it (cron weekly, with the
settings file; ``fab verify --deep``, with flags): one code path for both.

Usage: ``verify [--config FILE] [options]``

- ``--config FILE``: read the settings below from FILE (the backup script's settings);
  without it, ``verify-backup.sh.conf`` beside the script if there is one, else
  ``backup-postgres.sh.conf`` beside it (what install-backups writes next to the
  default backup script), so that a plain ``verify-backup.sh`` checks the newest backup;
- every flag of the settings (``aimms_ops.core.settings``): ``--backup-dir DIR``,
  ``--log-file FILE``, ``--project NAME``, ``--service NAME``, ``--superuser NAME``
  (the rest are accepted; the pings' settings are read);
- ``--file NAME|latest``: the backup to verify (default: latest, the newest regular
  backup; a safety copy is never latest);
- ``--protect VOLUME``: a volume that must never be used (repeatable); every volume of
  the compose project's containers is protected as well;
- ``--wait SECONDS``: how long the throwaway server may take to start (default 180);
- ``--echo``: also print the log lines on stderr; ``--report``: print
  ``verify.KEY=VALUE`` lines on stdout (for fab verify);
- ``--script PATH``: the entry point that runs this (``verify-backup.sh``, which gives
  its own path): its settings are looked for beside it, and it sends the pings.

The checks, in order (each a ``verify.check=NAME<TAB>STATE<TAB>DETAIL`` line):
checksum, disk, start, gzip stream (zstd stream), dump header, restore, completion
marker, databases, live restore, cleanup (``agent/trial.py`` has the throwaway's). The
throwaway container and its volume are removed whatever happens (a signal included),
and the removal is checked. The last log line of a run is ``RESULT ok NAME databases=N
tables=N rows=N seconds=N`` or ``RESULT failed: CHECK: REASON (NAME)``. Exit status 0
when the backup restored, 1 when it did not, 64 for a usage error.
"""

import os
import signal
import time
from typing import Any, Callable, List, Optional

from aimms_ops.agent.backups import newest_regular
from aimms_ops.agent.hostfacts import sha256_file
from aimms_ops.agent.job import Interrupted, Job, trap_signals
from aimms_ops.agent.jobsettings import USAGE_STATUS, UsageError, read_settings, require
from aimms_ops.agent.trial import Failed, Trial
from aimms_ops.core import defaults, retention, units
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy, LockOpenError

WAIT_SECONDS = 180
#: The verify's own flags (True: takes a value), beside the settings table's.
FLAGS = {"--file": True, "--protect": True, "--wait": True, "--echo": False,
         "--report": False, "--script": True}


class Options:
    """The verify's settings and flags."""

    def __init__(self, settings: "dict[str, str]", extra: "dict[str, str]") -> None:
        self.settings = settings
        self.file = extra.get("--file") or "latest"
        self.protect: List[str] = [v for v in extra.get("--protect", "").split("\n") if v]
        self.wait = extra.get("--wait", str(WAIT_SECONDS))
        self.echo = "--echo" in extra
        self.report = "--report" in extra
        self.script = extra.get("--script", "")

    def get(self, key: str) -> str:
        return self.settings.get(key) or ""


def parse_args(argv: List[str], flags: "Optional[dict[str, bool]]" = None,
               cls: type = Options) -> Any:
    """The options of ``argv`` (a ``cls``, whose own ``flags`` are these: the verify's
    by default), with the settings files they name (or the default one beside the
    script) read first: the flags override what a file set."""
    script = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--script"), "")
    beside = [script + ".conf", os.path.join(os.path.dirname(script),
                                             "backup-postgres.sh.conf")] if script else []
    settings, extra = read_settings(argv, beside, FLAGS if flags is None else flags)
    for key in ("COMPOSE_SERVICE", "PG_SUPERUSER", "PING_KIND"):
        settings[key] = settings.get(key) or str(defaults.SCRIPT_DEFAULTS[key])
    opts = cls(settings, extra)
    require(settings, "--config the backup script's settings file")
    if not (opts.wait.isdigit() and opts.wait.isascii()):
        raise UsageError("--wait must be a whole number of seconds")
    if opts.file != "latest" and not retention.NAME_RE.search(opts.file):
        raise UsageError("not a backup name: %s" % opts.file)
    return opts


class Run(Job):
    """One deep verify: its log, report, pings and locks (a Job), and its throwaway."""

    def __init__(self, opts: Options, kind: str = "verify") -> None:
        super().__init__(kind, opts.get("LOG_FILE"), echo=opts.echo, report=opts.report)
        self.opts = opts
        self.ping_url = opts.get("PING_URL_%s" % kind.upper())
        self.ping_kind = opts.get("PING_KIND")
        self.ping_timeout = opts.get("PING_TIMEOUT") or defaults.PING_TIMEOUT
        self.name = ""
        self.trial: Optional[Trial] = None
        self.cleanup_problem = ""
        self.removed = False

    def check(self, name: str, state: str, detail: str) -> None:
        self.event("check", name=name, state=state, detail=detail)

    # --- the end ----------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.trial is not None:
            problems = self.trial.remove()
            self.removed = self.removed or self.trial.removed
            if problems:
                self.cleanup_problem = " ".join(problems)
        self.release_locks()

    def fail_check(self, check: str, reason: str) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.check(check, "CRITICAL", reason)
        self.cleanup()
        whole = "%s: %s" % (check, reason)
        if self.cleanup_problem:
            whole += "; cleanup failed: %s" % self.cleanup_problem
            self.check("cleanup", "CRITICAL", self.cleanup_problem)
        elif self.removed:
            self.check("cleanup", "OK", "container and volume removed")
        self.event("verify", result="failed", failed_check=check, reason=reason,
                   seconds=int(time.time() - self.started))
        self.log("RESULT failed: %s%s" % (whole, " (%s)" % self.name if self.name else ""))
        if not self.echo:
            self.say("verify failed: %s" % whole)
        self.ping_end("exit:1", "verify failed: %s" % whole)
        return 1

    # --- before the throwaway ---------------------------------------------------------
    def pick(self) -> str:
        """The backup to verify, its size reported; the path."""
        directory = self.opts.get("BACKUP_DIR")
        if not os.path.isdir(directory):
            raise Failed("file", "backup dir %s does not exist" % directory)
        if self.opts.file == "latest":
            self.name = newest_regular(directory) or ""
            if not self.name:
                raise Failed("file", "there are no regular backups in %s" % directory)
        else:
            self.name = self.opts.file
        path = os.path.join(directory, self.name)
        if not os.path.isfile(path):
            raise Failed("file", "no backup named %s in %s" % (self.name, directory))
        return path

    def take_locks(self) -> None:
        take_locks(self, self.opts.get("BACKUP_DIR"), "verify", 0.0,
                   self.opts.get("LOCK_TIMEOUT"))

    def checksum(self, path: str, size: int) -> None:
        if size <= 0:
            raise Failed("checksum", "the file is empty")
        digest = sha256_file(path)
        self.event("verify", sha256=digest)
        recorded = ""
        try:
            with open(path + ".sha256", encoding="utf-8", errors="replace") as fh:
                recorded = fh.readline().split(" ", 1)[0].strip()
        except OSError:
            pass
        if not recorded:
            self.check("checksum", "WARNING",
                       "no .sha256 beside the backup: nothing to compare with")
            self.log("checksum: no .sha256 beside %s" % self.name)
        elif recorded != digest:
            raise Failed("checksum", "the file does not match its .sha256 (file %s…, recorded %s…)"
                         % (digest[:16], recorded[:16]))
        else:
            self.check("checksum", "OK", "matches its .sha256 (%s…)" % digest[:16])

    def verify(self) -> int:
        self.ping("start")
        path = self.pick()
        size = os.stat(path).st_size
        self.event("verify", file=self.name, path=path, size=size)
        self.log("START verify of %s (%s): trial restore into a throwaway container"
                 % (self.name, units.size(size)))
        self.take_locks()
        self.checksum(path, size)
        trial = Trial(self, path, size)
        self.trial = trial
        dbs, tables, rows = trial.run_all()
        self.cleanup()
        if self.cleanup_problem:
            self.check("cleanup", "CRITICAL", self.cleanup_problem)
            self.event("verify", result="failed", failed_check="cleanup",
                       reason=self.cleanup_problem)
            self.log("RESULT failed: cleanup: %s (%s)" % (self.cleanup_problem, self.name))
            self.ping_end("exit:1", "verify failed: cleanup: %s" % self.cleanup_problem)
            return 1
        self.check("cleanup", "OK", "container and volume removed")
        seconds = int(time.time() - self.started)
        self.event("verify", result="ok", seconds=seconds)
        result = "RESULT ok %s databases=%d tables=%d rows=%d" % (self.name, dbs, tables, rows)
        self.log("%s seconds=%d" % (result, seconds))
        self.ping_end("ok", result)
        return 0


def take_locks(job: Job, directory: str, what: str, wait_verify: float,
               lock_timeout: str) -> None:
    """One trial restore at a time (a verify or a drill: the verify lock, waited for up
    to ``wait_verify`` seconds), and none while a restore or a rebuild changes the
    cluster it reads its image and environment from (the cluster lock, shared, waited
    for up to ``lock_timeout`` seconds)."""
    try:
        wait = float(lock_timeout or defaults.LOCK_TIMEOUT)
    except ValueError:
        wait = float(defaults.LOCK_TIMEOUT)
    shown = str(int(wait))
    for kind, shared, seconds in (("verify", False, wait_verify), ("cluster", True, wait)):
        lk = Lock(os.path.join(directory, LOCK_FILES[kind]), what, shared=shared)
        try:
            lk.acquire(seconds)
        except LockBusy as busy:
            if kind == "verify":
                raise Failed("lock", "another verify or drill is running (%s)"
                             % core_lock.held_by(busy.holders)) from busy
            raise Failed("lock", "a restore or rebuild of the cluster is still running "
                         "after %ss (%s)" % (shown, core_lock.held_by(busy.holders))) from busy
        except LockOpenError as e:
            raise Failed("lock", str(e)) from e
        job.locks.append(lk)


def main(argv: List[str]) -> int:
    return run_job(argv, parse_args, Run, "verify-backup.sh", lambda run: run.verify())


def run_job(argv: List[str], parse: Callable[[List[str]], Any], make: Callable[[Any], Any],
            script: str, body: Callable[[Any], int]) -> int:
    """A trial restore's job (the verify's, the drill's) from its command line to its
    exit status: ``body(run)`` under the signal traps, a failed check or a fault of its
    own ended by ``run.fail_check``, and ``run.cleanup`` whatever happens."""
    try:
        opts = parse(argv)
    except UsageError as e:
        os.write(2, ("%s: %s\n" % (script, e)).encode())
        return USAGE_STATUS
    os.umask(0o077)
    run = make(opts)
    trap_signals()
    try:
        try:
            return body(run)
        except Failed as f:
            return int(run.fail_check(f.check, f.reason))
        except Interrupted:
            return int(run.fail_check("interrupted", "interrupted by a signal"))
        except Exception as e:  # noqa: BLE001 - a fault of the job itself: cleaned up, told
            what = script.split(".")[0].split("-")[0]
            return int(run.fail_check(what, "internal error: %s: %s"
                                      % (type(e).__name__, e)))
    finally:
        run.cleanup()

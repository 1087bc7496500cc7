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

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from typing import Dict, List, Optional, Set, Tuple

from aimms_ops.agent.backups import newest_regular
from aimms_ops.agent.trial import Failed, Trial
from aimms_ops.core import defaults, retention, shellconf, units
from aimms_ops.core import lock as core_lock
from aimms_ops.core import settings as flags
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy, LockOpenError

USAGE_STATUS = 64
#: What the settings are when neither the environment, a settings file nor a flag sets them.
_UNSET = {"COMPOSE_SERVICE": "postgres", "PG_SUPERUSER": "postgres",
          "PING_KIND": defaults.PING_KIND}
#: The settings the verify reads (the environment may give them, as a sourced file would).
_READS = (*flags.VERIFY_KEYS, "PING_URL_VERIFY", "PING_KIND", "PING_TIMEOUT", "LOCK_TIMEOUT")
WAIT_SECONDS = 180
#: A ping's log lines: at most this many of the run's last ones, and this many bytes,
#: found among this many last lines of the log.
PING_BODY_LINES = 200
PING_LOG_LINES = 5000
PING_BODY_BYTES = 100000


class Usage(Exception):
    """A usage error (exit 64)."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived."""


class Options:
    """The verify's settings and flags."""

    def __init__(self) -> None:
        self.settings: Dict[str, str] = {}
        self.file = "latest"
        self.protect: List[str] = []
        self.wait = str(WAIT_SECONDS)
        self.echo = False
        self.report = False
        self.script = ""

    def get(self, key: str) -> str:
        return self.settings.get(key) or ""


def _read_conf(path: str, opts: Options) -> None:
    """A settings file, as sourcing it would read it: its exported variables (PATH,
    DOCKER_HOST for cron's bare environment) and those already in the environment go
    to the commands the verify runs."""
    exported: Set[str] = set()
    try:
        values = shellconf.read(path, exported)
    except (OSError, shellconf.ConfError) as e:
        raise Usage("cannot read config file: %s%s" % (
            path, "" if isinstance(e, OSError) else " (%s)" % e)) from e
    opts.settings.update(values)
    for key, value in values.items():
        if key in exported or key in os.environ:
            os.environ[key] = value


def parse_args(argv: List[str], stdin=None) -> Options:
    """The options of ``argv``, with the settings files they name (or the default one
    beside the script) read first: the flags override what a file set."""
    opts = Options()
    for key in _READS:
        if os.environ.get(key):
            opts.settings[key] = os.environ[key]
    for i, arg in enumerate(argv):
        if arg == "--script" and i + 1 < len(argv):
            opts.script = argv[i + 1]
    configs = [argv[i + 1] if i + 1 < len(argv) else ""
               for i, arg in enumerate(argv) if arg == "--config"]
    if configs:
        for path in configs:
            if not os.access(path, os.R_OK):
                raise Usage("cannot read config file: %s" % path)
            _read_conf(path, opts)
    elif opts.script:
        for path in (opts.script + ".conf",
                     os.path.join(os.path.dirname(opts.script), "backup-postgres.sh.conf")):
            if os.path.isfile(path):
                _read_conf(path, opts)
                break
    by_flag = {f.flag: f for f in flags.SETTINGS if f.flag}
    secret = {f.key for f in flags.SETTINGS if f.secret and f.flag}
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        step = 2
        if arg in ("--config", "--script"):
            pass
        elif arg in by_flag:
            f = by_flag[arg]
            if f.switch:
                opts.settings[f.key], step = "1", 1
            else:
                opts.settings[f.key] = value
        elif arg == flags.SECRETS_FLAG:
            for line in (stdin or sys.stdin):
                key, sep, rest = line.rstrip("\n").partition("=")
                if sep and key in secret:
                    opts.settings[key] = rest
            step = 1
        elif arg == "--file":
            opts.file = value
        elif arg == "--protect":
            opts.protect.append(value)
        elif arg == "--wait":
            opts.wait = value
        elif arg in ("--echo", "--report"):
            setattr(opts, arg[2:], True)
            step = 1
        else:
            raise Usage("unknown argument: %s" % arg)
        i += step
    for key, value in _UNSET.items():
        opts.settings.setdefault(key, value)
        opts.settings[key] = opts.settings[key] or value
    if not opts.get("BACKUP_DIR"):
        raise Usage("BACKUP_DIR is not set (--backup-dir, or --config the backup script's "
                    "settings file)")
    if not opts.get("LOG_FILE"):
        raise Usage("LOG_FILE is not set (--log-file)")
    if not opts.get("COMPOSE_PROJECT"):
        raise Usage("COMPOSE_PROJECT is not set (--project)")
    if not (opts.wait.isdigit() and opts.wait.isascii()):
        raise Usage("--wait must be a whole number of seconds")
    if opts.file != "latest" and not retention.NAME_RE.search(opts.file):
        raise Usage("not a backup name: %s" % opts.file)
    return opts


def _write(fd: int, text: str) -> bool:
    """Write a line to the session (stdout or stderr); False once it is gone."""
    try:
        os.write(fd, (text + "\n").encode("utf-8", "surrogateescape"))
    except OSError:
        return False
    return True


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Run:
    """One deep verify: its log, report, pings, locks, and what it must clean up."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.run_id = "verify[%d]" % os.getpid()
        self.started = time.time()
        self.rid = str(uuid.uuid4())
        self.ping_ended = False
        self.name = ""
        self.locks: List[Lock] = []
        self.trial: Optional[Trial] = None
        self.cleanup_problem = ""
        self.removed = False

    # --- what a run says --------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = "%s %s %s" % (core_lock.now_utc(), self.run_id, msg)
        try:
            with open(self.opts.get("LOG_FILE"), "a", encoding="utf-8",
                      errors="surrogateescape") as fh:
                fh.write(line + "\n")
        except OSError:
            pass
        if self.opts.echo and not _write(2, line):
            self.opts.echo = False  # the session is gone: go on, and clean up

    def report(self, line: str) -> None:
        if self.opts.report and not _write(1, line):
            self.opts.report = False

    def check(self, name: str, state: str, detail: str) -> None:
        self.report("verify.check=%s\t%s\t%s" % (name, state, detail))

    # --- pings (lib.sh's ping_send, through the script: curl, as every job's) ---------
    def ping(self, event: str, msg: str = "") -> None:
        url = self.opts.get("PING_URL_VERIFY")
        if not url:
            return
        kind = self.opts.get("PING_KIND")
        ms = str(int(time.time() - self.started) * 1000)
        body = ""
        if event != "start":
            body = self._ping_body()
        try:
            ok, why = self._ping_send(kind, url, event, msg, body, ms)
        finally:
            if body:
                os.unlink(body)
        self.log("ping %s: %s (%s)" % (event, "ok" if ok else "failed: " + why, kind))

    def _ping_body(self) -> str:
        """The run's last log lines (at most 100 kB) in a temporary file."""
        lines: "deque[bytes]" = deque()
        try:
            with open(self.opts.get("LOG_FILE"), "rb") as fh:
                lines = deque(fh, maxlen=PING_LOG_LINES)
        except OSError:
            pass
        mine = (" %s " % self.run_id).encode()
        data = b"".join([ln for ln in lines if mine in ln][-PING_BODY_LINES:])
        fd, path = tempfile.mkstemp(prefix="aimms-ping.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data[-PING_BODY_BYTES:])
        return path

    def _ping_send(self, kind: str, url: str, event: str, msg: str, body: str,
                   ms: str) -> Tuple[bool, str]:
        if not self.opts.script:
            return False, "no verify-backup.sh to send it with"
        bound = self.opts.get("PING_TIMEOUT") or str(defaults.PING_TIMEOUT)
        env = dict(os.environ, PING_TIMEOUT=bound)
        try:
            proc = subprocess.run(
                ["bash", self.opts.script, "--ping-send", kind, event, self.rid, msg, body, ms],
                input=(url + "\n").encode(), stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env)
        except OSError as e:
            return False, str(e)
        why = proc.stdout.decode("utf-8", "replace").strip().replace("\n", " ")
        return proc.returncode == 0, why

    def ping_end(self, event: str, msg: str) -> None:
        if not self.ping_ended:
            self.ping_ended = True
            self.ping(event, msg)

    # --- the end ----------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.trial is not None:
            problems = self.trial.remove()
            self.removed = self.removed or self.trial.removed
            if problems:
                self.cleanup_problem = " ".join(problems)
        for lk in self.locks:
            lk.release()
        self.locks = []

    def fail(self, check: str, reason: str) -> int:
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
        self.report("verify.result=failed")
        self.report("verify.failed_check=%s" % check)
        self.report("verify.reason=%s" % reason)
        self.report("verify.seconds=%d" % (time.time() - self.started))
        self.log("RESULT failed: %s%s" % (whole, " (%s)" % self.name if self.name else ""))
        if not self.opts.echo:
            _write(2, "verify failed: %s" % whole)
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
        """One verify at a time, and none while a restore or a rebuild changes the
        cluster it reads its image and environment from."""
        directory = self.opts.get("BACKUP_DIR")
        try:
            wait = float(self.opts.get("LOCK_TIMEOUT") or defaults.LOCK_TIMEOUT)
        except ValueError:
            wait = float(defaults.LOCK_TIMEOUT)
        shown = self.opts.get("LOCK_TIMEOUT") or str(defaults.LOCK_TIMEOUT)
        for kind, shared, seconds in (("verify", False, 0.0), ("cluster", True, wait)):
            lk = Lock(os.path.join(directory, LOCK_FILES[kind]), "verify", shared=shared)
            try:
                lk.acquire(seconds)
            except LockBusy as busy:
                if kind == "verify":
                    raise Failed("lock", "another verify is running (%s)"
                                 % core_lock.held_by(busy.holders)) from busy
                raise Failed("lock", "a restore or rebuild of the cluster is still running "
                             "after %ss (%s)" % (shown, core_lock.held_by(busy.holders))) from busy
            except LockOpenError as e:
                raise Failed("lock", str(e)) from e
            self.locks.append(lk)

    def checksum(self, path: str, size: int) -> None:
        if size <= 0:
            raise Failed("checksum", "the file is empty")
        digest = sha256_file(path)
        self.report("verify.sha256=%s" % digest)
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
        self.report("verify.file=%s" % self.name)
        self.report("verify.path=%s" % path)
        size = os.stat(path).st_size
        self.report("verify.size=%d" % size)
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
            self.report("verify.result=failed")
            self.report("verify.failed_check=cleanup")
            self.report("verify.reason=%s" % self.cleanup_problem)
            self.log("RESULT failed: cleanup: %s (%s)" % (self.cleanup_problem, self.name))
            self.ping_end("exit:1", "verify failed: cleanup: %s" % self.cleanup_problem)
            return 1
        self.check("cleanup", "OK", "container and volume removed")
        seconds = int(time.time() - self.started)
        self.report("verify.result=ok")
        self.report("verify.seconds=%d" % seconds)
        result = "RESULT ok %s databases=%d tables=%d rows=%d" % (self.name, dbs, tables, rows)
        self.log("%s seconds=%d" % (result, seconds))
        self.ping_end("ok", result)
        return 0


def _interrupted(signum: int, frame: object) -> None:
    raise Interrupted()


def main(argv: List[str]) -> int:
    try:
        opts = parse_args(argv)
    except Usage as e:
        _write(2, "verify-backup.sh: %s" % e)
        return USAGE_STATUS
    os.umask(0o077)
    run = Run(opts)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    try:
        try:
            return run.verify()
        except Failed as f:
            return run.fail(f.check, f.reason)
        except Interrupted:
            return run.fail("interrupted", "interrupted by a signal")
        except Exception as e:  # noqa: BLE001 - a fault of the verify itself: cleaned up, told
            return run.fail("verify", "internal error: %s: %s" % (type(e).__name__, e))
    finally:
        run.cleanup()

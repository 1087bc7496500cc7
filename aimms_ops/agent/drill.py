"""The drill (``drill``): how long a recovery takes and how much it loses, measured.
``drill.sh`` runs it (cron weekly, with the settings file; ``fab drill``, with flags).

It takes the newest copy from a source (``agent/drill_sources.py``: an offsite target,
by default the first one, or the host's newest backup), fetches it onto this host
verified, restores it into a throwaway container (the deep verify's, ``--network
none``, a volume of its own), checks it against the live cluster
(``agent/drill_check.py``: every database and table present, row counts reported,
pg_amcheck), and removes everything it made, whatever happens; a later run removes what
a killed one left. Its figures:

- RTO: seconds from the start of the fetch to the throwaway answering with the data
  restored;
- RPO: seconds from the backup's time (its name's stamp) to that moment.

Usage: ``drill [--config FILE] [settings flags] [--target NAME|host] [--identity FILE]
[--protect VOLUME]... [--wait SECONDS] [--echo] [--report] [--script PATH]``.

It reports ``check`` events (fetch, identity, decrypt, disk, start, the stream, dump
header, restore, completion marker, databases, tables, amcheck, metrics, cleanup),
``table`` events (``rows`` restored, ``live_rows``) and ``drill`` events (``source``,
``type``, ``file``, ``rto_seconds``, ``rpo_seconds``, ``result``...); writes
``aimms_ops_drill_KIND_SOURCE.prom`` in ``METRICS_DIR`` when set (core/metrics.py);
pings ``PING_URL_DRILL``, the figures on the body's first line. The log's last line:
``RESULT ok NAME source=S rto=N rpo=N ...`` or ``RESULT failed: CHECK: REASON``.
Exit status 0 when the drill passed, 1 when not, 64 for a usage error.
"""

import os
import signal
import tempfile
import time
from typing import Dict, List, Optional

from aimms_ops.agent import drill_check, drill_sources, jobmetrics, verify
from aimms_ops.agent.hosttools import _OPEN_SQL
from aimms_ops.agent.throwaway import remove_leftovers
from aimms_ops.agent.trial import Failed
from aimms_ops.agent.verify import Options, run_job, take_locks
from aimms_ops.core import defaults, units
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import LOCK_FILES

FLAGS = {"--target": True, "--identity": True, "--protect": True, "--wait": True,
         "--echo": False, "--report": False, "--script": True}
WORK_PREFIX = ".drill."


class DrillOptions(Options):
    """The drill's settings and flags: the verify's, and its source."""

    def __init__(self, settings: Dict[str, str], extra: Dict[str, str]) -> None:
        super().__init__(settings, extra)
        self.target = extra.get("--target", "")
        self.identity = extra.get("--identity", "")


def parse_args(argv: List[str]) -> DrillOptions:
    return verify.parse_args(argv, FLAGS, DrillOptions)


class Run(verify.Run):
    """One drill: the verify's job (log, events, pings: PING_URL_DRILL, locks) with its
    source and throwaway."""

    def __init__(self, opts: DrillOptions) -> None:
        super().__init__(opts, "drill")
        self.opts: DrillOptions = opts
        self.source: Optional[drill_sources.Source] = None
        self.trial: Optional[drill_sources.DrillTrial] = None
        self.procs: list = []
        self.work = ""
        self.t0 = 0.0
        self.marks: Dict[str, float] = {}
        self.figures: Dict[str, object] = {}

    def mark(self, phase: str) -> None:
        """The end of ``phase`` (fetch, start, restore), in seconds since the fetch began."""
        self.marks[phase] = time.monotonic() - self.t0

    # --- the run ----------------------------------------------------------------------
    def drill(self) -> int:
        self.ping("start")
        directory = self.opts.get("BACKUP_DIR")
        timeout = self.opts.get("LOCK_TIMEOUT")
        take_locks(self, directory, "drill", float(timeout or defaults.LOCK_TIMEOUT), timeout)
        self.remove_leftovers(directory)
        config = self.opts.get("OFFSITE_CONFIG")
        source = drill_sources.pick(directory, config, self.opts.target, self.opts.identity)
        self.source = source
        why = "" if source.name != "host" or self.opts.target == "host" else \
            " (no offsite target is configured)"
        self.event("drill", source=source.name, type=source.kind, what=source.describe() + why)
        self.log("START drill of %s%s" % (source.describe(), why))
        self.work = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=directory)
        self.t0 = time.monotonic()
        fetched = source.fetch(self, self.work)
        self.name = fetched.name
        self.mark("fetch")
        self.check("fetch", "OK", "%s in %s" % (fetched.detail, units.duration(
            self.marks["fetch"])))
        self.event("drill", file=fetched.name, size=fetched.size, created=int(fetched.created))
        trial = source.restore(self, fetched)
        # The cluster answers with the data restored: the recovery is over.
        rc, answer, _err = trial.psql("postgres", "SELECT 1")
        if rc != 0 or answer.strip() != "1":
            raise Failed("restore", "the restored cluster does not answer a query")
        self.mark("restore")
        rto = self.marks["restore"]
        rpo = time.time() - fetched.created
        self.figures = {"rto_seconds": round(rto, 1), "rpo_seconds": int(rpo),
                        "fetch_seconds": round(self.marks["fetch"], 1),
                        "start_seconds": round(self.marks["start"] - self.marks["fetch"], 1),
                        "restore_seconds": round(rto - self.marks["start"], 1)}
        self.event("drill", **self.figures)
        self.check("recovery", "OK", "RTO %s (fetch %s, start %s, restore %s); RPO %s (%s)"
                   % (units.duration(rto), units.duration(self.marks["fetch"]),
                      units.duration(self.marks["start"] - self.marks["fetch"]),
                      units.duration(rto - self.marks["start"]), units.duration(rpo),
                      fetched.name))
        trial.psql("postgres", _OPEN_SQL, stdin=True)  # what allows no connections, opened
        counts = {db: trial.count(db) for db in trial.databases(False)}
        live = drill_check.live_counts(trial.prod, trial.superuser)
        dbs, tables, rows, live_rows = drill_check.compare(self, counts, live, fetched.name)
        self.figures.update(databases=dbs, tables=tables, rows=rows, live_rows=live_rows)
        drill_check.amcheck(self, trial)
        self.cleanup()
        if self.cleanup_problem:
            raise Failed("cleanup", self.cleanup_problem)
        self.check("cleanup", "OK", "container, volume and the fetched copy removed")
        return self.end(True)

    def remove_leftovers(self, directory: str) -> None:
        """What a killed drill left (we hold the verify lock: no other drill runs): its
        container and volume, its fetched copy, its temporary dir, its lock notes."""
        for problem in remove_leftovers(drill_sources.LABEL, self.log):
            self.log("warning: %s" % problem)
        tmp = tempfile.gettempdir()
        gone = [os.path.join(directory, n) for n in os.listdir(directory)
                if n.startswith(WORK_PREFIX)]
        gone += [os.path.join(tmp, n) for n in os.listdir(tmp)
                 if n.startswith(drill_sources.DrillTrial.work_prefix)
                 and os.stat(os.path.join(tmp, n)).st_uid == os.getuid()]
        for path in gone:
            drill_sources.remove_tree(path)
        for kind in ("verify", "cluster"):
            gone += core_lock.stale_notes(os.path.join(directory, LOCK_FILES[kind]),
                                          keep=os.getpid())
        if gone:
            self.log("removed what a killed drill left: %s" % " ".join(gone))

    # --- the end ----------------------------------------------------------------------
    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs = []
        if self.trial is not None:
            problems = self.trial.remove()
            if problems:
                self.cleanup_problem = " ".join(problems)
        drill_sources.remove_tree(self.work)
        self.work = ""
        self.release_locks()

    def end(self, ok: bool, check: str = "", reason: str = "") -> int:
        """Metrics, the RESULT line, the last event and the ping; the exit status."""
        source = self.source.name if self.source else (self.opts.target or "unknown")
        problem = jobmetrics.drill(self.opts.get("METRICS_DIR"), source, ok, self.figures)
        if problem:
            self.check("metrics", "WARNING", problem)
        figures = " ".join("%s=%s" % (k.replace("_seconds", ""), v)
                           for k, v in self.figures.items())
        if ok:
            self.event("drill", result="ok", seconds=int(time.time() - self.started))
            line = "RESULT ok %s source=%s %s" % (self.name, source, figures)
            first = "drill ok: %s from %s: RTO %s s, RPO %s s" % (
                self.name, source, self.figures.get("rto_seconds"),
                self.figures.get("rpo_seconds"))
            self.log(line)
            self.ping_end("ok", line, first)
            return 0
        whole = "%s: %s" % (check, reason)
        self.event("drill", result="failed", failed_check=check, reason=reason,
                   seconds=int(time.time() - self.started))
        self.log("RESULT failed: %s (source=%s%s)" % (whole, source,
                                                      " " + figures if figures else ""))
        if not self.echo:
            self.say("drill failed: %s" % whole)
        self.ping_end("exit:1", "drill failed: %s" % whole, "drill failed: %s" % whole)
        return 1

    def fail_check(self, check: str, reason: str) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.check(check, "CRITICAL", reason)
        made = self.trial is not None or bool(self.work)
        self.cleanup()
        if self.cleanup_problem and check != "cleanup":
            self.check("cleanup", "CRITICAL", self.cleanup_problem)
            reason += "; cleanup failed: %s" % self.cleanup_problem
        elif made:
            self.check("cleanup", "OK", "what the drill made is removed")
        return self.end(False, check, reason)


def main(argv: List[str]) -> int:
    return run_job(argv, parse_args, Run, "drill.sh", lambda run: run.drill())

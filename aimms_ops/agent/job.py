"""A job of the host program (a backup, a retention run): its log, what it tells the
operator's session, its pings, its locks, and how it ends.

Lines for the session are written straight to the file descriptors: once the session is
gone (a dropped connection, Ctrl-C) a write fails, the job stops talking to it and goes
on, logs its RESULT and cleans up. Every line of the log is ``TIME RUN_ID TEXT``.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from typing import Callable, List, Optional

from aimms_ops.agent import pings
from aimms_ops.core import events
from aimms_ops.core.lock import Lock, LockBusy, held_by, now_utc

#: Surrogates that stand for no byte of the input (surrogateescape makes U+DC80-U+DCFF).
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


class JobFailed(Exception):
    """The job failed: ``message`` is its RESULT; ``status`` its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(Exception):
    """A signal (INT, TERM, HUP) ended the job."""


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted()


def trap_signals() -> None:
    """INT, TERM and HUP end the job through its cleanup (as an exception)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def write_fd(fd: int, text: str) -> bool:
    """Write ``text`` to ``fd`` whole; False when the reader is gone."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    except OSError:
        return False
    return True


class Job:
    """``kind``: the run id's word (``backup``); ``log_file``: where its lines go;
    ``echo``: also on stderr; ``report``: its events (core.events) on stdout."""

    def __init__(self, kind: str, log_file: str, *, echo: bool = False,
                 report: bool = False) -> None:
        self.run_id = "%s[%d]" % (kind, os.getpid())
        self.log_file = log_file
        self.echo = echo
        self.reporting = report
        self.started = time.time()
        self.rid = str(uuid.uuid4())
        self.ping_url = ""
        self.ping_kind = pings.KINDS[0]
        self.ping_timeout: object = 45
        self.ping_ended = False
        self.locks: List[Lock] = []
        self.cleanups: List[Callable[[], None]] = []

    # --- lines -------------------------------------------------------------------

    def log(self, text: str) -> None:
        """A line in the host's log; bytes that are not UTF-8 (a name, psql's message)
        are written as ``\\xNN``, so that the log stays UTF-8 for whoever reads it."""
        text = _NOT_A_BYTE.sub(lambda m: "\\u%04x" % ord(m.group()), text)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        line = "%s %s %s\n" % (now_utc(), self.run_id, text)
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError:
            pass
        if self.echo and not write_fd(2, line):
            self.echo = False

    def say(self, text: str) -> None:
        """A line on stderr for the session (not the log)."""
        write_fd(2, text + "\n")

    def report(self, line: str) -> None:
        """A line for the session on stdout (an event: core.events), with --report."""
        if self.reporting and not write_fd(1, line + "\n"):
            self.reporting = False

    def event(self, kind: str, **fields: object) -> None:
        """The event ``kind`` (core.events) for the session, with --report."""
        self.report(events.line(kind, **fields))

    def ticker(self, stage: str, total: Optional[int], what: str = "",
               estimate: bool = False) -> events.Ticker:
        """The progress of ``stage`` (core.events.Ticker), for the session."""
        return events.Ticker(self.report, stage, total, what=what, estimate=estimate)

    # --- pings -------------------------------------------------------------------

    def ping(self, event: str, msg: str = "", first_line: str = "") -> None:
        """Tell the monitor (if any) how the run goes, and log how that went."""
        if not self.ping_url:
            return
        body = ""
        if event != "start":
            body = self.body(first_line)
        ms = int((time.time() - self.started) * 1000)
        why = pings.send(self.ping_kind, self.ping_url, event, self.rid, msg, body, ms,
                         self.ping_timeout)
        self.log("ping %s: %s (%s)" % (event, "ok" if why is None else "failed: " + why,
                                        self.ping_kind))

    def ping_end(self, event: str, msg: str = "", first_line: str = "") -> None:
        if not self.ping_ended:
            self.ping_ended = True
            self.ping(event, msg, first_line)

    def body(self, first_line: str = "") -> str:
        """This run's last log lines (at most 200, 100 kB), for a ping's body."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4 * 1024 * 1024))
                tail = fh.read().decode("utf-8", "replace").splitlines()[-5000:]
        except OSError:
            tail = []
        mine = [ln for ln in tail if " %s " % self.run_id in ln][-200:]
        text = "\n".join(([first_line] if first_line else []) + mine) + "\n"
        return text[-pings.BODY_LIMIT:]

    # --- locks -------------------------------------------------------------------

    def lock(self, path: str, what: str, waiting_for: str, wait: float, *,
             shared: bool = False) -> None:
        """Hold ``path`` for the rest of the job, waiting up to ``wait`` seconds (logged,
        naming the holder) for ``waiting_for``."""
        lk = Lock(path, what, shared=shared)
        try:
            lk.acquire(0)
        except LockBusy as busy:
            self.log("waiting up to %ds for %s (%s)" % (wait, waiting_for,
                                                         held_by(busy.holders)))
            self.event("wait", **{"for": waiting_for, "holder": held_by(busy.holders),
                                  "up_to": wait})
            waited = time.monotonic()
            try:
                lk.acquire(wait)
                self.event("wait", **{"for": waiting_for, "holder": held_by(busy.holders),
                                      "up_to": wait, "waited": time.monotonic() - waited})
            except LockBusy as still:
                raise JobFailed("%s is still running after %ds (lock %s held by %s; wait for it "
                                "to end, or raise lock_timeout)"
                                % (waiting_for, wait, path, held_by(still.holders))) from None
        self.locks.append(lk)

    def release_locks(self) -> None:
        for lk in reversed(self.locks):
            lk.release()
        self.locks = []

    # --- the end -----------------------------------------------------------------

    def fail(self, message: str) -> None:
        """Log the RESULT of a failed run, say it, ping it (the caller then exits 1)."""
        self.log("RESULT failed: %s" % message)
        if not self.echo:
            self.say("%s failed: %s" % (self.run_id.split("[")[0], message))
        self.ping_end("exit:1", "%s failed: %s" % (self.run_id.split("[")[0], message))

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a cleanup step must not stop the others
                self.log("cleanup: %s" % e)
        self.release_locks()


def run_job(job: Job, body: Callable[[], int]) -> int:
    """``body()``'s exit status; a failure or a signal ends the job as its RESULT says,
    and the job's clean-ups run whatever happens."""
    trap_signals()
    try:
        return body()
    except JobFailed as e:
        job.fail(str(e))
        return e.status
    except Interrupted:
        job.fail("interrupted")
        return 1
    finally:
        job.cleanup()


def seconds_since(start: float, clock: Optional[Callable[[], float]] = None) -> int:
    return int((clock or time.time)() - start)

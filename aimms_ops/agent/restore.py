"""The restore stream (``restore-stream.sh`` is its entry point): a pg_dumpall dump replayed
into the postgres container of a compose service, all or nothing.

``restore-stream [--script PATH] [--raw-size N] [--props-in-dump] PROJECT SERVICE SUPERUSER
FORMAT SOURCE [DATABASE_HEX [LOCK [WAIT [KEEP [AS_HEX]]]]]``

- SOURCE: ``-`` to read the dump from stdin (streamed from the operator's machine), or
  the absolute path of a dump on this host (nothing crosses the network).
- FORMAT: gz, zst or plain. DATABASE_HEX: restore only that database's section (its name
  in hex); all when empty. LOCK: the cluster lock, held exclusive (none when empty: the
  caller holds it); WAIT: seconds to wait for its holder (default 60). KEEP: ``keep``
  the databases replaced aside (default), or ``drop`` them once replaced (a rebuild onto
  a new, empty cluster). AS_HEX: restore DATABASE_HEX's section as this new database.
- ``--script``: the entry point that started it, so that ``ps`` shows restore-stream.sh.
- ``--raw-size``: the dump's decompressed size (from inspect-dump): a dump on this host
  then reports its progress in the decompressed bytes the filter has read.
- ``--props-in-dump``: the dump carries the properties of template1 and postgres (its
  aimms-ops preface, which inspect-dump found): the live ones are not read.

Every database is rebuilt beside the live one under a name no application uses; only
once all of them are rebuilt are they swapped in, in one transaction with the dump's role
changes (``aimms_ops.dump.swap``, in this process). A failure before that removes what the
restore made (``discard``): the live cluster is as it was.

No copy of the dump anywhere: SOURCE | decompressor | ``aimms-ops.pyz dump filter`` |
``docker exec -i … psql -v ON_ERROR_STOP=1``, processes the OS pipes connect (the dump
crosses Python once, in the filter). When the operator's session ends (Ctrl-C, a dropped
connection) the first stage is stopped and the filter ends the stream as if the dump
ended there: psql rolls back the table it was loading, nothing goes on unobserved.

On stdout, events for the session (``core.events``): a ``wait`` while another run holds
the cluster lock, the ``progress`` of a dump on this host (how far the first stage has
read the file, from /proc), and what the restore did and why it failed: ``section`` and
``inserted`` (the filter's: where each database starts, the blocks it added, so that
psql's line numbers map back to the dump's), ``stages`` (the exit status of every stage:
source, decompressor, filter, psql; the source is read by the next stage, ``cat`` for a
plain dump: always 0), ``replaced``, ``undone``, ``error`` and ``note``. On stderr, the
stages' own messages (psql's error, whole) as they wrote them. The exit status is 1 when
any stage failed. Both are kept in files until the end and then written, so a session
that is gone cannot kill a stage half-way (but ``wait``, ``progress`` and a refusal
before the stream starts, written at once).

Exit statuses: 10 no running container, 64 usage, 66 SOURCE unreadable, 69 no
decompressor, 73 the lock or the work dir cannot be made, 75 the cluster lock is held.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Callable, List, Optional, Tuple, Union

from aimms_ops.agent import cluster as agent_cluster
from aimms_ops.agent.hosttools import (
    _program,
    _status,
    bytes_written,
    decompressor,
    last_line,
    read_position,
)
from aimms_ops.agent.job import write_fd
from aimms_ops.core import events
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import Lock, LockBusy, LockOpenError
from aimms_ops.dump.swap import Cluster, SwapError, discard, drop_replaced, prepare, swap

USAGE = ("usage: aimms-ops.pyz restore-stream [--script PATH] [--raw-size N] [--props-in-dump] "
         "PROJECT SERVICE SUPERUSER FORMAT SOURCE [DATABASE_HEX [LOCK [WAIT [KEEP [AS_HEX]]]]]")
NOT_RUNNING = 10
PGOPTIONS = "PGOPTIONS=-c client_min_messages=warning"
#: Where psql starts: postgres (never replaced while the stream runs).
START_DB = "postgres"


def say(msg: str) -> None:
    try:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
    except OSError:
        pass


def tell(msg: str) -> None:
    """Why a command of the restore's stops, on stderr (``aimms-ops: MSG``)."""
    say("aimms-ops: " + msg)


def refuse(msg: str) -> None:
    """Why the restore stream stops before it starts: its ``error`` event, at once."""
    write_fd(1, events.line("error", text=msg) + "\n")


def running_container(project: str, service: str,
                      told: Callable[[str], None] = tell) -> Optional[str]:
    """The id of the service's running container, or None, having said it is not running."""
    cid = agent_cluster.container(project, service)
    if not cid:
        told("the %s container of compose project %s is not running" % (service, project))
        return None
    return cid


def lock_cluster(path: str, wait: str, what: str,
                 told: Callable[[str], None] = tell) -> Union[Lock, int]:
    """The cluster lock, exclusive, for ``what``; or the exit status, having said why."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError:
        pass
    lk = Lock(path, what)
    try:
        try:
            lk.acquire(0)
        except LockBusy as busy:
            # The session sees what it waits for, at once (core.events).
            write_fd(1, events.line("wait", **{"for": "the cluster lock",
                                               "holder": core_lock.held_by(busy.holders),
                                               "up_to": float(wait)}) + "\n")
            started = time.monotonic()
            lk.acquire(float(wait))
            write_fd(1, events.line("wait", **{"for": "the cluster lock",
                                               "holder": core_lock.held_by(busy.holders),
                                               "up_to": float(wait),
                                               "waited": time.monotonic() - started}) + "\n")
    except LockBusy as busy:
        told("the cluster is busy after %ss: another restore, rebuild or backup holds it "
             "(%s); wait for it to end" % (wait, core_lock.held_by(busy.holders)))
        return core_lock.BUSY_STATUS
    except (LockOpenError, ValueError):
        told("cannot open the lock %s" % path)
        return core_lock.OPEN_STATUS
    return lk


class Stream:
    """One restore: its container, its work dir and the files that keep its messages (the
    stages' stderr) and its events (its own and the filter's)."""

    def __init__(self, cid: str, superuser: str, work: str) -> None:
        self.cid = cid
        self.superuser = superuser
        self.work = work
        self.cluster = Cluster(cid, superuser)
        self.errf = open(os.path.join(work, "stderr"), "ab", buffering=0)
        self.events = os.path.join(work, "events")
        self.eventf = open(self.events, "a")
        #: Descriptors the stream's stages inherit: the cluster lock's.
        self.hold: Tuple[int, ...] = ()
        #: The dump's decompressed size, when the caller knows it (--raw-size).
        self.raw_size = 0
        #: The dump carries template1's and postgres's properties (--props-in-dump).
        self.props_in_dump = False

    def log(self, text: str, kind: str = "note", **fields: object) -> None:
        """What the restore did (``kind``: an event of core.events, with ``fields``)."""
        self.eventf.write(events.line(kind, text=text, **fields) + "\n")
        self.eventf.flush()

    def flush_messages(self) -> None:
        """The events kept so far on stdout, the stages' messages on stderr (a session
        that is gone loses them)."""
        for path, out in ((self.events, sys.stdout), (os.path.join(self.work, "stderr"),
                                                      sys.stderr)):
            try:
                with open(path, "rb") as fh:
                    shutil.copyfileobj(fh, out.buffer)
                out.flush()
            except OSError:
                pass

    def pg(self, *argv: str, stdout: Union[int, IO[bytes]] = subprocess.PIPE,
           stderr: Union[int, IO[bytes]] = subprocess.PIPE) -> "subprocess.CompletedProcess[bytes]":
        """A command in the container. Nothing before the stream reads stdin: it is the
        dump, when streamed."""
        return subprocess.run(["docker", "exec", "-e", PGOPTIONS, self.cid, *argv],
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)

    def q(self, sql: str) -> "subprocess.CompletedProcess[bytes]":
        return self.pg("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U",
                       self.superuser, "-d", "template1", "-c", sql)

    def props(self, only_hex: str, has_postgres: bool) -> List[str]:
        """--props of the live template1 and postgres, for a dump that does not carry them."""
        out: List[str] = []
        if self.props_in_dump:
            return out
        for db in ("template1", "postgres"):
            if only_hex and only_hex != db.encode().hex():
                continue
            if db == "postgres" and not has_postgres:
                continue
            path = os.path.join(self.work, db + ".props")
            with open(path, "wb") as fh:
                rc = self.pg("pg_dump", "-U", self.superuser, "--create", "--schema-only",
                             "--exclude-schema=*", db, stdout=fh, stderr=self.errf).returncode
            if rc == 0:
                out += ["--props", "%s=%s" % (db, path)]
        return out

    def pipeline(self, source: str, unzip: List[str], filt: List[str],
                 session: int) -> List[int]:
        """SOURCE | unzip | filter | psql, the OS's pipes between them; their statuses
        (127 for a stage that cannot start). The first stage is stopped once the
        operator's session is gone (this process is given another parent, even while the
        session's process lingers as a zombie): the filter then ends the stream as cut,
        and psql rolls back what it was loading."""
        argvs = [unzip, filt, [
            "docker", "exec", "-i", "-e", PGOPTIONS, self.cid, "psql", "-X", "-q", "-v",
            "ON_ERROR_STOP=1", "-U", self.superuser, "-d", START_DB, "-f", "-"]]
        src = sys.stdin.buffer if source == "-" else open(source, "rb")
        procs: List[Optional[subprocess.Popen]] = []
        prev: Optional[IO[bytes]] = src
        for i, argv in enumerate(argvs):
            last = i == len(argvs) - 1
            try:
                proc = subprocess.Popen(
                    argv, stdin=prev if prev is not None else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL if last else subprocess.PIPE, stderr=self.errf,
                    pass_fds=self.hold)
            except OSError as e:
                self.log("cannot run %s: %s" % (argv[0], e.strerror), kind="error")
                proc = None
            if prev is not None and prev is not src:
                prev.close()  # the next stage has it now
            procs.append(proc)
            prev = proc.stdout if proc is not None else None
        if source != "-":
            src.close()
        first = procs[0]
        ticker, raw = None, False
        if source != "-" and first is not None:
            # The decompressed bytes written so far, when their total is known (a
            # decompressor may read its file in steps of many MiB); else how far the
            # first stage is in the file.
            total = os.path.getsize(source)
            raw = self.raw_size > 0 and unzip[0] != "cat"
            if raw:
                total = self.raw_size
            ticker = events.Ticker(lambda text: write_fd(1, text + "\n"), "restore",
                                   total, what=os.path.basename(source))
        for proc in procs[::-1]:
            while proc is not None and proc.poll() is None:
                if first is not None and first.poll() is None and os.getppid() != session:
                    first.terminate()
                if ticker is not None and first is not None:
                    ticker.tick(bytes_written(first.pid) if raw else
                                read_position(first.pid))
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
        if ticker is not None:
            ticker.end(ticker.total)
        return [0] + [_status(p.wait()) if p is not None else 127 for p in procs]

    def run(self, source: str, unzip: Optional[List[str]], only_hex: str, as_hex: str,
             keep: str, session: int) -> int:
        # Where psql starts: postgres, made first when the cluster has none; the
        # tablespaces the cluster has: the dump's CREATE of those is left out.
        try:
            survey = self.cluster.survey()
        except SwapError as e:
            refuse("postgres does not answer: %s" % last_line(str(e).replace("\\n", "\n")))
            return 1
        has_postgres = b"postgres" in survey[0]
        tablespaces = ",".join(name.hex() for name in survey[3])
        if not has_postgres:
            res = self.q("CREATE DATABASE postgres WITH TEMPLATE = template0")
            if res.returncode != 0:
                refuse("cannot create the missing postgres database: %s"
                       % last_line(_text(res.stderr)))
                return 1
            self.log("the cluster had no postgres database: created it empty first")
        # What a killed restore left half-built goes; the roles the cluster has are noted.
        if not self.step("prepare", lambda: prepare(self.cluster, self.work, self.log,
                                                    survey=survey)):
            self.flush_messages()
            return 1
        props = self.props(only_hex, has_postgres)
        filt = [*_program(), "dump", "filter", "--beside", self.work, "--tablespaces",
                tablespaces, "--events", self.events, *props]
        # The filter stops the stream once the session is gone, whatever the pipes still hold.
        if session > 1:
            filt += ["--session", str(session)]
        if only_hex:
            filt += ["--only", only_hex]
        status = self.pipeline(source, unzip or ["cat"], filt, session)
        self.log("status %s" % " ".join(str(s) for s in status), kind="stages", status=status)
        ok = not any(status)
        # Nothing stops the last steps once they start: not the session's end, nor its pipe.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if ok:
            stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime()).encode()
            ok = self.step("swap", lambda: swap(self.cluster, self.work, stamp, self.log,
                                                as_name=bytes.fromhex(as_hex) if as_hex else None))
        if not ok:
            self.step("discard", lambda: discard(self.cluster, self.work, self.log))
        elif keep == "drop":
            self.step("drop-replaced", lambda: drop_replaced(self.cluster, self.work, self.log))
        self.flush_messages()
        return 0 if ok else 1

    def step(self, what: str, fn: Callable[[], object]) -> bool:
        """A step of the swap (dump/swap.py), its failure logged in one line."""
        try:
            fn()
        except (SwapError, ValueError) as e:
            self.log("%s failed: %s" % (what, e), kind="error")
            return False
        return True


def main(argv: List[str]) -> int:
    if argv[:1] == ["--script"] and len(argv) > 1:
        argv = argv[2:]  # the entry point, named on the command line for ps only
    raw_size = 0
    if argv[:1] == ["--raw-size"] and len(argv) > 1 and argv[1].isdigit():
        raw_size, argv = int(argv[1]), argv[2:]
    props_in_dump = argv[:1] == ["--props-in-dump"]
    if props_in_dump:
        argv = argv[1:]
    if not 5 <= len(argv) <= 10:
        say(USAGE)
        return 64
    project, service, superuser, fmt, source = argv[:5]
    only_hex, lock, wait, keep, as_hex = (argv[5:] + [""] * 5)[:5]
    wait, keep = wait or "60", keep or "keep"
    os.umask(0o077)
    session = os.getppid()
    cid = running_container(project, service, refuse)
    if cid is None:
        return NOT_RUNNING
    unzip: Optional[List[str]] = None
    if fmt in ("gz", "zst"):  # igzip, else pigz, else gzip; zstd for zst
        unzip, missing = decompressor("dump." + fmt)
        if unzip is None:
            refuse("%s is not installed on this host; the restore of a .%s dump needs it "
                   "(install %s)" % (missing, fmt, missing))
            return 69
    elif fmt != "plain":
        refuse("unknown format %s" % fmt)
        return 64
    if source != "-" and not os.access(source, os.R_OK):
        refuse("cannot read %s" % source)
        return 66
    try:
        work = tempfile.mkdtemp(prefix="aimms-restore.")  # in TMPDIR
    except OSError as e:
        refuse("cannot make a work dir in %s: %s" % (tempfile.gettempdir(), e.strerror))
        return 73
    held: Union[Lock, int, None] = None
    try:
        if lock:
            held = lock_cluster(lock, wait, "restore", refuse)
            if isinstance(held, int):
                return held
        stream = Stream(cid, superuser, work)
        if isinstance(held, Lock):
            stream.hold = (held.fileno(),)  # its stages hold the lock too, if this dies
        stream.raw_size = raw_size
        stream.props_in_dump = props_in_dump
        return stream.run(source, unzip, only_hex, as_hex, keep, session)
    finally:
        if isinstance(held, Lock):
            held.release()
        shutil.rmtree(work, ignore_errors=True)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


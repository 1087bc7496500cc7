"""The host's locks: one model for every job, on both sides of the connection.

A lock is ``flock(2)`` on a file in the backup dir (the names: ``LOCK_FILES``), held
shared or exclusive:

- ``.cluster.lock``: restore and rebuild-volume hold it exclusive (they change the
  cluster); backup and the deep verify hold it shared (they read it), so no backup
  ever dumps a cluster that is being restored or rebuilt;
- ``.backup.lock``: backup, retention, pins and offsite syncs hold it exclusive (they
  change the backup dir or what is kept of it);
- ``.verify.lock``: one deep verify at a time.

Each holder leaves a note ``LOCK.owner.PID`` (``WHAT pid PID since TIME``), so whoever
waits is told who holds it; a note of a process that is gone is removed by the next
reader. Waits are bounded and poll, so the waiter can say how long it has waited.

A shell script holds a lock on a descriptor it opened (``exec {fd}>>LOCK``): the host
program locks that descriptor for it (``lock --fd``); the lock then belongs to the
script's open file, and lasts until the script and its children close it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Callable, List, Optional

from aimms_ops.core import events

#: The host's lock files, in the backup dir: the one definition.
LOCK_FILES = {"cluster": ".cluster.lock", "backup": ".backup.lock", "verify": ".verify.lock"}
#: What a holder's note file is called: LOCK + NOTE_INFIX + its pid.
NOTE_INFIX = ".owner."
#: The exit status of a job that could not have its lock in time (EX_TEMPFAIL), and of
#: one that could not open it (EX_CANTCREAT).
BUSY_STATUS = 75
OPEN_STATUS = 73
#: What the host program's ``hold`` prints once it holds the cluster lock: the line the
#: operator's side waits for (its ``facts`` event).
HELD = events.facts_line("hold", {"locked": "1"})
#: How often a waiter tries again.
POLL_SECONDS = 0.2


class LockBusy(Exception):
    """The lock is held by others (``holders``: their notes) after ``waited`` seconds."""

    def __init__(self, path: str, holders: List[str], waited: float) -> None:
        self.path = path
        self.holders = holders
        self.waited = waited
        super().__init__("%s is held by %s" % (path, held_by(holders)))


class LockOpenError(Exception):
    """The lock file cannot be opened (``path``: which; the message says why)."""


def held_by(holders: List[str]) -> str:
    """The holders as one phrase (``unknown holder`` when no note names one)."""
    return "; ".join(holders) if holders else "unknown holder"


def now_utc(at: Optional[float] = None) -> str:
    """``2026-12-06T02:00:03Z``: the one timestamp format of notes and logs."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


def note_path(path: str, pid: int) -> str:
    return "%s%s%d" % (path, NOTE_INFIX, pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def note_pids(path: str) -> List[int]:
    """The pids that left a note on the lock ``path``, alive or not."""
    folder, base = os.path.split(path)
    prefix = base + NOTE_INFIX
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return sorted(int(n[len(prefix):]) for n in names
                  if n.startswith(prefix) and n[len(prefix):].isdigit())


def holders(path: str, *, clean: bool = True) -> List[str]:
    """The notes of the live holders of the lock ``path``; notes of dead ones are removed
    (``clean``)."""
    out = []
    for pid in note_pids(path):
        note = note_path(path, pid)
        if alive(pid):
            try:
                with open(note, encoding="utf-8", errors="replace") as fh:
                    line = fh.readline().strip()
            except OSError:
                continue
            out.append(line or "pid %d" % pid)
        elif clean:
            _remove(note)
    return out


def live_pids(path: str) -> List[int]:
    """The pids of the live holders that left a note on ``path``."""
    return [pid for pid in note_pids(path) if alive(pid)]


def stale_notes(path: str, *, keep: int = 0) -> List[str]:
    """Remove the notes of holders that are gone (a run killed with SIGKILL); return their
    file names. ``keep``: a pid whose note stays whatever (the caller's)."""
    gone = []
    for pid in note_pids(path):
        if pid != keep and not alive(pid):
            note = note_path(path, pid)
            if _remove(note):
                gone.append(os.path.basename(note))
    return gone


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


class Lock:
    """``flock`` on ``path``, ``shared`` or exclusive, for ``what`` (named in the note).

    ``fd``: lock that open descriptor (a script's) instead of opening the file; ``pid``:
    the process the note names (the script's). As a context manager: acquired without
    waiting unless :meth:`acquire` was called first, and always released, its note
    removed, on the way out.
    """

    def __init__(self, path: str, what: str, *, shared: bool = False,
                 fd: Optional[int] = None, pid: Optional[int] = None) -> None:
        self.path = path
        self.what = what
        self.shared = shared
        self.pid = os.getpid() if pid is None else pid
        self._fd = fd
        self._own_fd = fd is None
        self.held = False

    def fileno(self) -> int:
        """The locked descriptor (-1 when none is open): a child given it (``pass_fds``)
        keeps the lock held as long as it runs, whatever becomes of this process."""
        return -1 if self._fd is None else self._fd

    @property
    def note(self) -> str:
        return note_path(self.path, self.pid)

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as e:
                raise LockOpenError("cannot open the lock %s: %s" % (self.path, e.strerror)) from e
        return self._fd

    def _try(self, fd: int) -> bool:
        op = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, op)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise LockOpenError("cannot lock %s: %s" % (self.path, e.strerror)) from e
        return True

    def acquire(self, wait: float = 0, *,
                on_wait: Optional[Callable[[List[str], float], None]] = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> "Lock":
        """Hold the lock, waiting up to ``wait`` seconds; ``on_wait(holders, waited)`` is
        called when the wait starts and then every few seconds. Raises :class:`LockBusy`
        naming the holders when it is still held by others at the end."""
        fd = self._open()
        start = clock()
        told = None
        while not self._try(fd):
            waited = clock() - start
            if waited >= wait:
                if self._own_fd:
                    self._close()
                raise LockBusy(self.path, holders(self.path), waited)
            if on_wait is not None and (told is None or waited - told >= 5):
                told = waited
                on_wait(holders(self.path), waited)
            sleep(min(POLL_SECONDS, max(wait - waited, 0.01)))
        self.held = True
        self._write_note()
        return self

    def _write_note(self) -> None:
        text = "%s pid %d since %s\n" % (self.what, self.pid, now_utc())
        tmp = "%s.tmp" % self.note
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.note)
        except OSError:
            _remove(tmp)

    def release(self) -> None:
        """Let go of the lock and remove the note (safe to call twice)."""
        if self.held:
            _remove(self.note)
            self.held = False
            if self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                except OSError:
                    pass
        if self._own_fd:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def __enter__(self) -> "Lock":
        if not self.held:
            self.acquire(0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

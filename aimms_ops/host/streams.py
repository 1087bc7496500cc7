"""The byte pumps under a remote command: stderr and stdout drains, the bulk receive
buffer, the writer thread, and a file that is handed to the disk as it is written.
"""

from __future__ import annotations

import array
import errno
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, Protocol

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from aimms_ops.core.errors import OpsError

#: Reads waiting for the writer thread of a download, at most (memory bound:
#: WRITE_QUEUE x WINDOW_SIZE).
WRITE_QUEUE = 4


#: A download file is handed to the disk in steps of this many bytes as it is written
#: (DiskFile), and each step is dropped from the page cache once it is on the disk.
WRITEBACK_STEP = 32 * 1024 * 1024


class Writable(Protocol):
    """Where a stream from the host goes: anything with a binary ``write``."""

    def write(self, data: bytes, /) -> int: ...


class FileSink(Protocol):
    """Where a stream from the host goes when it is a file on disk, open for appending
    (a download's ``.part``): OpenSSH's client may then append to it itself, and
    ``appended`` is given those bytes, read back in order (to hash and count them)."""

    def write(self, data: bytes, /) -> int: ...

    def file(self) -> tuple[str, int]:
        """The file's path and the descriptor (O_APPEND) the bytes are written to."""
        ...

    def appended(self, data: bytes, /) -> None: ...


class Drain(threading.Thread):
    """Reads one side of a channel to its end, keeping the text and passing lines on."""

    def __init__(self, read: Callable[[int], bytes], on_line: Callable[[str], None] | None,
                 keep: int = 4 * 1024 * 1024) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.on_line = on_line
        self.keep = keep
        self.parts: list[bytes] = []
        self.size = 0
        self._partial = b""

    def run(self) -> None:
        try:
            while True:
                data = self.read(65536)
                if not data:
                    break
                if self.size < self.keep:
                    self.parts.append(data)
                    self.size += len(data)
                if self.on_line is not None:
                    self._emit(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        if self.on_line is not None and self._partial:
            self.on_line(self._partial.decode("utf-8", "replace"))

    def _emit(self, data: bytes) -> None:
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))  # type: ignore[misc]

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


class BulkPipe(BufferedPipe):
    """A channel's receive buffer that wakes its reader once per ``BULK`` bytes.

    paramiko's own wakes the reading thread for every packet (32 KiB from OpenSSH):
    about 30,000 thread switches per GB, each a fight for the GIL with the transport
    thread that decrypts the next packet. Here the reader sleeps until ``BULK`` bytes
    are buffered, the stream ends, or ``TRICKLE`` seconds pass with something
    buffered (a slow source is still passed on promptly).
    """

    BULK = 1024 * 1024
    TRICKLE = 0.05
    # BufferedPipe's own state (paramiko 2.x to 5.x), which its stubs do not declare.
    _lock: threading.Lock
    _cv: threading.Condition
    _event: threading.Event | None
    _buffer: array.array[int]
    _closed: bool

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._buffer.frombytes(data)
            if len(self._buffer) >= self.BULK:
                self._cv.notify_all()

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            want = min(nbytes, self.BULK)
            while len(self._buffer) < want and not self._closed:
                if not self._cv.wait(self.TRICKLE) and len(self._buffer):
                    break
                if deadline is not None and time.monotonic() >= deadline \
                        and not len(self._buffer):
                    raise PipeTimeout()
            out = self._buffer[:nbytes].tobytes()
            del self._buffer[:nbytes]
            if not len(self._buffer) and self._event is not None and not self._closed:
                self._event.clear()
            return out


class Writer(threading.Thread):
    """Writes what a download receives to ``dst`` in its own thread, in order.

    ``put`` blocks while ``WRITE_QUEUE`` reads are waiting; an error of ``dst`` is
    raised again in the receiving thread at the next ``put`` or at ``finish``.
    """

    def __init__(self, dst: Writable) -> None:
        super().__init__(daemon=True)
        self.dst = dst
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            data = self.queue.get()
            if data is None:
                return
            if self.error is None:
                try:
                    self.dst.write(data)
                except (OSError, ValueError, OpsError) as exc:  # raised again in the receiver
                    self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, data: bytes) -> None:
        self._raise()
        self.queue.put(data)

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        self._raise()

    def abort(self) -> None:
        """Stop after what is queued (the caller is failing already)."""
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            self.error = self.error or EOFError("aborted")
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            self.queue.put(None)
        self.join(30)


class DiskFile:
    """A file being downloaded, written so that the disk keeps up with the network.

    Plain writes leave a whole download dirty in the page cache: the final fsync then
    waits for all of it, and on a machine short of free memory every new page costs a
    reclaim (measured here: 1 GB took 0.3 to 2.3 s to write, 0.7 to 1.2 CPU-seconds).
    Every ``WRITEBACK_STEP`` bytes the step just written is handed to the disk
    (``sync_file_range``, which does not wait), and the step before it, on the disk by
    then, is dropped from the page cache: 1 GB then took 0.3 to 0.6 s and about 0.3
    CPU-seconds, in the same runs, and the final fsync has almost nothing left to do.
    Where ``sync_file_range`` does not exist (not Linux) the file is written plainly.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.fd = fh.fileno()
        self.pos = os.lseek(self.fd, 0, os.SEEK_END)
        self.handed = self.pos  # written up to here has been handed to the disk
        self.dropped = self.pos  # and up to here is on the disk and out of the cache
        self._sfr = _sync_file_range()

    def write(self, data: bytes, /) -> int:
        n = self.fh.write(data)
        self.grown(n)
        return n

    def grown(self, n: int) -> None:
        """``n`` more bytes are at the file's end (written here, or appended by another
        process: OpenSSH's client writing a download itself)."""
        self.pos += n
        if self._sfr is not None and self.pos - self.handed >= WRITEBACK_STEP:
            self._writeback()

    def _writeback(self) -> None:
        self.fh.flush()
        self._range(self.handed, self.pos - self.handed, _SFR_WRITE)
        if self.handed > self.dropped:
            # The previous step: wait until it is on the disk, then drop it.
            self._range(self.dropped, self.handed - self.dropped,
                        _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self.fd, self.dropped, self.handed - self.dropped,
                                 os.POSIX_FADV_DONTNEED)
            self.dropped = self.handed
        self.handed = self.pos

    def _range(self, offset: int, length: int, flags: int) -> None:
        assert self._sfr is not None
        if self._sfr(self.fd, offset, length, flags) != 0:
            err = _ctypes_errno()
            if err in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP):
                self._sfr = None  # not for this file system: plain writes then
                return
            raise OSError(err, os.strerror(err))


#: sync_file_range(2)'s flags.
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
_SFR: list[Callable[[int, int, int, int], int] | None] = []


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), or None; looked up once, on first use."""
    if not _SFR:
        func = None
        try:
            import ctypes

            func = ctypes.CDLL(None, use_errno=True).sync_file_range
            func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            func.restype = ctypes.c_int
        except (OSError, AttributeError):
            func = None
        _SFR.append(func)
    return _SFR[0]


def _ctypes_errno() -> int:
    import ctypes

    return ctypes.get_errno()


def send_eof(ch: paramiko.Channel) -> None:
    """Tell the remote command its stdin has ended (``shutdown_write``), safely.

    paramiko's ``shutdown_write`` makes the EOF message under the channel's lock and
    sends it after letting the lock go; when the command has just ended, the transport's
    thread can answer the server's close in between, and the EOF then goes out after the
    channel's CLOSE. OpenSSH ends the whole connection for that ("ieof packet referred
    to nonexistent channel"; paramiko issues #1115, #1705): every later command of the
    task fails ("Unable to open channel"). Here the EOF is sent as paramiko sends a user
    message (waiting out a key exchange), but only while the channel is still open, under
    the lock that every message takes to go out: a CLOSE can then only follow it. A
    channel closed meanwhile needs no EOF (its CLOSE ends the command's stdin).
    """
    with ch.lock:
        m = None if ch.closed else ch._send_eof()  # type: ignore[attr-defined]
    t = ch.transport
    if m is None or t is None:
        return
    deadline = time.monotonic() + t.clear_to_send_timeout
    while True:
        t.clear_to_send.wait(0.1)
        if not t.is_active():
            return
        with t.clear_to_send_lock:
            if t.clear_to_send.is_set():
                if not ch.closed:  # its CLOSE is made only after closed is set
                    t._send_message(m)  # type: ignore[attr-defined]
                return
        if time.monotonic() > deadline:
            raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")

"""Running commands and streaming bytes over one verified SSH connection.

Everything goes through raw paramiko exec channels: never Fabric's ``in_stream``
(about 100 bytes/s) nor default SFTP. Streams use large windows, moderate
memoryview chunks and constant memory; stdout and stderr are drained by threads so
a full window can never deadlock a command.
"""

from __future__ import annotations

import array
import errno
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import paramiko
from fabric import Connection
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from aimms_ops.errors import ConnectionLost, OpsError
from aimms_ops.host import shell
from aimms_ops.host.ssh import WINDOW_SIZE, SshTarget, connect, resolve
from aimms_ops.inventory.model import Host

#: Bytes read or sent per call on an upload. 256 KiB measured fastest for sendall.
CHUNK = 256 * 1024
#: Bytes asked for per read on a download: the whole receive window, so that every
#: read takes all that paramiko has buffered. A smaller read makes paramiko move the
#: rest of its buffer to the front (``del buf[:n]``), a memmove of up to a window per
#: read: with a 64 MiB window and 1 MiB reads that was half of the download's time.
RECV_CHUNK = WINDOW_SIZE
#: Reads waiting for the writer thread of a download, at most (memory bound:
#: WRITE_QUEUE x WINDOW_SIZE).
WRITE_QUEUE = 4
#: A download file is handed to the disk in steps of this many bytes as it is written
#: (DiskFile), and each step is dropped from the page cache once it is on the disk.
WRITEBACK_STEP = 32 * 1024 * 1024

Progress = Callable[[int], None]


class Writable(Protocol):
    """Where a stream from the host goes: anything with a binary ``write``."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class RunResult:
    """What a remote command did."""

    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def last_error_line(self) -> str:
        """The last non-empty line of stderr (or stdout), for one-line errors."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.rc}"


class _Drain(threading.Thread):
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


class Remote:
    """One host of the inventory, connected and verified."""

    def __init__(self, host: Host, conn: Connection, target: SshTarget) -> None:
        self.host = host
        self.conn = conn
        self.target = target

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def server_key_fingerprint(self) -> str:
        transport = self._transport()
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.fingerprint}"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise OpsError(f"the SSH connection to {self.name} was lost",
                           "check the network and run the task again")
        return transport

    def _channel(self, command: str, *, bulk: bool = False) -> paramiko.Channel:
        try:
            ch = self._transport().open_session()
            if bulk:
                ch.in_buffer = _BulkPipe()  # before the command can send anything
            ch.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise OpsError(f"the SSH connection to {self.name} failed: {exc}",
                           "check the network and run the task again") from None
        return ch

    def _finish(self, ch: paramiko.Channel, command: str, out: _Drain | None, err: _Drain,
                what: str) -> RunResult:
        if out is not None:
            out.join()
        err.join()
        rc = ch.recv_exit_status()
        ch.close()
        if rc == -1:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(f"the SSH connection to {self.name} was lost during "
                                     f"{what}", "check the network and run the task again")
        stdout = out.text() if out is not None else ""
        return RunResult(command=command, rc=rc, stdout=stdout, stderr=err.text())

    # --- commands --------------------------------------------------------------------

    def run(self, command: str | Sequence[str], *, stdin: bytes | None = None,
            on_stdout: Callable[[str], None] | None = None,
            on_stderr: Callable[[str], None] | None = None,
            what: str = "a command") -> RunResult:
        """Run ``command`` (a list is quoted here) and collect its output."""
        line = command if isinstance(command, str) else shell.join(command)
        ch = self._channel(line)
        out = _Drain(ch.recv, on_stdout)
        err = _Drain(ch.recv_stderr, on_stderr)
        out.start()
        err.start()
        try:
            if stdin:
                ch.sendall(stdin)
            ch.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            pass  # the command's end (or the connection's) is read by _finish
        return self._finish(ch, line, out, err, what)

    def run_script(self, name: str, *args: str | int, stdin: bytes | None = None,
                   on_stdout: Callable[[str], None] | None = None,
                   on_stderr: Callable[[str], None] | None = None) -> RunResult:
        """Run a packaged ``.sh`` script on the host with ``args``."""
        return self.run(shell.script_command(name, args), stdin=stdin, on_stdout=on_stdout,
                        on_stderr=on_stderr, what=name)

    @contextmanager
    def hold(self, command: str, *, ready: str, what: str = "a lock") -> Iterator[RunResult | None]:
        """Keep ``command`` running on the host for the duration of the block.

        ``command`` prints the line ``ready`` once it holds what it holds (a lock),
        then reads its stdin until it closes: at the end of the block, or when this
        process dies or the connection drops, so nothing is left held. The block
        gets None once ``ready`` was read, or the RunResult of a command that ended
        without printing it (busy, refused).
        """
        ch = self._channel(command)
        err = _Drain(ch.recv_stderr, None)
        err.start()
        buf = b""
        try:
            while ready.encode() + b"\n" not in b"\n" + buf:
                data = ch.recv(65536)
                if not data:
                    break
                buf += data
            if ready.encode() + b"\n" not in b"\n" + buf:
                err.join()
                rc = ch.recv_exit_status()
                yield RunResult(command, rc, buf.decode("utf-8", "replace"), err.text())
                return
            yield None
        finally:
            try:
                ch.shutdown_write()
                ch.status_event.wait(10)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            ch.close()

    # --- streams ---------------------------------------------------------------------

    def stream_to_remote(self, src: BinaryIO, command: str, *,
                         progress: Progress | None = None,
                         on_stderr: Callable[[str], None] | None = None,
                         on_stdout: Callable[[str], None] | None = None,
                         what: str = "the upload") -> RunResult:
        """Send ``src`` to the stdin of remote ``command``; constant memory."""
        ch = self._channel(command)
        out = _Drain(ch.recv, on_stdout)
        err = _Drain(ch.recv_stderr, on_stderr)
        out.start()
        err.start()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = src.readinto(view)  # type: ignore[attr-defined]
                if not n:
                    break
                ch.sendall(view[:n])  # type: ignore[arg-type]  # any buffer will do
                if progress is not None:
                    progress(n)
            ch.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            # The remote command stopped reading (it failed, or the connection dropped):
            # its exit status and stderr say which.
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                ch.close()
                raise ConnectionLost(f"the SSH connection to {self.name} was lost during "
                                     f"{what}: {exc or type(exc).__name__}",
                                     "check the network and run the task again") from None
            if not (ch.closed or ch.eof_received or ch.exit_status_ready()):
                ch.close()  # a local read error: the remote side is still waiting
                raise OpsError(f"{what} to {self.name} failed: {exc}") from None
        except BaseException:
            ch.close()
            raise
        return self._finish(ch, command, out, err, what)

    def stream_from_remote(self, command: str, dst: Writable, *,
                           progress: Progress | None = None,
                           what: str = "the download") -> RunResult:
        """Write the stdout of remote ``command`` to ``dst``; constant memory.

        This thread only takes bytes off the channel; a writer thread hands them to
        ``dst`` (hashing, disk), so the two overlap. At most ``WRITE_QUEUE`` reads
        wait between them, which bounds the memory.
        """
        ch = self._channel(command, bulk=True)
        err = _Drain(ch.recv_stderr, None)
        err.start()
        writer = _Writer(dst)
        writer.start()
        try:
            ch.shutdown_write()
            while True:
                data = ch.recv(RECV_CHUNK)
                if not data:
                    break
                writer.put(data)
                if progress is not None:
                    progress(len(data))
            writer.finish()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            ch.close()
            writer.abort()
            transport = self.conn.client.get_transport()
            if isinstance(exc, EOFError) or transport is None or not transport.is_active():
                raise ConnectionLost(f"the SSH connection to {self.name} was lost during "
                                     f"{what}", "run the task again: it resumes where it "
                                     "stopped") from None
            raise OpsError(f"{what} from {self.name} failed: {exc}",
                           "run the task again: it resumes where it stopped") from None
        except BaseException:
            ch.close()
            writer.abort()
            raise
        return self._finish(ch, command, None, err, what)


class _BulkPipe(BufferedPipe):
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


class _Writer(threading.Thread):
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
        self.pos += n
        if self._sfr is not None and self.pos - self.handed >= WRITEBACK_STEP:
            self._writeback()
        return n

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


def open_host(host: Host) -> Remote:
    """Connect to ``host`` (resolved through ssh_config, host key verified)."""
    target = resolve(host.name, host.ssh_config)
    conn = connect(target, accept_new=host.accept_new_host_key)
    return Remote(host, conn, target)

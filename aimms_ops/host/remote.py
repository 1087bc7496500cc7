"""Running commands and streaming bytes over one verified SSH connection.

Everything goes through raw paramiko exec channels: never Fabric's ``in_stream``
(about 100 bytes/s) nor default SFTP. Streams use large windows, moderate
memoryview chunks and constant memory; stdout and stderr are drained by threads so
a full window can never deadlock a command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Generic, TypeVar

import paramiko
from fabric import Connection

from aimms_ops.core.errors import ConnectionLost, OpsError
from aimms_ops.host import bundle, events, openssh, shell
from aimms_ops.host.ssh import WINDOW_SIZE, SshTarget
from aimms_ops.host.streams import BulkPipe, Drain, Writable, Writer, send_eof

T = TypeVar("T")

#: Bytes read or sent per call on an upload. 256 KiB measured fastest for sendall.
CHUNK = 256 * 1024


#: Bytes asked for per read on a download: the whole receive window, so that every
#: read takes all that paramiko has buffered. A smaller read makes paramiko move the
#: rest of its buffer to the front (``del buf[:n]``), a memmove of up to a window per
#: read: with a 64 MiB window and 1 MiB reads that was half of the download's time.
RECV_CHUNK = WINDOW_SIZE


Progress = Callable[[int], None]


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


PYTHON3_FIX = "install python3 on the host: dnf install python3, apt-get install python3"


def no_program(res: RunResult) -> str:
    """Why a host program command could not start: "no python3", "python3 X.Y is too
    old"; "" when it ran."""
    if res.rc == 127 and "python3" in res.stderr:
        return "no python3"
    if res.rc == 69 and "too old for aimms-ops' host program" in res.stderr:
        words = res.stderr.split()
        version = words[words.index("python3") + 1] if "python3" in words[:-1] else "?"
        return f"python3 {version} is too old"
    return ""


class Remote:
    """One host, connected and verified; ``name`` is how errors name it."""

    def __init__(self, name: str, conn: Connection, target: SshTarget) -> None:
        self.name = name
        self.conn = conn
        self.target = target
        self._bundle = ""  # the bundle (its digest) known to be on the host

    @property
    def server_key_fingerprint(self) -> str:
        transport = self._transport()
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.fingerprint}"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            # After a Ctrl-C that landed inside paramiko, a lock of the transport may
            # never come free: closing must not keep the task from ending.
            bounded(self.close, 10)

    # --- plumbing ------------------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise OpsError(f"the SSH connection to {self.name} was lost",
                           "check the network and run the task again")
        return transport

    def _channel(self, command: str, *, bulk: bool = False) -> paramiko.Channel:
        if bundle.needs(command) and self._bundle != bundle.digest():
            self._send_bundle()
        try:
            ch = self._transport().open_session()
            if bulk:
                ch.in_buffer = BulkPipe()  # before the command can send anything
            ch.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise OpsError(f"the SSH connection to {self.name} failed: {exc}",
                           "check the network and run the task again") from None
        return ch

    def _finish(self, ch: paramiko.Channel, command: str, out: Drain | None, err: Drain,
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

    def _send_bundle(self) -> None:
        """Put this version's scripts and host program on the host, unless they are there
        already (host.bundle): one check, and one upload per version."""
        self._bundle = bundle.digest()  # the two commands below do not need it
        if self.run(bundle.check_command(), what="the bundle check").ok:
            return
        res = self.run(bundle.upload_command(), stdin=bundle.archive(), what="the upload of "
                       "the scripts")
        if not res.ok:
            self._bundle = ""
            raise OpsError(f"cannot put aimms-ops' scripts on {self.name} "
                           f"(~/{bundle.CACHE}): {res.last_error_line()}",
                           f"check the disk and the home directory of the login on {self.name}")

    # --- commands --------------------------------------------------------------------

    def run(self, command: str | Sequence[str], *, stdin: bytes | None = None,
            on_stdout: Callable[[str], None] | None = None,
            on_stderr: Callable[[str], None] | None = None,
            what: str = "a command") -> RunResult:
        """Run ``command`` (a list is quoted here) and collect its output."""
        line = command if isinstance(command, str) else shell.join(command)
        ch = self._channel(line)
        out = Drain(ch.recv, on_stdout)
        err = Drain(ch.recv_stderr, on_stderr)
        out.start()
        err.start()
        try:
            if stdin:
                ch.sendall(stdin)
            send_eof(ch)
        except (OSError, paramiko.SSHException, EOFError):
            pass  # the command's end (or the connection's) is read by _finish
        return self._finish(ch, line, out, err, what)

    def run_script(self, name: str, *args: str | int, stdin: bytes | None = None,
                   on_stdout: Callable[[str], None] | None = None,
                   on_stderr: Callable[[str], None] | None = None) -> RunResult:
        """Run a packaged ``.sh`` script on the host with ``args``."""
        return self.run(bundle.script_command(name, args), stdin=stdin, on_stdout=on_stdout,
                        on_stderr=on_stderr, what=name)

    def run_program(self, *args: str | int, stdin: bytes | None = None,
                    on_stdout: Callable[[str], None] | None = None) -> RunResult:
        """Run a command of the host program (aimms_ops.agent) with ``args``; an OpsError
        when the host's python3 cannot run it (absent, too old). ``on_stdout``: each line
        of its stdout as it comes (its events)."""
        return self.program_ran(self.run(bundle.program_command([str(a) for a in args]),
                                         stdin=stdin, on_stdout=on_stdout, what=str(args[0])))

    def program_ran(self, res: RunResult) -> RunResult:
        """``res`` of a command that starts the host program; an OpsError when the host's
        python3 could not run it (absent, too old)."""
        why = no_program(res)
        if why:
            raise OpsError(f"{why} on {self.name}: aimms-ops' host program cannot run there",
                           PYTHON3_FIX)
        return res

    def program_facts(self, *args: str | int) -> events.Facts:
        """The facts of the host program's read-only command ``args`` (its ``facts``
        event); one OpsError when it cannot run or its output was cut short."""
        res = self.run_program(*args)
        return events.facts(res.stdout, str(args[0]), self.name,
                            "" if res.ok else res.last_error_line())

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
        err = Drain(ch.recv_stderr, None)
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
            def release() -> None:
                try:
                    send_eof(ch)
                    ch.status_event.wait(10)
                except (OSError, paramiko.SSHException, EOFError):
                    pass
                ch.close()

            # Bounded: after a Ctrl-C that landed inside paramiko, its locks may never
            # come free again; the process ends anyway, and so does the held command.
            bounded(release, 12)

    # --- streams ---------------------------------------------------------------------

    def stream_to_remote(self, src: BinaryIO, command: str, *,
                         progress: Progress | None = None,
                         on_stderr: Callable[[str], None] | None = None,
                         on_stdout: Callable[[str], None] | None = None,
                         what: str = "the upload") -> RunResult:
        """Send ``src`` to the stdin of remote ``command``; constant memory."""
        ch = self._channel(command)
        out = Drain(ch.recv, on_stdout)
        err = Drain(ch.recv_stderr, on_stderr)
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
            send_eof(ch)
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
        wait between them, which bounds the memory. Asked for (``host.openssh``), the
        bytes come through OpenSSH's client instead, which writes a ``dst`` that is a
        file (``streams.FileSink``) itself.
        """
        if openssh.available():
            if bundle.needs(command) and self._bundle != bundle.digest():
                self._send_bundle()
            try:
                if hasattr(dst, "appended"):
                    got = openssh.to_file(self.target, command, dst,  # type: ignore[arg-type]
                                          progress=progress)
                else:
                    got = openssh.stream(self.target, command, dst, progress=progress)
            except openssh.Cut as exc:
                raise ConnectionLost(f"the SSH connection to {self.name} was lost during "
                                     f"{what}: {exc}", "run the task again: it resumes where "
                                     "it stopped") from None
            if got is not None:
                return RunResult(command=command, rc=got[0], stdout="", stderr=got[1])
        ch = self._channel(command, bulk=True)
        err = Drain(ch.recv_stderr, None)
        err.start()
        writer = Writer(dst)
        writer.start()
        try:
            send_eof(ch)
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




class Pending(Generic[T]):
    """A call running in a daemon thread beside the task's own work (:func:`in_background`)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the caller by result())
            self._error = exc

    def result(self) -> T:
        """Wait for the call; what it returned, or what it raised, raised here."""
        while self._thread.is_alive():
            self._thread.join(0.1)  # a Ctrl-C here reaches the task at once
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def ended_within(self, seconds: float) -> bool:
        """Wait at most ``seconds``; whether the call has ended (what it raised is kept)."""
        self._thread.join(seconds)
        return not self._thread.is_alive()


def in_background(fn: Callable[[], T]) -> Pending[T]:
    """Start ``fn`` now in a daemon thread, on its own channels of the same connection.

    For reads that do not depend on each other (the live cluster's facts while the dump
    is checked): a task interrupted meanwhile does not wait for it.
    """
    return Pending(fn)


def bounded(fn: Callable[[], object], seconds: float) -> bool:
    """Run ``fn`` for at most ``seconds`` (in a daemon thread); whether it finished.

    For the clean-up of an interrupted task: a KeyboardInterrupt can land anywhere in
    paramiko, even while it holds a lock of the transport, and a clean-up that then
    waits on the transport must not keep the task from ending. What ``fn`` raises is
    its own failure to clean up, and is dropped (never asked for).
    """
    return Pending(fn).ended_within(seconds)

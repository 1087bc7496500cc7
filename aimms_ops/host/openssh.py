"""The bytes of a download through OpenSSH's own client.

paramiko decrypts in Python, 32 KiB at a time, on the cores that also hash and write;
``ssh`` does it in C, as ``scp`` does (asked for with ``AIMMS_OPS_TRANSPORT=openssh``:
see ``TRANSPORT_ENV`` for why not by default). A download into a file (``.part``) is then
written by ``ssh`` itself, appending to the file, while this process reads back what
it wrote to hash it and show it: no byte of the stream crosses a pipe into Python, as
with ``scp`` (:func:`to_file`). The control of a task stays with paramiko (its host key
check, its commands); the bulk read goes through ``ssh``, started so that it reaches the
host exactly as the task did: the same alias and ssh_config (``ssh -G`` resolved the task's
target from them), its known_hosts only (``StrictHostKeyChecking=yes``: an unknown or
changed key refuses, never asks), ``BatchMode=yes`` (no prompt). When ``ssh`` cannot
connect at all (exit 255 before any byte: no agent key it may use, a key the inventory
accepted on first use but that known_hosts lacks) the caller falls back to paramiko; once
bytes have come, a failure is the stream's own (a download resumes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from aimms_ops.host.ssh import SshTarget
from aimms_ops.host.streams import FileSink, Writable, Writer

#: Bytes asked for per read of ssh's stdout (and its pipe's size), and handed on at once.
READ = 1024 * 1024
BATCH = 4 * READ

#: Set to ``openssh`` to have OpenSSH's client carry the bytes of downloads: into a file
#: it writes them itself (:func:`to_file`), into a pipe they come through it. Not the
#: default: on loopback, with the 2 cores shared with the sandbox's sshd, a verified
#: download of 1 GB took 2.9-3.1 s of stream this way and 2.3-2.4 s through paramiko
#: (``scp``, unverified, 2.5-2.7 s in all; docs/performance.md). What costs is the
#: read-back and the hash on cores that ssh and sshd already fill.
TRANSPORT_ENV = "AIMMS_OPS_TRANSPORT"

#: How long to wait for ``ssh`` to write more when everything it wrote was read back.
POLL = 0.01

#: ssh's own exit status for its failures (connection, authentication, host key).
SSH_FAILED = 255


def available() -> bool:
    """Whether bulk reads go through ``ssh`` here (asked for, and ssh is installed)."""
    return os.environ.get(TRANSPORT_ENV, "") == "openssh" and shutil.which("ssh") is not None


def argv(target: SshTarget, command: str) -> list[str]:
    """``ssh`` reaching ``target`` as the task did, running ``command`` (one shell line)."""
    out = ["ssh"]
    if target.config_file:
        out += ["-F", target.config_file]
    out += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "ClearAllForwardings=yes", "-o", "RequestTTY=no", "-o", "LogLevel=ERROR",
            "--", target.alias, command]
    return out


class Cut(Exception):
    """ssh's stream ended part-way: ``received`` bytes came; ``message`` is ssh's word."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def stream(target: SshTarget, command: str, dst: Writable, *,
           progress: Callable[[int], None] | None = None) -> tuple[int, str] | None:
    """``command``'s stdout on the host into ``dst``, through ``ssh``; its exit status and
    stderr, or None when ssh could not connect (nothing was written: fall back). A stream
    cut after bytes came raises :class:`Cut`. Constant memory: at most a few reads wait
    for ``dst`` (streams.Writer)."""
    proc = subprocess.Popen(argv(target, command), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    writer = Writer(dst)
    writer.start()
    received = 0
    fd = proc.stdout.fileno()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), READ)  # Linux: fewer reads
    batch = bytearray()
    try:
        while True:
            data = os.read(fd, READ)
            if data:
                batch += data
            # Handed on in batches: a queue hand-off and a bar update per pipe read
            # (64 KiB) cost more than the copy.
            if len(batch) >= BATCH or (not data and batch):
                writer.put(bytes(batch))
                received += len(batch)
                if progress is not None:
                    progress(len(batch))
                batch = bytearray()
            if not data:
                break
        writer.finish()
        err = proc.stderr.read().decode("utf-8", "replace")
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        writer.abort()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if rc == SSH_FAILED:
        if received == 0:
            return None
        raise Cut(_last(err) or "ssh ended the stream", received)
    return rc, err


def to_file(target: SshTarget, command: str, sink: FileSink, *,
            progress: Callable[[int], None] | None = None) -> tuple[int, str] | None:
    """``command``'s stdout on the host appended to ``sink``'s file by ``ssh`` itself;
    its exit status and stderr, or None when ssh could not connect (nothing was written:
    fall back). What ssh writes is read back as it lands (from the page cache) and given
    to ``sink.appended`` and ``progress`` in order, so the bar moves with the bytes on
    disk and the hash is done when the stream is. A stream cut after bytes came raises
    :class:`Cut`. Constant memory: one read of ``READ`` bytes at a time."""
    path, fd = sink.file()
    pos = os.lseek(fd, 0, os.SEEK_END)
    start = pos
    rfd = os.open(path, os.O_RDONLY)
    try:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([*_with_parent(), *argv(target, command)],
                                    stdin=subprocess.DEVNULL, stdout=fd, stderr=err)
            try:
                while True:
                    done = proc.poll() is not None  # before the read: then it sees all
                    data = os.pread(rfd, READ, pos)
                    if data:
                        pos += len(data)
                        sink.appended(data)
                        if progress is not None:
                            progress(len(data))
                    elif done:
                        break
                    else:
                        time.sleep(POLL)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            rc = proc.returncode
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
    finally:
        os.close(rfd)
    if rc != 0 and _full(fd):
        # ssh ends with 255 and says nothing when it cannot write its stdout
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if rc == SSH_FAILED:
        if pos == start:
            return None
        raise Cut(_last(text) or "ssh ended the stream", pos - start)
    return rc, text


def _with_parent() -> list[str]:
    """What makes ``ssh`` die with this process where the system can (Linux's
    ``setpriv --pdeathsig``): a task killed outright (SIGKILL) must not leave it writing
    into the file that the same download, run again, resumes. Elsewhere the download's
    lock on its file, which ``ssh`` holds as long as it writes, refuses the rerun until
    it ends."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _full(fd: int) -> bool:
    """Whether the file system of ``fd`` has no room left for one more read's bytes."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < READ


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""

"""The bytes of a download through OpenSSH's own client (``AIMMS_OPS_TRANSPORT=openssh``).

paramiko decrypts in Python, 32 KiB at a time, on the cores that also hash and write;
``ssh`` does it in C, as ``scp`` does. The control of a task stays with paramiko (its
host key check, its commands); a bulk read of the host's stdout goes through ``ssh``,
started so that it reaches the host exactly as the task did: the same alias and
ssh_config (``ssh -G`` resolved the task's target from them), its known_hosts only
(``StrictHostKeyChecking=yes``: an unknown or changed key refuses, never asks),
``BatchMode=yes`` (no prompt). When ``ssh`` cannot connect at all (exit 255 before any
byte: no agent key it may use, a key the inventory accepted on first use but that
known_hosts lacks) the caller falls back to paramiko; once bytes have come, a failure is
the stream's own (a download resumes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable

from aimms_ops.host.ssh import SshTarget
from aimms_ops.host.streams import Writable, Writer

#: Bytes asked for per read of ssh's stdout (and its pipe's size), and handed on at once.
READ = 1024 * 1024
BATCH = 4 * READ

#: Set to ``openssh`` to send the bytes of downloads through ssh. Not the default: on
#: loopback with 2 cores shared with sshd, 500 MB took 2.6 s this way, 1.9 s through
#: paramiko and 1.4 s with scp (the hand-off through a pipe into Python costs more than
#: paramiko's own decryption); see README, Performance.
TRANSPORT_ENV = "AIMMS_OPS_TRANSPORT"

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


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""

"""Run ``fab`` command lines as forks of one process that has Fabric, Paramiko and the
tasks' modules imported already (a fork server, like multiprocessing's): each run is
``.venv/bin/fab``'s own code (``fabric.main.program.run()``) in a process of its own,
with its own argv, environment, working directory, stdin, stdout and stderr, but it
does not pay Python's start and those imports again: about 0.35 s of CPU per run, on
a suite that runs ``fab`` about 700 times on two cores.

What differs from ``subprocess.run([fab, ...])``, and why no test here depends on it:
the run's parent is the server, not the test (its exit status reaches the test through
the server); its ``/proc/PID/cmdline`` is the server's (a test that reads the command
lines of the machine runs ``fab`` as a process of its own:
``Sandbox.fab(..., own_process=True)``); every run shares the server's hash seed.
``AIMMS_OPS_TEST_FORK=0`` runs every ``fab`` of the suite as a process of its own.

Used by ``tests/sandbox_client.py``; the server is ``python fab_fork.py SOCKET``, ended
when the test process that started it ends (its stdin closes). Plain Python: no pytest.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import locale
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FAB = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "fab"
#: What a request may hold: argv, env and cwd, as JSON.
_MAX_REQUEST = 1 << 20


def enabled() -> bool:
    return os.environ.get("AIMMS_OPS_TEST_FORK", "1") != "0"


# --- the server ---------------------------------------------------------------------


def _serve(path: str) -> tuple[dict, list[int]] | None:
    """Serve runs at ``path`` until stdin closes (None); in each forked child, return
    its request and its three file descriptors."""
    import fabric.main  # noqa: F401 - what the runs share: imported once, here

    import aimms_ops.cli  # noqa: F401

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    running: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([listener, sys.stdin, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(running)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
            return None
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        request, fds = _receive(conn)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w):
                os.close(fd)
            listener.close()
            conn.close()
            for c in running.values():
                c.close()
            return request, fds
        for fd in fds:
            os.close(fd)
        conn.sendall(f"pid {pid}\n".encode())
        running[pid] = conn


def _reap(running: dict[int, socket.socket]) -> None:
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"rc {os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass  # the test gave up on it (a timeout)
            conn.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(_MAX_REQUEST, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return json.loads(data), list(fds)


def _become(request: dict, fds: list[int]) -> None:
    """Make this forked child what ``fab ARGV`` started by subprocess would be."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [os.fsdecode(bytes.fromhex(a)) for a in request["argv"]]
    sys.path[0] = str(FAB.parent)


def main() -> None:
    served = _serve(sys.argv[1])
    if served is None:
        return
    _become(*served)
    from fabric.main import program

    sys.exit(program.run())  # what .venv/bin/fab runs


# --- the client ---------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="aimms-ops-fab.")
        atexit.register(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "s")
        self.proc = subprocess.Popen(
            [str(FAB.parent / "python"), __file__, self.path], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            raise RuntimeError(f"the fab fork server did not start: {line!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None


_SERVER: _Server | None = None
_LOCK = threading.Lock()


def _server() -> _Server:
    global _SERVER
    with _LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = _Server()
        return _SERVER


def run(args: list[str], *, env: dict[str, str], cwd: str | os.PathLike[str],
        input: str | None = None, timeout: float | None = None,
        ) -> subprocess.CompletedProcess:
    """``subprocess.run([FAB, *args], env=env, cwd=cwd, input=input, text=True,
    capture_output=True, timeout=timeout)``, as a fork of the server."""
    argv = [str(FAB), *args]
    encoding = locale.getpreferredencoding(False)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if input is None:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY), None
    else:
        in_r, in_w = os.pipe()
    request = json.dumps({"argv": [os.fsencode(a).hex() for a in argv],
                          "env": env, "cwd": os.fspath(cwd)}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_server().path)
        conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", [in_r, out_w, err_w]))])
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    threads = [threading.Thread(target=_drain, args=(fd, chunks[fd]), daemon=True)
               for fd in (out_r, err_r)]
    if in_w is not None:
        threads.append(threading.Thread(target=_feed, args=(in_w, input.encode(encoding)),
                                        daemon=True))
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    reader = conn.makefile("rb")
    pid = int(reader.readline().split()[1])
    conn.settimeout(timeout)
    try:
        line = reader.readline()
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TimeoutError
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise subprocess.TimeoutExpired(argv, timeout or 0, b"".join(chunks[out_r]),
                                        b"".join(chunks[err_r])) from None
    finally:
        reader.close()
        conn.close()
    # The run's status, as the server saw it end (a run killed by a signal: minus it).
    returncode = int(line.split()[1]) if line.startswith(b"rc ") else -signal.SIGKILL
    return subprocess.CompletedProcess(
        argv, returncode, _text(b"".join(chunks[out_r]), encoding),
        _text(b"".join(chunks[err_r]), encoding))


def _text(data: bytes, encoding: str) -> str:
    """As subprocess decodes a run's output in text mode (universal newlines)."""
    return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")


def _drain(fd: int, into: list[bytes]) -> None:
    try:
        while chunk := os.read(fd, 65536):
            into.append(chunk)
    finally:
        os.close(fd)


def _feed(fd: int, data: bytes) -> None:
    """Write ``data`` to the run's stdin and close it (a run that stops reading early
    gets the rest dropped, as subprocess does)."""
    view = memoryview(data)
    try:
        with contextlib.suppress(BrokenPipeError):
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()

"""``fab`` started from a fork server: Python, Fabric, Paramiko and aimms-ops imported once
per test worker, each command line then run in a process of its own, forked from it.

A ``fab`` process spends about 0.35 CPU-s importing before it does anything; the
integration suite starts several hundred. Here the server imports what ``.venv/bin/fab``
imports and waits; for each command line it forks a process that does what the console
script does (``fabric.main.program.run()``) with the command's argv, working directory,
environment and standard streams (passed as file descriptors), and exits as any
interpreter exits (atexit handlers, threads). The server itself never runs a task, so
each command starts from the state a fresh ``fab`` has after its imports.

Protocol (a SOCK_SEQPACKET Unix socket): the client sends one JSON message, ``{"argv",
"cwd", "env"}``, with three descriptors (stdin, stdout, stderr); the server answers
``{"pid": N}`` (the command's process, which the client may kill), then ``{"status":
RC}`` once it has ended (``subprocess``'s returncode: negative for a signal). A
middle process waits for the command, so the server never waits and never holds a
thread (a fork from a process with threads is unsafe). The server exits once its
parent (the test worker) is gone.

    python tests/fab_server.py SOCKET
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def _run_command(req: dict, fds: list[int]) -> None:
    """In the forked command process: become ``fab`` with the request's argv, cwd, env
    and streams, run, and exit through the interpreter's normal exit."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = [os.fsdecode(bytes.fromhex(a)) for a in req["argv"]]
    from fabric.main import program

    sys.exit(program.run())


def _serve_one(conn: socket.socket, listener: socket.socket) -> None:
    """In the middle process: fork the command, say its pid, wait, say its status."""
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _run_command(req, fds)
        return
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid}).encode())
    _, status = os.waitpid(pid, 0)
    conn.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
    os._exit(0)


def serve(path: str) -> None:
    import fabric.main  # noqa: F401  what .venv/bin/fab imports
    import invoke  # noqa: F401
    import paramiko  # noqa: F401

    import aimms_ops.cli  # noqa: F401  what the fabfile imports

    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(2)
    # The middle processes are reaped by the kernel: the server never waits.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _serve_one(conn, listener)
            return  # the command's process, on its way out through sys.exit
        conn.close()
    os.unlink(path)


if __name__ == "__main__":
    serve(sys.argv[1])

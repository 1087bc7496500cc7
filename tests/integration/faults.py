"""Fault injection on the sandbox host: drop SSH sessions, stop the Docker engine,
watch command lines, run fab in the background.

Everything here acts only on the processes of this worktree's own sandbox instance:
the sshd whose pid file is in its state dir (and that sshd's descendants), and the
dockerd whose pid file is there too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import FAB, REPO, Sandbox


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\x00", " ").strip()


def _ppid_and_state(pid: int) -> tuple[int, str]:
    stat = _read(f"/proc/{pid}/stat")
    # pid (comm) state ppid ...; comm may hold spaces and parentheses.
    rest = stat[stat.rfind(")") + 2:].split()
    if len(rest) < 2:
        return -1, "?"
    return int(rest[1]), rest[0]


def process_tree() -> dict[int, list[int]]:
    """Children of every live process (zombies left out), by parent pid."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ppid, state = _ppid_and_state(int(entry))
        if ppid >= 0 and state != "Z":
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (zombies left out), from the kernel's list of each
    of its threads' children: a few reads where :func:`process_tree` reads every
    process of the machine (the waits below look many times a second)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids = [int(k) for tid in tids for k in _read(f"/proc/{pid}/task/{tid}/children").split()]
    return [k for k in kids if alive(k)]


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """Every live process below ``pid``: from ``tree`` when given (one look at the
    whole machine), else walked from ``pid`` down."""
    below = children if tree is None else (lambda p: tree.get(p, []))
    out, todo = [], list(below(pid))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(below(p))
    return out


def alive(pid: int) -> bool:
    return _ppid_and_state(pid)[1] not in ("?", "Z")


def state_dir(sandbox: Sandbox) -> Path:
    return Path(sandbox.env["SANDBOX_STATE"])


def _own_pid(sandbox: Sandbox, daemon: str) -> int:
    """The pid of this instance's ``daemon`` (sshd or dockerd), checked against its state dir."""
    state = state_dir(sandbox)
    text = _read(str(state / f"{daemon}.pid")).strip()
    assert text.isdigit(), f"no pid file for {daemon} in {state}"
    pid = int(text)
    assert alive(pid) and str(state) in cmdline(pid), (
        f"pid {pid} of {state}/{daemon}.pid is not this instance's {daemon}: {cmdline(pid)}")
    return pid


def sshd_pid(sandbox: Sandbox) -> int:
    return _own_pid(sandbox, "sshd")


def container_processes(sandbox: Sandbox) -> list[int]:
    """The processes inside this instance's containers, whatever containers it runs now.

    Each container's processes descend from a ``containerd-shim`` whose ``-address`` is
    this instance's containerd socket (the shims are re-parented to init, so they are
    not below this instance's dockerd). Another instance's containers are not included.
    """
    address = f"-address {state_dir(sandbox)}/run/containerd/"
    tree = process_tree()
    shims = [p for p in (q for kids in tree.values() for q in kids)
             if cmdline(p).startswith("/usr/bin/containerd-shim") and address in cmdline(p)]
    return [p for shim in shims for p in descendants(shim, tree)]


def sessions_running(sandbox: Sandbox, marker: str) -> list[int]:
    """The per-connection sshd processes of this instance whose session runs ``marker``.

    Under the listener each connection is ``sshd: USER [priv]`` with a child
    ``sshd: USER@notty``, whose children are the session's commands.
    """
    found = []
    for conn in children(sshd_pid(sandbox)):
        below = {p: cmdline(p) for p in descendants(conn)}
        if any(marker in cmd for cmd in below.values() if not cmd.startswith("sshd")):
            found.append(conn)
            found.extend(p for p, cmd in below.items() if cmd.startswith("sshd"))
    return found


def drop_connection(sandbox: Sandbox, marker: str, *, timeout: float = 60,
                    when: Callable[[], bool] | None = None, every: float = 0.02,
                    run: Running | None = None, or_ended: bool = False) -> list[int]:
    """Kill (SIGKILL) the sshd processes serving the session that runs ``marker``.

    Waits until such a session exists and ``when()`` (if given) is true, and stops at
    once if ``run`` ended first (an error; with ``or_ended``, no pid is returned). The
    session's own commands are left alone: what they do next is what is tested.
    Returns the pids killed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if or_ended and run is not None and run.ended():
            return []
        _not_ended(run)
        pids = sessions_running(sandbox, marker)
        if pids and (when is None or when()):
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return pids
        time.sleep(every)
    raise AssertionError(f"no session running {marker!r} appeared within {timeout} s")


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def _tcp_connections() -> list[tuple[int, int, str]]:
    """(local port, remote port, inode) of every IPv4 TCP socket on loopback."""
    rows = []
    for line in _read("/proc/net/tcp").splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        rows.append((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[9]))
    return rows


def drop_client(sandbox: Sandbox, client_pid: int) -> list[int]:
    """Kill (SIGKILL) the sshd processes serving the SSH connection of ``client_pid``.

    The connection is found by its TCP ports; only processes under this instance's
    sshd are killed. Returns the pids killed (empty when the client has no connection).
    """
    port = int(sandbox.env["SANDBOX_PORT"])
    mine = _socket_inodes(client_pid)
    conns = _tcp_connections()
    client_ports = {lp for lp, rp, inode in conns if rp == port and inode in mine}
    server_inodes = {inode for lp, rp, inode in conns if lp == port and rp in client_ports}
    if not server_inodes:
        return []
    killed = []
    for pid in descendants(sshd_pid(sandbox)):
        if cmdline(pid).startswith("sshd") and _socket_inodes(pid) & server_inodes:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def wait_gone(sandbox: Sandbox, marker: str, timeout: float = 120) -> None:
    """Wait until no process of the login user runs a command line holding ``marker``."""
    uid = int(subprocess.run(["id", "-u", sandbox.user], capture_output=True, text=True,
                             check=True).stdout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in (int(e) for e in os.listdir("/proc") if e.isdigit())
                if alive(p) and _uid(p) == uid and marker in cmdline(p)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes running {marker!r} still alive after {timeout} s")


def _uid(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return -1


# --- the Docker engine -------------------------------------------------------------


def stop_dockerd(sandbox: Sandbox, timeout: float = 60) -> None:
    """Stop this instance's dockerd (SIGTERM, by its pid file) and wait for it to end."""
    pid = _own_pid(sandbox, "dockerd")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)


def start_sandbox(sandbox: Sandbox) -> None:
    """Bring the instance back (dockerd, containers) with the same code as `make sandbox`."""
    subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=600)
    sandbox.wait_ready()


# --- running fab in the background ----------------------------------------------------


@dataclass
class Running:
    """A fab process started in the background, with its output collected at the end."""

    proc: subprocess.Popen
    stdout: str = ""
    stderr: str = ""

    def wait(self, timeout: float = 120) -> int:
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_hung()
            self.stdout, self.stderr = self.proc.communicate()
            raise AssertionError(f"fab hung for {timeout} s; stderr (with where each of "
                                 f"its threads was): {self.stderr}") from None
        return self.proc.returncode

    @property
    def returncode(self) -> int:
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_hung(self) -> None:
        """Kill a fab that hangs, once it printed where each of its threads is (SIGUSR1:
        aimms_ops.cli.coreopts.stacks_on_sigusr1) on its stderr."""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        self.proc.kill()

    def ended(self) -> bool:
        """True once fab has exited; then its output is collected."""
        if self.proc.poll() is None:
            return False
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.wait(30)
        return True


#: The runs started by start_fab and not yet ended: a failing test's run is ended after
#: it (end_leftover_runs), so that it cannot go on into the next test's cluster.
STARTED: list[Running] = []


def end_leftover_runs() -> list[str]:
    """Interrupt (as Ctrl-C does) every run a test left going; what each was."""
    left = [r for r in STARTED if r.proc.poll() is None]
    STARTED.clear()
    for run in left:
        run.signal(signal.SIGINT)
    for run in left:
        try:
            run.wait(120)
        except AssertionError:
            pass
    return [str(r.proc.args) for r in left]


def start_fab(sandbox: Sandbox, *args: str, inventory: Path | None = None,
              env: dict[str, str] | None = None) -> Running:
    full_env = {**os.environ, "AIMMS_OPS_INVENTORY": str(inventory or sandbox.inventory),
                **(env or {})}
    full_env.pop("AIMMS_OPS_DEBUG", None)
    # SIGINT as a terminal gives it, whatever this run inherited: a test run started in
    # the background (``&`` of a non-interactive shell) ignores SIGINT, and so would fab.
    proc = subprocess.Popen([str(FAB), *args], env=full_env, cwd=REPO, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    run = Running(proc)
    STARTED.append(run)
    return run


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(sandbox: Sandbox, *args: str, line: str, sig: int = signal.SIGINT,
                   timeout: float = 300, inventory: Path | None = None) -> Running:
    """Run fab with ``args`` and send it ``sig`` (Ctrl-C) the moment it prints a line
    holding ``line`` on stderr (a step it reports, e.g. ``] rm: done in``), as an
    operator watching it would; returns the ended run, its output collected.

    The signal comes while fab goes on to what follows that line: a test says what
    must hold wherever in the next moment it lands.
    """
    run = start_fab(sandbox, *args, inventory=inventory)
    assert run.proc.stdout is not None and run.proc.stderr is not None
    out: list[str] = []
    err: list[str] = []
    seen = threading.Event()

    def drain_stdout() -> None:
        out.extend(iter(run.proc.stdout.readline, ""))  # type: ignore[union-attr]

    def drain_stderr() -> None:
        for text in iter(run.proc.stderr.readline, ""):  # type: ignore[union-attr]
            err.append(text)
            if line in text and not seen.is_set():
                run.signal(sig)
                seen.set()

    readers = [threading.Thread(target=f, daemon=True) for f in (drain_stdout, drain_stderr)]
    for t in readers:
        t.start()
    hung = False
    try:
        run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.kill_hung()
        hung = True
    finally:
        for t in readers:
            t.join(30)
    run.stdout, run.stderr = "".join(out), "".join(err)
    if hung:
        raise AssertionError(f"fab hung for {timeout} s; stderr (with where each of its "
                             f"threads was): {run.stderr}")
    assert seen.is_set(), f"fab ended (rc={run.returncode}) without printing {line!r}: " \
        f"{run.stderr}"
    return run


# --- waiting and the task list ---------------------------------------------------------


def wait_until(cond: Callable[[], object], timeout: float, every: float = 0.05,
               run: Running | None = None) -> None:
    """Wait until ``cond()``; with ``run``, stop at once if that fab ended first."""
    deadline = time.monotonic() + timeout
    while not cond():
        _not_ended(run)
        assert time.monotonic() < deadline, f"gave up waiting after {timeout} s"
        time.sleep(every)


def _not_ended(run: Running | None) -> None:
    if run is not None and run.ended():
        raise AssertionError(f"fab ended (rc={run.returncode}) before the moment waited "
                             f"for: {run.stderr}")


_TASKS: set[str] | None = None


def available_tasks(sandbox: Sandbox) -> set[str]:
    """The task names ``fab -l`` lists (read once)."""
    global _TASKS
    if _TASKS is None:
        proc = sandbox.fab("-l")
        assert proc.returncode == 0, proc.stderr
        _TASKS = {line.split()[0] for line in proc.stdout.splitlines()
                  if line.startswith("  ") and not line.startswith("   ")}
    return _TASKS


def require_task(sandbox: Sandbox, task: str) -> None:
    """Fail, not skip, when ``fab -l`` does not list ``task``: a renamed or removed task
    must not silently take its rows out of a suite."""
    if task not in available_tasks(sandbox):
        pytest.fail(f"fab -l does not list {task}: rename it in this suite's rows too, or "
                    f"remove its rows with the task (fab -l lists: "
                    f"{', '.join(sorted(available_tasks(sandbox)))})", pytrace=False)


def error_line(proc) -> str:
    """The one line a failed task printed, and no traceback anywhere.

    That is the last line on stderr; a task that reports to monitors on stdout (its
    first line is the summary, as `fab status` does) may leave stderr empty.
    """
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if lines:
        return lines[-1]
    first = proc.stdout.splitlines()[:1]
    assert first and first[0].strip(), f"nothing printed (rc={proc.returncode})"
    return first[0]

"""The bench's measurements: one timed run (wall time, CPU-seconds here and on the
sandbox host, peak RSS, load average) and the medians of a side's rounds."""

from __future__ import annotations

import glob
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.sandbox_client import Sandbox


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}" if n < 100 \
                else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def tail(text: str, n: int = 3) -> str:
    return " | ".join(ln for ln in text.strip().splitlines()[-n:])


def load1() -> float:
    return os.getloadavg()[0]


# --- CPU-seconds of the sandbox host ------------------------------------------------------


def _proc_times(pid: int, children: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: its reaped sessions
    return ticks / os.sysconf("SC_CLK_TCK")


class HostCPU:
    """CPU-seconds used so far by the sandbox host: its sshd (with every session it has
    reaped: the shells, cat, docker CLI, the host's python3, igzip, age, rclone), its
    dockerd, containerd and shims, its S3 server, and the postgres container's cgroup.
    These are the sandbox's own processes, so other work on the machine is not in it."""

    def __init__(self, sb: Sandbox) -> None:
        self.state = sb.env.get("SANDBOX_STATE", "")
        self.sb = sb
        self._cgroup: str | None = None

    def _sshd_pids(self) -> list[int]:
        pids = []
        for name in ("sshd.pid", "vault-sshd.pid"):
            try:
                pids.append(int(Path(self.state, name).read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def _daemons(self, skip: set[int]) -> list[int]:
        out = []
        for d in glob.glob("/proc/[0-9]*"):
            pid = int(d.rsplit("/", 1)[1])
            if pid in skip:
                continue
            try:
                cmd = Path(d, "cmdline").read_bytes()
            except OSError:
                continue
            if self.state and self.state.encode() + b"/" in cmd:
                out.append(pid)
        return out

    def _container_usage(self) -> float:
        if self._cgroup is None:
            cid = self.sb.container()
            hits = glob.glob(f"/sys/fs/cgroup/cpuacct/docker/{cid}*/cpuacct.usage") + \
                glob.glob(f"/sys/fs/cgroup/system.slice/docker-{cid}*.scope/cpu.stat")
            self._cgroup = hits[0] if hits else ""
        if not self._cgroup:
            return 0.0
        try:
            text = Path(self._cgroup).read_text()
        except OSError:
            self._cgroup = None  # the container was recreated
            return 0.0
        if self._cgroup.endswith("cpuacct.usage"):
            return int(text) / 1e9
        m = re.search(r"usage_usec (\d+)", text)
        return int(m.group(1)) / 1e6 if m else 0.0

    def now(self) -> float:
        sshd = self._sshd_pids()
        total = sum(_proc_times(p, children=True) for p in sshd)
        total += sum(_proc_times(p, children=False) for p in self._daemons(set(sshd)))
        return total + self._container_usage()


# --- one timed run ---------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    cpu_here: float
    cpu_host: float
    maxrss_kb: int
    load: float
    out_bytes: int = 0  # a backup job: the size of the file it made


@dataclass
class Side:
    runs: list[Run] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def spread(self) -> float:
        s = [r.seconds for r in self.runs]
        return (max(s) - min(s)) / statistics.median(s) if len(s) > 1 else 0.0


class Timer:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.host = HostCPU(sb)
        self.env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sb.inventory)}

    def run(self, argv: list[str] | str, *, stdin: Path | None = None,
            env: dict[str, str] | None = None) -> tuple[Run, str]:
        """Run ``argv`` (a string runs under bash -o pipefail); time, CPU and peak RSS."""
        if isinstance(argv, str):
            argv = ["bash", "-o", "pipefail", "-c", argv]
        fin = stdin.open("rb") if stdin else subprocess.DEVNULL
        load_before, host_before = load1(), self.host.now()
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=fin, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env or self.env)
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if stdin:
                fin.close()  # type: ignore[union-attr]
        seconds = time.monotonic() - started
        time.sleep(0.3)  # the host's sshd reaps the session
        rc = os.waitstatus_to_exitcode(status)
        text = out.decode(errors="replace")
        if rc != 0:
            raise SystemExit(f"bench: {shlex.join(argv)[:200]} failed ({rc}): {tail(text)}")
        return Run(seconds, usage.ru_utime + usage.ru_stime, self.host.now() - host_before,
                   usage.ru_maxrss, max(load_before, load1())), text

    def ssh_line(self, remote_cmd: str) -> str:
        return shlex.join(["ssh", "-F", str(self.sb.ssh_config), "-o", "BatchMode=yes",
                           "aidset", remote_cmd])

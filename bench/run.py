"""`make bench`: each job of aimms-ops next to the same job done by hand, in one table.

The sandbox database is seeded to a chosen size (default about 1 GB of pg_dumpall:
random text and jsonb rows). Then, in rounds, each job and its by-hand anchor run
alternately (the order reversed every round); the table gives medians, the ratio, the
target, the CPU-seconds of each side (this machine's processes and the sandbox host's:
its sshd sessions, its Docker daemons, the postgres container) and the machine's load
average seen during the job. A target is judged only on a quiet enough sample.

    python bench/run.py [--size 1G] [--rounds 3] [--rss-size 100M] [--jobs ...]
    BENCH_MB=200 make bench                       # a quick run, a few minutes

Environment: SANDBOX_NAME (the sandbox instance), BENCH_MB or BENCH_SIZE, BENCH_ROWS,
BENCH_ROUNDS, BENCH_RSS_SIZE. Needs the sandbox up (`make sandbox`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from bench import link_jobs, pitr_jobs  # noqa: E402
from bench.offsite_push import BY_HAND  # noqa: E402
from tests.sandbox_client import Sandbox, _read_env, from_out  # noqa: E402

#: pg_dumpall bytes per row of the sandbox's orders table (measured: 242 at 4.2 M rows).
BYTES_PER_ROW = 242
JOBS = ("backup", "backup-zstd", "restore-local", "restore-host", "download", "upload",
        "offsite", "pitr-backup", "pitr-restore", "download-link", "download-link-cat")
#: Named like a backup of now: an older one would be out of the offsite target's
#: retention, and never pushed.
XFER_NAME = f"aimms_postgres_{dt.datetime.now(dt.UTC):%Y%m%d_%H%M%S}_benchxfer.sql.gz"
SRC_LABEL = "benchsrc"
#: A sample is judged only when the 1-minute load average stayed at most this much above
#: the number of cores (the job itself accounts for about one) and no side's rounds
#: spread more than SPREAD around their median.
QUIET_LOAD_ABOVE_CORES = 1.0
SPREAD = 0.25


@dataclass(frozen=True)
class Job:
    name: str
    title: str
    ours: str
    anchor: str
    #: "time": ours/anchor must be <= target; "throughput": anchor/ours must be >= target.
    kind: str
    target: float | None  # None: measured at its own cost, not judged


TABLE = {
    "backup": Job("backup", "backup (dump, compress, check, hash on the host)", "`fab backup`",
                  "floor: `ssh aidset 'docker exec C pg_dumpall > /dev/null'`", "time", 1.0),
    "backup-zstd": Job("backup-zstd", "backup with `compression: zstd` (.sql.zst, zstd -1 -T0 "
                       "on the host): the smallest files, at their own cost",
                       "`fab backup` (zstd inventory)",
                       "floor: `ssh aidset 'docker exec C pg_dumpall > /dev/null'`", "time",
                       None),
    "restore-local": Job("restore-local", "restore of a local .sql.gz",
                         "`fab restore --file=F --yes --no-safety-backup`",
                         "`gunzip -c F \\| ssh aidset 'docker exec -i C psql'`", "time", 1.1),
    "restore-host": Job("restore-host", "restore of a backup on the host",
                        "`fab restore --file=NAME --yes --no-safety-backup`",
                        "`ssh aidset 'gunzip -c F \\| docker exec -i C psql'`", "time", 1.1),
    "download": Job("download", "download, verified", "`fab download --file=NAME`",
                    "`scp aidset:F .`", "throughput", 1.2),
    "upload": Job("upload", "upload stream alone", "`Remote.stream_to_remote` into `cat`",
                  "`ssh aidset 'cat > /dev/null' < F`", "throughput", 0.7),
    "offsite": Job("offsite", "offsite push to the sandbox's S3 server",
                   "`fab offsite-sync --target=s3`", "`age -r KEY < F \\| rclone rcat` on the host",
                   "throughput", 0.9),
    **{name: Job(name, title, ours, anchor, "time", None)
       for name, (title, ours, anchor) in pitr_jobs.TITLES.items()},
    **{name: Job(name, title, ours, anchor, "throughput", target)
       for name, (title, ours, anchor, target) in link_jobs.TITLES.items()},
}


# --- small helpers ---------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``1G`` = 10^9 bytes, ``100M`` = 10^8, ``1GiB`` = 2^30; a plain number is bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise SystemExit(f"bench: not a size: {text!r} (e.g. 1G, 100M, 1GiB)")
    base = 1024 if m.group(3) else 1000
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * base**power)


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


# --- the sandbox, prepared --------------------------------------------------------------


class Bed:
    """The sandbox seeded for a phase, and the files the jobs use."""

    def __init__(self, sb: Sandbox, timer: Timer, work: Path) -> None:
        self.sb = sb
        self.t = timer
        self.work = work
        inv = sb.inventory.read_text()
        m = re.search(r"(?m)^\s*backup_dir:\s*(\S+)", inv)
        self.backup_dir = (m.group(1) if m else f"{sb.home}/postgres-backups").rstrip("/")
        # The offsite inventory's host has a backup dir of its own: what it pushes.
        off = self.offsite_inventory
        m = re.search(r"(?m)^\s*backup_dir:\s*(\S+)", off.read_text()) if off.is_file() else None
        self.offsite_dir = m.group(1).rstrip("/") if m else self.backup_dir
        self.fab = [str(BIN / "fab")]
        # The same host with compression: zstd (the backup-zstd job).
        self.zstd_inventory = work / "inventory-zstd.yml"
        data = yaml.safe_load(sb.inventory.read_text())
        data["hosts"][data["default_host"]]["compression"] = "zstd"
        self.zstd_inventory.write_text(yaml.safe_dump(data))

    def settle(self) -> None:
        """Let the previous job's writes land before timing the next one."""
        self.sb.psql("CHECKPOINT", "postgres")
        subprocess.run(["sync"], check=False)

    def seed(self, rows: int) -> None:
        env = dict(os.environ, SANDBOX_ROWS=str(rows))
        started = time.monotonic()
        proc = subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench: sandbox/up.sh failed: {tail(proc.stderr + proc.stdout)}")
        say(f"sandbox seeded with {rows} rows in orders ({time.monotonic() - started:.0f} s)")

    def fab_run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        return self.t.run([*self.fab, *args], env=env)[0]

    def prepare(self, size: int, rows: int, jobs: tuple[str, ...]) -> dict:
        self.seed(rows)
        c = self.sb.container()
        dump = int(self.sb.sh(f"docker exec {c} pg_dumpall -U postgres | wc -c"))
        say(f"pg_dumpall is {human(dump)} ({rows} rows in orders)")
        self.rows = int(self.sb.psql("SELECT count(*) FROM orders"))
        self.sb.sh(f"rm -f {self.backup_dir}/aimms_postgres_*_{SRC_LABEL}.sql.gz*")
        self.fab_run("backup", "--label", SRC_LABEL)
        self.src_name = self.sb.sh(
            f"cd {self.backup_dir} && ls -t aimms_postgres_*_{SRC_LABEL}.sql.gz").split()[0]
        srcdir = self.work / "restore-source"
        shutil.rmtree(srcdir, ignore_errors=True)
        self.fab_run("download", f"--file={self.src_name}", f"--dest={srcdir}")
        self.src = srcdir / self.src_name
        # The transfer file: SIZE bytes of that backup repeated (compressed, so it does
        # not compress further), named like a backup so that fab download accepts it.
        reps = size // self.src.stat().st_size + 1
        x = XFER_NAME
        self.sb.sh(f"cd {self.backup_dir} && for i in $(seq {reps}); do cat "
                   f"{self.src_name}; done 2>/dev/null | head -c {size} > {x}.tmp && "
                   f"sha256sum {x}.tmp | sed 's/\\.tmp$//' > {x}.sha256 && mv {x}.tmp {x}")
        self.xfer_local = self.work / "xfer" / XFER_NAME
        if "upload" in jobs:
            self.fab_run("download", f"--file={XFER_NAME}", f"--dest={self.xfer_local.parent}")
        if "offsite" in jobs:
            o = self.offsite_dir
            if o != self.backup_dir:
                self.sb.sh(f"mkdir -p {o} && cp {self.backup_dir}/{x} {self.backup_dir}/{x}.sha256 "
                           f"{o}/")
            self.offsite(True)
            env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
            self.fab_run("offsite-sync", "--target=s3", env=env)  # all but the bench file
            self.offsite(False)
        return {"rows": rows, "dump_bytes": dump, "backup_bytes": self.src.stat().st_size,
                "xfer_bytes": size}

    def offsite(self, on: bool) -> None:
        """Offsite settings installed on the host, or removed (the backup job must not
        push: its anchor does not)."""
        if on:
            env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
            self.fab_run("install-backups", env=env)
        else:
            self.sb.ssh("rm -f ~/backup-postgres.sh.offsite", check=False)

    @property
    def offsite_inventory(self) -> Path:
        return self.sb.inventory.with_name("inventory-offsite.yml")

    def cleanup(self) -> None:
        """Leave no bench file on the host (fab's "latest" must stay a real backup)."""
        d = self.backup_dir
        self.sb.ssh(f"rm -f {d}/aimms_postgres_*_benchxfer.sql.gz* "
                    f"{self.offsite_dir}/aimms_postgres_*_benchxfer.sql.gz* "
                    f"{d}/aimms_postgres_*_{SRC_LABEL}.sql.gz* "
                    f"{d}/aimms_postgres_*_benchrun.sql.*", check=False)
        for p in self._store_copies(XFER_NAME):
            p.unlink()
        shutil.rmtree(self.work, ignore_errors=True)

    def _store_copies(self, name: str) -> list[Path]:
        env = self.sb.inventory.with_name("offsite.env")
        data = _read_env(env).get("SANDBOX_S3_DATA") if env.is_file() else None
        if not data:
            return []
        return [Path(p) for p in glob.glob(f"{data}/**/{name}.age*", recursive=True)]

    # --- the jobs: (ours, anchor), each a callable returning a Run -------------------

    def pair(self, job: str) -> tuple[Callable[[], Run], Callable[[], Run]]:
        return getattr(self, "job_" + job.replace("-", "_"))()

    def job_backup(self, env: dict[str, str] | None = None):
        c = self.sb.container()

        def ours() -> Run:
            self.settle()
            r = self.fab_run("backup", "--label", "benchrun", env=env)
            made = self.sb.sh(f"stat -c %s {self.backup_dir}/aimms_postgres_*_benchrun.sql.*z*"
                              " | head -n 1")
            r.out_bytes = int(made.split()[0]) if made.strip() else 0
            self.sb.sh(f"rm -f {self.backup_dir}/aimms_postgres_*_benchrun.sql.*")
            return r

        def anchor() -> Run:
            self.settle()
            return self.t.run(self.t.ssh_line(
                f"docker exec {c} pg_dumpall -U postgres > /dev/null"))[0]
        return ours, anchor

    def job_backup_zstd(self):
        return self.job_backup({**self.t.env, "AIMMS_OPS_INVENTORY": str(self.zstd_inventory)})

    def _restored(self, what: str) -> None:
        got = int(self.sb.psql("SELECT count(*) FROM orders"))
        if got != self.rows:
            raise SystemExit(f"bench: after {what}, orders has {got} rows, not {self.rows}")

    def _empty(self) -> None:
        # The same starting state for both: aimms_web absent, roles present.
        self.sb.psql("DROP DATABASE IF EXISTS aimms_web WITH (FORCE)", "postgres")
        self.settle()

    def _restore_pair(self, ours_file: str, by_hand: str):
        def ours() -> Run:
            self._empty()
            r = self.fab_run("restore", f"--file={ours_file}", "--yes", "--no-safety-backup")
            self._restored("fab restore")
            return r

        def anchor() -> Run:
            self._empty()
            r = self.t.run(by_hand)[0]
            self._restored("the by-hand restore")
            return r
        return ours, anchor

    def job_restore_local(self):
        c = self.sb.container()
        return self._restore_pair(str(self.src), f"gunzip -c {shlex.quote(str(self.src))} | "
                                  + self.t.ssh_line(f"docker exec -i {c} psql -U postgres")
                                  + " >/dev/null")

    def job_restore_host(self):
        c = self.sb.container()
        path = f"{self.backup_dir}/{self.src_name}"
        return self._restore_pair(self.src_name, self.t.ssh_line(
            f"gunzip -c {path} | docker exec -i {c} psql -U postgres >/dev/null"))

    def job_pitr_backup(self):
        return pitr_jobs.backup_pair(self)

    def job_pitr_restore(self):
        return pitr_jobs.restore_pair(self)

    def job_download(self):
        dest = self.work / "download"
        scp_dst = self.work / "scp.bin"

        def ours() -> Run:
            shutil.rmtree(dest, ignore_errors=True)
            self.settle()
            return self.fab_run("download", f"--file={XFER_NAME}", f"--dest={dest}")

        def anchor() -> Run:
            scp_dst.unlink(missing_ok=True)
            self.settle()
            r = self.t.run(["scp", "-q", "-F", str(self.sb.ssh_config),
                            f"aidset:{self.backup_dir}/{XFER_NAME}", str(scp_dst)])[0]
            scp_dst.unlink(missing_ok=True)
            return r
        return ours, anchor

    def job_download_link(self):
        return link_jobs.download_pair(self, "scp", XFER_NAME)

    def job_download_link_cat(self):
        return link_jobs.download_pair(self, "cat", XFER_NAME)

    def job_upload(self):
        src = self.xfer_local

        def ours() -> Run:
            self.settle()
            return self.t.run([sys.executable, str(REPO / "bench" / "upload_stream.py"),
                               str(src)])[0]

        def anchor() -> Run:
            self.settle()
            return self.t.run(self.t.ssh_line("cat > /dev/null"), stdin=src)[0]
        return ours, anchor

    def job_offsite(self):
        env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
        path = f"{self.offsite_dir}/{XFER_NAME}"
        conf = self.sb.sh("ls ~/backup-postgres.sh.offsite").strip()

        def ours() -> Run:
            for p in self._store_copies(XFER_NAME):
                p.unlink()
            time.sleep(1.5)  # the sandbox S3 server's directory cache
            run = self.fab_run("offsite-sync", "--target=s3", env=env)
            if not self._store_copies(XFER_NAME):
                raise SystemExit(f"bench: fab offsite-sync pushed no copy of {XFER_NAME}: "
                                 "its time is not one to compare")
            return run

        def anchor() -> Run:
            return self.t.run(self.t.ssh_line(
                f"bash -c {shlex.quote(BY_HAND)} by-hand {shlex.quote(conf)} "
                f"{shlex.quote(path)}"))[0]
        return ours, anchor


def run_phase(bed: Bed, size: int, rows: int, rounds: int, jobs: tuple[str, ...]) -> dict:
    made = bed.prepare(size, rows, jobs)
    sides = {j: (Side(), Side()) for j in jobs}
    for r in range(rounds):
        for job in jobs:
            say(f"round {r + 1}/{rounds}: {job} (load {load1():.2f})")
            if job == "offsite":
                bed.offsite(True)
            ours, anchor = bed.pair(job)
            steps = [(ours, 0), (anchor, 1)]
            for fn, i in steps if r % 2 == 0 else steps[::-1]:
                sides[job][i].runs.append(fn())
            if job == "offsite":
                bed.offsite(False)
            if job == next((j for j in reversed(jobs) if j.startswith("pitr-")), None):
                pitr_jobs.off(bed)  # the other jobs run as production runs without PITR
    return {"made": made, "rounds": rounds, "sides": sides}


# --- reporting ---------------------------------------------------------------------------


def machine() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import paramiko

    return {"cpus": os.cpu_count() or 1, "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "paramiko": paramiko.__version__,
            "openssh": first(["ssh", "-V"])}


def judge(job: Job, ours: Side, anchor: Side, cpus: int) -> tuple[float, str]:
    t, a = ours.med("seconds"), anchor.med("seconds")
    ratio = t / a if job.kind == "time" else a / t
    if job.target is None:
        return ratio, "its own cost (no target)"
    met = ratio <= job.target if job.kind == "time" else ratio >= job.target
    load = max(r.load for r in ours.runs + anchor.runs)
    spread = max(ours.spread(), anchor.spread())
    if load > cpus + QUIET_LOAD_ABOVE_CORES or spread > SPREAD:
        return ratio, (f"not judged: noisy (load {load:.1f}, rounds spread "
                       f"{spread * 100:.0f} %); {'met' if met else 'missed'} on this sample")
    return ratio, "met" if met else "**missed**"


def cell(side: Side, nbytes: int | None) -> str:
    t = side.med("seconds")
    rate = f", {nbytes / t / 1e6:.0f} MB/s" if nbytes else ""
    made = f", file {human(side.med('out_bytes'))}" if side.med("out_bytes") else ""
    return (f"{t:.2f} s{rate}{made}; CPU {side.med('cpu_here'):.1f} here + "
            f"{side.med('cpu_host'):.1f} host")


def main_table(phase: dict, cpus: int) -> str:
    made = phase["made"]
    rows = ["| job | aimms-ops | by hand, same run | ratio | target | verdict | load seen |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (ours, anchor) in phase["sides"].items():
        job = TABLE[name]
        nbytes = made["xfer_bytes"] if job.kind == "throughput" else None
        ratio, verdict = judge(job, ours, anchor, cpus)
        loads = [r.load for r in ours.runs + anchor.runs]
        what = "of the time" if job.kind == "time" else "the throughput"
        sign = "≤" if job.kind == "time" else "≥"
        target = f"{sign} {job.target}x" if job.target is not None else "none"
        rows.append(f"| {job.title} | {job.ours} {cell(ours, nbytes)} | {job.anchor} "
                    f"{cell(anchor, nbytes)} | {ratio:.2f}x {what} | {target} | "
                    f"{verdict} | {min(loads):.1f}–{max(loads):.1f} |")
    return "\n".join(rows)


def rss_table(phases: list[tuple[str, dict]]) -> tuple[str, int]:
    head = "| process | " + " | ".join(f"peak RSS at {label}" for label, _ in phases) \
        + " | target |"
    rows = [head, "| --- |" + " --- |" * (len(phases) + 1)]
    worst = 0
    for name, job in TABLE.items():
        cells = []
        for _, ph in phases:
            sides = ph["sides"].get(name)
            if sides is None:
                cells.append("")
                continue
            peak = max(r.maxrss_kb for r in sides[0].runs)
            worst = max(worst, peak)
            cells.append(f"{peak / 1024:.0f} MiB")
        if any(cells):
            rows.append(f"| {job.ours} | " + " | ".join(cells) + " | ≤ 150 MB |")
    return "\n".join(rows), worst


def fab_list_time(timer: Timer, n: int = 5) -> tuple[float, float]:
    runs = [timer.run([str(BIN / "fab"), "-l"])[0] for _ in range(n)]
    return statistics.median(r.seconds for r in runs), max(r.load for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_size = (os.environ["BENCH_MB"] + "M" if os.environ.get("BENCH_MB")
                    else os.environ.get("BENCH_SIZE", "1G"))
    ap.add_argument("--size", default=default_size,
                    help="size of the pg_dumpall to seed and of the transfer file (1G; "
                    "env BENCH_MB or BENCH_SIZE)")
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", "0")),
                    help="rows of orders to seed (overrides --size; env BENCH_ROWS)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--rss-size", default=os.environ.get("BENCH_RSS_SIZE", "100M"),
                    help="the small size at which peak memory is also measured (100M); "
                    "0 skips that phase")
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {JOBS}")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    jobs = tuple(j for j in args.jobs.split(",") if j)
    bad = [j for j in jobs if j not in JOBS]
    if bad:
        raise SystemExit(f"bench: unknown job(s) {bad}; choose from {','.join(JOBS)}")
    if args.rounds < 1:
        raise SystemExit("bench: --rounds must be at least 1")
    size = parse_size(args.size)
    rows = args.rows or max(1000, size // BYTES_PER_ROW)
    if args.rows:
        size = args.rows * BYTES_PER_ROW
    small = parse_size(args.rss_size) if args.rss_size not in ("", "0") else 0

    out_dir = REPO / "sandbox"
    if not (out_dir / "env").is_file():
        raise SystemExit("bench: no sandbox in sandbox/: run `make sandbox` first")
    sb = from_out(out_dir)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    timer = Timer(sb)
    bed = Bed(sb, timer, work)
    info = machine()
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    say(f"{info['cpus']} cores, load average {load_start[0]:.2f}")
    phases: list[tuple[str, dict]] = []
    try:
        if small and small < size:
            say(f"phase 1: peak memory at {human(small)} (1 round)")
            phases.append((human(small), run_phase(bed, small, max(1000, small // BYTES_PER_ROW),
                                                   1, jobs)))
        say(f"phase {len(phases) + 1}: {human(size)}, {args.rounds} rounds")
        main_phase = run_phase(bed, size, rows, args.rounds, jobs)
        phases.append((human(size), main_phase))
        fab_l, fab_l_load = fab_list_time(timer)
    except AssertionError as exc:  # the sandbox client's one line
        raise SystemExit(f"bench: {str(exc).splitlines()[0]}") from None
    finally:
        bed.offsite(False)
        pitr_jobs.off(bed)
        link_jobs.stop()
        bed.cleanup()
    load_end = os.getloadavg()
    made = main_phase["made"]
    rtable, worst = rss_table(phases)
    text = "\n".join([
        f"Run on {started:%Y-%m-%d %H:%M} UTC: {info['cpus']} cores ({info['cpu']}), Linux "
        f"{info['kernel']}, Python {info['python']}, paramiko {info['paramiko']}, "
        f"{info['openssh']}. The sandbox host is on the same machine over loopback (its sshd, "
        f"dockerd and PostgreSQL share the cores with the client), and the machine was shared "
        f"with other work: load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} "
        f"at the end. Database: {made['rows']} rows in orders, pg_dumpall "
        f"{human(made['dump_bytes'])}, its backup {human(made['backup_bytes'])}; transfers "
        f"of {human(made['xfer_bytes'])}. Medians of {args.rounds} rounds, each pair "
        "alternated (order reversed every round). CPU: seconds of this machine's processes "
        "(`here`) and of the sandbox host's (`host`: its sshd sessions, Docker daemons, "
        "S3 server and the postgres container).",
        "",
        main_table(main_phase, info["cpus"]),
        "",
        rtable,
        "",
        f"Worst peak RSS: {worst / 1024:.0f} MiB ({'met' if worst / 1024 <= 150 else 'missed'}"
        f"); `fab -l` {fab_l:.2f} s, median of 5 (target < 0.5 s: "
        f"{'met' if fab_l < 0.5 else 'missed'}; load {fab_l_load:.1f}).",
    ])
    print(text)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.md").write_text(text + "\n")
    (out / f"{stamp}.json").write_text(json.dumps({
        "info": info, "fab_l": fab_l, "worst_rss_kb": worst,
        "phases": {label: {"made": ph["made"], "sides": {
            j: [[r.__dict__ for r in s.runs] for s in sides]
            for j, sides in ph["sides"].items()}} for label, ph in phases}},
        indent=2) + "\n")
    (out / "latest.md").write_text(text + "\n")
    say(f"results in {out}/{stamp}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

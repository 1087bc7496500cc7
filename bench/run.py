"""`make bench`: aimms-ops against the same jobs done by hand with OpenSSH, side by side.

The sandbox database is seeded to a chosen size (default about 1 GB of pg_dumpall:
random text and jsonb rows), then each job and its by-hand anchor run alternately,
several rounds, in the same run. Medians, ratios and peak memory are printed as a
markdown table and written to bench/results/ (git-ignored).

    python bench/run.py [--size 1G] [--rounds 3] [--rss-size 100M] [--jobs ...]

Environment: SANDBOX_NAME (the sandbox instance), BENCH_ROWS (rows of orders,
overrides --size), BENCH_SIZE, BENCH_ROUNDS. Needs the sandbox up (`make sandbox`).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: pg_dumpall bytes per row of the sandbox's orders table (measured: 242 at 4.2 M rows; the
#: customers table adds a tenth). The real size of each run is measured and printed.
BYTES_PER_ROW = 242
JOBS = ("backup", "download", "upload", "restore")
#: Optional jobs (--jobs), not in the default run.
EXTRA_JOBS = ("levels",)
LEVELS = (1, 3, 6)
XFER_NAME = "aimms_postgres_20000101_000000_benchxfer.sql.gz"
SRC_LABEL = "benchsrc"


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


@dataclass
class Measured:
    seconds: float
    maxrss_kb: int
    rc: int
    stderr: str = ""
    stdout: str = ""


def measure(argv: list[str] | str, *, stdin: Path | None = None, env: dict | None = None,
            capture: bool = False) -> Measured:
    """Run ``argv`` (a string runs under bash -o pipefail) and time it; peak RSS by wait4."""
    if isinstance(argv, str):
        argv = ["bash", "-o", "pipefail", "-c", argv]
    fin = stdin.open("rb") if stdin else subprocess.DEVNULL
    try:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=fin, env=env,
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        out, err = proc.communicate()
        seconds = time.monotonic() - started
    finally:
        if stdin:
            fin.close()  # type: ignore[union-attr]
    # communicate() reaped the child: its rusage is in RUSAGE_CHILDREN only as a max over
    # all children, so fab and the upload child are run through _rss() instead.
    return Measured(seconds, 0, proc.returncode, err.decode(errors="replace"),
                    (out or b"").decode(errors="replace"))


def measure_rss(argv: list[str], *, env: dict | None = None) -> Measured:
    """Run ``argv`` (one process, e.g. fab) and return its time and its own peak RSS."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    # Read both pipes to the end, then reap with wait4 for this child's own rusage.
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    sel.register(proc.stderr, selectors.EVENT_READ)  # type: ignore[arg-type]
    bufs = {proc.stdout: [], proc.stderr: []}
    while sel.get_map():
        for key, _ in sel.select():
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fileobj)
            else:
                bufs[key.fileobj].append(data)  # type: ignore[index]
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = b"".join(bufs[proc.stdout])  # type: ignore[index]
    err = b"".join(bufs[proc.stderr])  # type: ignore[index]
    return Measured(seconds, usage.ru_maxrss, proc.returncode, err.decode(errors="replace"),
                    out.decode(errors="replace"))


def tail(text: str, n: int = 3) -> str:
    return " | ".join(ln for ln in text.strip().splitlines()[-n:])


# --- the sandbox -----------------------------------------------------------------------


class Sandbox:
    """The sandbox host of this checkout (sandbox/ssh_config, inventory.yml)."""

    def __init__(self) -> None:
        out = Path(os.environ.get("SANDBOX_OUT", REPO / "sandbox"))
        self.ssh_config = out / "ssh_config"
        self.inventory_file = out / "inventory.yml"
        if not self.ssh_config.is_file() or not self.inventory_file.is_file():
            raise SystemExit(f"bench: no sandbox in {out}: run `make sandbox` first")
        os.environ["AIMMS_OPS_INVENTORY"] = str(self.inventory_file)
        sys.path.insert(0, str(REPO))
        from aimms_ops.inventory import loader as inventory

        self.host = inventory.load(str(self.inventory_file)).host(None)
        self.alias = self.host.name
        self.ssh = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.alias]
        self.env = dict(os.environ, AIMMS_OPS_INVENTORY=str(self.inventory_file))

    def sh(self, command: str, *, check: bool = True, timeout: float = 1800) -> str:
        """Run ``command`` on the host (untimed helper), return stdout."""
        proc = subprocess.run([*self.ssh, command], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise SystemExit(f"bench: on the host, `{command}` failed: {tail(proc.stderr)}")
        return proc.stdout

    def container(self) -> str:
        c = self.host.compose
        name = self.sh(
            "docker ps --format '{{.Names}}'"
            f" --filter label=com.docker.compose.project={shlex.quote(c.project)}"
            f" --filter label=com.docker.compose.service={shlex.quote(c.postgres_service)}"
        ).split()
        if not name:
            raise SystemExit("bench: the postgres container is not running")
        return name[0]

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self.sh(f"docker exec {self.container()} psql -X -At -U postgres -d {db} "
                       f"-c {shlex.quote(sql)}").strip()

    def settle(self) -> None:
        """Let the previous job's writes land before timing the next one."""
        self.psql("CHECKPOINT")
        subprocess.run(["sync"], check=False)

    def seed(self, rows: int) -> None:
        env = dict(os.environ, SANDBOX_ROWS=str(rows))
        started = time.monotonic()
        proc = subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench: sandbox/up.sh failed: {tail(proc.stderr + proc.stdout)}")
        say(f"sandbox seeded with {rows} rows in orders ({time.monotonic() - started:.0f} s)")

    def orders_rows(self) -> int:
        out = self.psql("SELECT count(*) FROM orders", "aimms_web")
        return int(out) if out.isdigit() else -1

    def dump_size(self) -> int:
        return int(self.sh(f"docker exec {self.container()} pg_dumpall -U postgres | wc -c"))

    @property
    def backup_dir(self) -> str:
        return self.host.backup_dir.rstrip("/")


# --- the jobs ---------------------------------------------------------------------------


@dataclass
class Result:
    """Every timing of one job in one phase, by variant, plus peak RSS of fab."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_kb: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, variant: str, seconds: float) -> None:
        self.seconds.setdefault(variant, []).append(seconds)

    def median(self, variant: str) -> float:
        return statistics.median(self.seconds[variant])


class Bench:
    def __init__(self, sb: Sandbox, work: Path) -> None:
        self.sb = sb
        self.work = work
        self.fab = [str(BIN / "fab")]

    def fab_run(self, *args: str) -> Measured:
        m = measure_rss([*self.fab, *args], env=self.sb.env)
        if m.rc != 0:
            raise SystemExit(f"bench: fab {' '.join(args)} failed ({m.rc}): {tail(m.stderr)}")
        return m

    def anchor(self, command: str, *, stdin: Path | None = None) -> float:
        m = measure(command, stdin=stdin)
        if m.rc != 0:
            raise SystemExit(f"bench: `{command}` failed ({m.rc}): {tail(m.stderr)}")
        return m.seconds

    def ssh_line(self, remote_cmd: str) -> str:
        return shlex.join(self.sb.ssh) + " " + shlex.quote(remote_cmd)

    # backup: fab backup / the floor / today's script ------------------------------------

    def backup(self, res: Result, order: int) -> None:
        c = self.sb.container()
        tmp = f"{self.sb.backup_dir}/.bench-today.sql.gz"

        def tool() -> None:
            self.sb.settle()
            m = self.fab_run("backup", "--label", "benchrun")
            res.add("fab backup", m.seconds)
            res.rss_kb.append(m.maxrss_kb)
            self.sb.sh(f"rm -f {self.sb.backup_dir}/aimms_postgres_*_benchrun.sql.gz*")

        def floor() -> None:
            self.sb.settle()
            res.add("dump floor", self.anchor(self.ssh_line(
                f"docker exec {c} pg_dumpall -U postgres > /dev/null")))

        def today() -> None:
            self.sb.settle()
            res.add("dump | gzip (today)", self.anchor(self.ssh_line(
                f"docker exec {c} pg_dumpall -U postgres | gzip > {tmp}")))
            self.sb.sh(f"rm -f {tmp}")

        steps = [tool, floor, today]
        for step in steps if order == 0 else steps[::-1]:
            step()

    # download: fab download / scp -----------------------------------------------------

    def download(self, res: Result, order: int) -> None:
        dest = self.work / "download"
        local = dest / XFER_NAME
        scp_dst = self.work / "scp.bin"

        def tool() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            self.sb.settle()
            m = self.fab_run("download", f"--file={XFER_NAME}", f"--dest={dest}")
            res.add("fab download", m.seconds)
            res.rss_kb.append(m.maxrss_kb)

        def scp() -> None:
            scp_dst.unlink(missing_ok=True)
            self.sb.settle()
            res.add("scp", self.anchor(shlex.join([
                "scp", "-q", "-F", str(self.sb.ssh_config),
                f"{self.sb.alias}:{self.sb.backup_dir}/{XFER_NAME}", str(scp_dst)])))

        for step in (tool, scp) if order == 0 else (scp, tool):
            step()
        if local.stat().st_size != scp_dst.stat().st_size:
            raise SystemExit("bench: fab download and scp gave files of different sizes")
        scp_dst.unlink(missing_ok=True)

    # upload stream: Remote.stream_to_remote / ssh 'cat > /dev/null' < f ---------------

    def upload(self, res: Result, order: int) -> None:
        src = self.work / "download" / XFER_NAME

        def tool() -> None:
            self.sb.settle()
            m = measure_rss([sys.executable, str(REPO / "bench" / "upload_stream.py"),
                             str(src)], env=self.sb.env)
            if m.rc != 0:
                raise SystemExit(f"bench: upload stream failed: {tail(m.stderr)}")
            info = json.loads(m.stdout)
            res.add("library stream", info["connect"] + info["stream"])
            res.add("library stream, process wall", m.seconds)
            res.rss_kb.append(m.maxrss_kb)
            res.notes.append(f"paramiko cipher {info['cipher']}")

        def ssh() -> None:
            self.sb.settle()
            res.add("ssh cat", self.anchor(self.ssh_line("cat > /dev/null"), stdin=src))

        for step in (tool, ssh) if order == 0 else (ssh, tool):
            step()

    # restore: fab restore --file / gunzip -c f | ssh 'docker exec -i C psql' -----------

    def restore(self, res: Result, order: int, src: Path, rows: int) -> None:
        c = self.sb.container()

        def empty() -> None:
            # The same starting state for both: aimms_web absent, roles present.
            self.sb.psql("DROP DATABASE IF EXISTS aimms_web WITH (FORCE)")
            self.sb.settle()

        def check(what: str) -> None:
            got = self.sb.orders_rows()
            if got != rows:
                raise SystemExit(f"bench: after {what}, orders has {got} rows, not {rows}")

        def tool() -> None:
            empty()
            m = self.fab_run("restore", f"--file={src}", "--yes", "--no-safety-backup")
            res.add("fab restore", m.seconds)
            res.rss_kb.append(m.maxrss_kb)
            check("fab restore")

        def by_hand() -> None:
            empty()
            res.add("gunzip | ssh psql", self.anchor(
                f"gunzip -c {shlex.quote(str(src))} | "
                + self.ssh_line(f"docker exec -i {c} psql -U postgres") + " >/dev/null"))
            check("the by-hand restore")

        for step in (tool, by_hand) if order == 0 else (by_hand, tool):
            step()


    # levels: the dump compressed on the host at several gzip levels (the container, like
    # the official postgres image, has no pigz) ------------------------------------------

    def levels(self, res: Result, order: int) -> None:
        c = self.sb.container()
        for level in LEVELS if order == 0 else LEVELS[::-1]:
            self.sb.settle()
            m = measure(self.ssh_line(
                f"docker exec {c} pg_dumpall -U postgres | pigz -{level} | wc -c"),
                capture=True)
            if m.rc != 0:
                raise SystemExit(f"bench: pigz -{level} failed: {tail(m.stderr)}")
            res.add(f"pigz -{level}", m.seconds)
            res.notes.append(f"pigz -{level}={m.stdout.strip()}")


# --- a phase: one database size, all jobs, N rounds ---------------------------------------


def prepare(sb: Sandbox, bench: Bench, size: int, rows: int) -> dict:
    """Seed, make the restore source and the transfer file; return what was made."""
    sb.seed(rows)
    dump = sb.dump_size()
    say(f"pg_dumpall is {human(dump)} ({rows} rows in orders)")
    # The restore source: a real backup made by the tool, downloaded with its .sha256.
    sb.sh(f"rm -f {sb.backup_dir}/aimms_postgres_*_{SRC_LABEL}.sql.gz*")
    bench.fab_run("backup", "--label", SRC_LABEL)
    name = sb.sh(f"cd {sb.backup_dir} && ls -t aimms_postgres_*_{SRC_LABEL}.sql.gz").split()[0]
    srcdir = bench.work / "restore-source"
    shutil.rmtree(srcdir, ignore_errors=True)
    bench.fab_run("download", f"--file={name}", f"--dest={srcdir}")
    src = srcdir / name
    # The transfer file: SIZE bytes of that backup repeated (compressed, so it does not
    # compress further), named like a backup so that fab download accepts it.
    reps = size // src.stat().st_size + 1
    sb.sh(f"cd {sb.backup_dir} && for i in $(seq {reps}); do cat {name}; done 2>/dev/null "
          f"| head -c {size} > {XFER_NAME}.tmp && sha256sum {XFER_NAME}.tmp "
          f"| sed 's/\\.tmp$//' > {XFER_NAME}.sha256 && mv {XFER_NAME}.tmp {XFER_NAME}")
    return {"rows": rows, "dump_bytes": dump, "backup_bytes": src.stat().st_size,
            "xfer_bytes": size, "src": src}


def cleanup(sb: Sandbox, work: Path) -> None:
    """Leave no bench file on the host (fab's "latest" must stay a real backup)."""
    sb.sh(f"rm -f {sb.backup_dir}/{XFER_NAME} {sb.backup_dir}/{XFER_NAME}.sha256 "
          f"{sb.backup_dir}/{XFER_NAME}.tmp {sb.backup_dir}/aimms_postgres_*_{SRC_LABEL}.sql.gz* "
          f"{sb.backup_dir}/aimms_postgres_*_benchrun.sql.gz* {sb.backup_dir}/.bench-today.sql.gz",
          check=False)
    shutil.rmtree(work, ignore_errors=True)


def run_phase(sb: Sandbox, bench: Bench, size: int, rows: int, rounds: int,
              jobs: tuple[str, ...]) -> dict:
    made = prepare(sb, bench, size, rows)
    results = {j: Result() for j in jobs}
    for r in range(rounds):
        order = r % 2
        for job in jobs:
            say(f"round {r + 1}/{rounds}: {job}")
            if job == "restore":
                bench.restore(results[job], order, made["src"], rows)
            else:
                getattr(bench, job)(results[job], order)
    made["src"] = str(made["src"])
    return {"made": made, "rounds": rounds, "results": results}


# --- reporting ---------------------------------------------------------------------------


def machine() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import cryptography
    import paramiko

    return {
        "cpus": os.cpu_count(), "cpu": model, "memory_gib": round(mem / 2**30),
        "kernel": platform.release(), "python": platform.python_version(),
        "paramiko": paramiko.__version__, "cryptography": cryptography.__version__,
        "openssh": first(["ssh", "-V"]),
    }


def ssh_cipher(sb: Sandbox) -> str:
    proc = subprocess.run([*sb.ssh[:-1], "-v", sb.alias, "true"], capture_output=True,
                          text=True, check=False)
    m = re.search(r"kex: server->client cipher: (\S+)", proc.stderr)
    return m.group(1) if m else "?"


def fab_list_time(sb: Sandbox, n: int = 5) -> float:
    times = []
    for _ in range(n):
        m = measure([str(BIN / "fab"), "-l"], env=sb.env)
        times.append(m.seconds)
    return statistics.median(times)


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:.0f} MB/s"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def x(ratio: float) -> str:
    """A ratio to two decimals, or four where two would hide which side of a target it is."""
    text = f"{ratio:.2f}"
    return f"{ratio:.4f}x" if text in ("1.15", "0.70") else f"{text}x"


def main_table(phase: dict, fab_l: float) -> tuple[str, dict]:
    res: dict[str, Result] = phase["results"]
    made = phase["made"]
    n = phase["rounds"]
    rows = ["| job | aimms-ops | anchor, by hand, same run | ratio | target | |",
            "| --- | --- | --- | --- | --- | --- |"]
    ratios: dict[str, float] = {}
    if "backup" in res:
        r = res["backup"]
        t, f, g = r.median("fab backup"), r.median("dump floor"), r.median("dump | gzip (today)")
        ratios["backup"] = t / f
        rows.append(f"| backup of a {human(made['dump_bytes'])} dump (dump + compress on the "
                    f"host) | `fab backup` {t:.1f} s | floor `docker exec C pg_dumpall > "
                    f"/dev/null` {f:.1f} s; today's `pg_dumpall \\| gzip > f` {g:.1f} s | "
                    f"{x(t / f)} the floor ({x(t / g)} today's) | ≤ 1.15x | "
                    f"{verdict(t / f <= 1.15)} |")
    if "download" in res:
        r = res["download"]
        t, a = r.median("fab download"), r.median("scp")
        b = made["xfer_bytes"]
        ratios["download"] = a / t
        rows.append(f"| download of a {human(b)} backup | `fab download` {t:.1f} s "
                    f"({rate(b, t)}) | `scp` {a:.1f} s ({rate(b, a)}) | {x(a / t)} the "
                    f"throughput | ≥ 0.7x | {verdict(a / t >= 0.7)} |")
    if "upload" in res:
        r = res["upload"]
        t, a = r.median("library stream"), r.median("ssh cat")
        b = made["xfer_bytes"]
        ratios["upload"] = a / t
        rows.append(f"| upload stream alone, {human(b)} | `Remote.stream_to_remote` into "
                    f"`cat > /dev/null` {t:.1f} s ({rate(b, t)}) | `ssh aidset 'cat > "
                    f"/dev/null' < f` {a:.1f} s ({rate(b, a)}) | {x(a / t)} the throughput "
                    f"| ≥ 0.7x | {verdict(a / t >= 0.7)} |")
    if "restore" in res:
        r = res["restore"]
        t, a = r.median("fab restore"), r.median("gunzip | ssh psql")
        ratios["restore"] = t / a
        rows.append(f"| restore from a local file ({human(made['backup_bytes'])} .sql.gz) | "
                    f"`fab restore --file=F --yes --no-safety-backup` {t:.1f} s | `gunzip -c "
                    f"F \\| ssh aidset 'docker exec -i C psql -U postgres'` {a:.1f} s | "
                    f"{x(t / a)} | ≤ 1.15x | {verdict(t / a <= 1.15)} |")
    if "levels" in res:
        r = res["levels"]
        sizes = dict(n.split("=") for n in r.notes)
        for level in LEVELS:
            key = f"pigz -{level}"
            rows.append(f"| compression on the host, `docker exec C pg_dumpall \\| {key}` | "
                        f"{r.median(key):.1f} s, {human(int(sizes[key]))} | | | | |")
    ratios["fab -l"] = fab_l
    rows.append(f"| `fab -l` | {fab_l:.2f} s | | | < 0.5 s | {verdict(fab_l < 0.5)} |")
    note = f"Medians of {n} rounds, each pair run alternately (order reversed every round)."
    return "\n".join(rows) + "\n\n" + note, ratios


def rss_table(phases: list[tuple[str, dict]]) -> tuple[str, int]:
    head = "| fab process | " + " | ".join(f"peak RSS at {label}" for label, _ in phases) \
        + " | target |"
    rows = [head, "| --- |" + " --- |" * (len(phases) + 1)]
    names = {"backup": "`fab backup`", "download": "`fab download`",
             "upload": "upload stream (its own process)", "restore": "`fab restore --file`"}
    worst = 0
    for job, label in names.items():
        cells = []
        for _, ph in phases:
            r = ph["results"].get(job)
            if r is None or not r.rss_kb:
                cells.append("")
                continue
            peak = max(r.rss_kb)
            worst = max(worst, peak)
            cells.append(f"{peak / 1024:.0f} MiB")
        rows.append(f"| {label} | " + " | ".join(cells) + " | ≤ 150 MB |")
    return "\n".join(rows), worst


def raw(phase: dict) -> dict:
    return {
        "made": phase["made"], "rounds": phase["rounds"],
        "results": {j: {"seconds": r.seconds, "rss_kb": r.rss_kb,
                        "notes": sorted(set(r.notes))}
                    for j, r in phase["results"].items()},
    }


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default=os.environ.get("BENCH_SIZE", "1G"),
                    help="size of the pg_dumpall to seed and of the transfer file (1G)")
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", "0")),
                    help="rows of orders to seed (overrides --size; env BENCH_ROWS)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--rss-size", default=os.environ.get("BENCH_RSS_SIZE", "100M"),
                    help="the small size at which peak memory is also measured (100M); "
                    "0 skips that phase")
    ap.add_argument("--jobs", default=",".join(JOBS),
                    help=f"comma-separated, of {','.join(JOBS + EXTRA_JOBS)} (default: "
                    "all but levels)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    jobs = tuple(j for j in args.jobs.split(",") if j)
    bad = [j for j in jobs if j not in JOBS + EXTRA_JOBS]
    if bad:
        raise SystemExit(f"bench: unknown job(s) {bad}; choose from {JOBS + EXTRA_JOBS}")
    if "upload" in jobs and "download" not in jobs:
        jobs = tuple(j for j in JOBS + EXTRA_JOBS if j in jobs or j == "download")
    size = parse_size(args.size)
    rows = args.rows or max(1000, size // BYTES_PER_ROW)
    if args.rows:
        size = args.rows * BYTES_PER_ROW
    small = parse_size(args.rss_size) if args.rss_size not in ("", "0") else 0

    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    sb = Sandbox()
    bench = Bench(sb, work)
    started = dt.datetime.now(dt.UTC)
    info = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "load_start": load(), "openssh_cipher": ssh_cipher(sb)}
    say(f"{info['machine']['cpus']} cores, {info['load_start']}")

    phases: list[tuple[str, dict]] = []
    try:
        if small and small < size:
            say(f"phase 1: peak memory at {human(small)} (1 round)")
            phases.append((human(small), run_phase(sb, bench, small, max(1000, small
                                                                          // BYTES_PER_ROW),
                                                   1, jobs)))
        say(f"phase {len(phases) + 1}: {human(size)}, {args.rounds} rounds")
        main_phase = run_phase(sb, bench, size, rows, args.rounds, jobs)
        phases.append((human(size), main_phase))
    finally:
        cleanup(sb, work)
    fab_l = fab_list_time(sb)
    info["load_end"] = load()

    table, ratios = main_table(main_phase, fab_l)
    rtable, worst = rss_table(phases)
    m = info["machine"]
    made = main_phase["made"]
    ciphers = sorted({n for r in main_phase["results"].values() for n in r.notes
                      if "cipher" in n})
    text = "\n".join([
        f"Run on {info['date']}: {m['cpus']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, paramiko {m['paramiko']}, "
        f"cryptography {m['cryptography']}, {m['openssh']}. The sandbox host is on the "
        f"same machine over loopback (sshd, dockerd, PostgreSQL 15 share the cores). "
        f"{info['load_start']} at the start, {info['load_end']} at the end. Ciphers: "
        f"OpenSSH {info['openssh_cipher']}, aimms-ops "
        f"{', '.join(ciphers)}"
        f". Database: {made['rows']} rows in orders, pg_dumpall {human(made['dump_bytes'])},"
        f" its backup {human(made['backup_bytes'])}.",
        "",
        table,
        "",
        rtable,
        "",
        f"Worst peak RSS: {worst / 1024:.0f} MiB ({verdict(worst / 1024 <= 150)}).",
    ])
    print(text)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.md").write_text(text + "\n")
    (out / f"{stamp}.json").write_text(json.dumps({
        "info": info, "ratios": ratios, "worst_rss_kb": worst,
        "phases": {label: raw(ph) for label, ph in phases}}, indent=2, default=str) + "\n")
    (out / "latest.md").write_text(text + "\n")
    say(f"results in {out}/{stamp}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

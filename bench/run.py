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
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from bench import link_jobs, pitr_jobs  # noqa: E402
from bench.bed import Bed  # noqa: E402
from bench.measure import Side, Timer, human, load1, say  # noqa: E402
from tests.sandbox_client import from_out  # noqa: E402

#: pg_dumpall bytes per row of the sandbox's orders table (measured: 242 at 4.2 M rows).
BYTES_PER_ROW = 242
JOBS = ("backup", "backup-zstd", "restore-local", "restore-host", "download", "upload",
        "offsite", "pitr-backup", "pitr-restore", "download-link", "download-link-cat")
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

"""Where a restore's time goes: each phase of the library's restore of a backup, timed.

Restores the backup NAME (on the host) or the local file PATH through the library, as
``fab restore --yes --no-safety-backup`` does, and prints each phase's seconds: the
connection, the check of the dump (on the host for a NAME, here for a PATH) with the
live cluster read beside it, the stream (decompress, filter, psql), the row estimates.
Then the same dump by hand, ``gunzip -c F | docker exec -i C psql`` on the host (after
``DROP DATABASE aimms_web``, as bench/run.py does), alternated for ``--rounds``.

    AIMMS_OPS_INVENTORY=sandbox/inventory.yml .venv/bin/python bench/restore_profile.py \\
        aimms_postgres_YYYYMMDD_HHMMSS.sql.gz [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aimms_ops import restore as rs  # noqa: E402
from aimms_ops.host.remote import in_background  # noqa: E402
from aimms_ops.inventory import loader  # noqa: E402
from aimms_ops.inventory.connected import open_host  # noqa: E402
from aimms_ops.restore import source as dumpsource  # noqa: E402


def library_phases(host, file: str) -> list[tuple[str, float]]:
    marks: list[tuple[str, float]] = [("start", time.monotonic())]
    check = dumpsource.start_local_check(file) if "/" in file else None
    remote = open_host(host)
    marks.append(("connect", time.monotonic()))
    try:
        live = in_background(lambda: rs.live_cluster(remote))
        dump = check.result() if check else dumpsource.resolve_source(remote, file)
        marks.append(("check the dump", time.monotonic()))
        plan = rs.make_plan(remote, dump, None, safety_backup=False, live=live.result)
        marks.append(("plan (what the check left of the live cluster's read)",
                      time.monotonic()))
        stream, *estimates = plan.commands
        rs.run_stream(remote, stream, dump.size, progress=None, on_stderr=None, hint="",
                      cut_hint="")
        marks.append(("stream: decompress | filter | psql", time.monotonic()))
        for cmd in estimates:
            rs.read_estimates(remote, cmd, plan.affected)
        marks.append(("ANALYZE and row estimates", time.monotonic()))
    finally:
        remote.close()
    return [(what, t - marks[i][1]) for i, (what, t) in enumerate(marks[1:])]


def by_hand(host, path: str) -> float:
    ssh = ["ssh", "-F", host.ssh_config, host.name] if host.ssh_config else ["ssh", host.name]
    container = subprocess.run(
        [*ssh, "docker ps -q --filter label=com.docker.compose.service="
         + shlex.quote(host.compose.postgres_service)],
        capture_output=True, text=True, check=True).stdout.split()[0]
    subprocess.run([*ssh, f"docker exec {container} psql -qU {host.postgres.superuser} -c "
                    "'DROP DATABASE IF EXISTS aimms_web WITH (FORCE)'"], check=True,
                   capture_output=True)
    t0 = time.monotonic()
    subprocess.run([*ssh, f"gunzip -c {shlex.quote(path)} | docker exec -i {container} "
                    f"psql -q -U {host.postgres.superuser} >/dev/null 2>&1"], check=False)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="a backup name on the host, or a local path")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    host = loader.load(os.environ.get("AIMMS_OPS_INVENTORY")).host(None)
    remote_path = (args.file if "/" not in args.file
                   else None) and f"{host.backup_dir}/{args.file}"
    rounds: list[list[tuple[str, float]]] = []
    hand: list[float] = []
    for _ in range(args.rounds):
        rounds.append(library_phases(host, args.file))
        if remote_path:
            hand.append(by_hand(host, remote_path))
    print(f"{args.file}: medians of {args.rounds} rounds (load {os.getloadavg()[0]:.1f})")
    for i, (what, _) in enumerate(rounds[0]):
        print(f"  {statistics.median(r[i][1] for r in rounds):7.2f} s  {what}")
    print(f"  {statistics.median(sum(s for _, s in r) for r in rounds):7.2f} s  the library, "
          "in all")
    if hand:
        print(f"  {statistics.median(hand):7.2f} s  by hand: gunzip -c F | docker exec -i C "
              "psql, on the host")


if __name__ == "__main__":
    main()

"""Offsite push of a large backup: `fab offsite-sync` against `age | rclone rcat` by hand.

Both run on the sandbox host against the sandbox's S3 server (`make sandbox` first),
alternately, in the same run; medians and the throughput ratio are printed. The
backup is a file of random bytes with its .sha256 (what a gzip stream looks like to age
and rclone: incompressible), removed at the end with its copies.

    .venv/bin/python bench/offsite_push.py [--size 1G] [--rounds 3]
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

import yaml

REPO = Path(__file__).resolve().parents[1]
INV = REPO / "sandbox" / "inventory-offsite.yml"
SSH_CONFIG = REPO / "sandbox" / "ssh_config"

# The same rclone settings offsite.sh gives the s3 target, from the same files.
BY_HAND = r"""
set -euo pipefail
. "$1"
read -r kid sec < <(awk -F' *= *' '$1 ~ /access_key_id$/ {k=$2} $1 ~ /secret_access_key$/ {s=$2}
                     END {print k, s}' "$OFFSITE_S3_CREDENTIALS")
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_H_TYPE=s3 RCLONE_CONFIG_H_PROVIDER=Other \
    RCLONE_CONFIG_H_ENDPOINT="$OFFSITE_S3_ENDPOINT" RCLONE_CONFIG_H_REGION="$OFFSITE_S3_REGION" \
    RCLONE_CONFIG_H_ACCESS_KEY_ID="$kid" RCLONE_CONFIG_H_SECRET_ACCESS_KEY="$sec" \
    RCLONE_CONFIG_H_FORCE_PATH_STYLE=true RCLONE_CONFIG_H_NO_CHECK_BUCKET=true \
    RCLONE_CONFIG_H_CHUNK_SIZE=16Mi
dst="h:$OFFSITE_S3_BUCKET/$OFFSITE_S3_PREFIX/by-hand.age"
age -r "${OFFSITE_RECIPIENTS%% *}" <"$2" | rclone -q rcat "$dst"
rclone -q deletefile "$dst"
"""


def ssh(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", "aidset", cmd],
                          capture_output=True, text=True, check=True, **kw)


def fab(*args: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "fab"), *args], capture_output=True,
                          text=True, env={**os.environ, "AIMMS_OPS_INVENTORY": str(INV)},
                          cwd=REPO, check=False)
    if proc.returncode != 0:
        sys.exit(f"fab {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    host = yaml.safe_load(INV.read_text())["hosts"]["aidset"]
    s3 = next(t for t in host["offsite"] if t["type"] == "s3")
    env = dict(line.split("=", 1) for line in (REPO / "sandbox" / "offsite.env").read_text()
               .splitlines() if "=" in line)
    store = Path(env["SANDBOX_S3_DATA"]) / s3["bucket"] / s3["prefix"]
    conf = host["backup_script"] + ".offsite"
    fab("install-backups")
    fab("offsite-sync", "--target=s3")  # everything else is already there
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    name = f"aimms_postgres_{stamp}_bench.sql.gz"
    path = f"{host['backup_dir']}/{name}"
    q = shlex.quote
    ssh(f"head -c {q(a.size)} /dev/urandom > {q(path)} && chmod 600 {q(path)} && "
        f"sha256sum {q(path)} | sed 's#  .*/#  #' > {q(path)}.sha256")
    size = int(ssh(f"stat -c %s {q(path)}").stdout)
    ours, hand, pushes = [], [], []
    try:
        for i in range(a.rounds):
            for p in store.glob(f"{name}.age*"):
                p.unlink()
            time.sleep(1.5)  # the sandbox S3 server's directory cache
            ours.append(fab("offsite-sync", "--target=s3"))
            line = ssh(f"grep -a 'offsite s3: pushed {name} ' {q(host['log_file'])} | "
                       "tail -n 1").stdout
            pushes.append(float(line.rsplit(" in ", 1)[1].split()[0]))
            t0 = time.monotonic()
            ssh(f"bash -c {q(BY_HAND)} by-hand {q(conf)} {q(path)}")
            hand.append(time.monotonic() - t0)
            print(f"round {i + 1}: fab offsite-sync {ours[-1]:.2f} s (the push itself "
                  f"{pushes[-1]:.2f} s), by hand {hand[-1]:.2f} s", flush=True)
    finally:
        ssh(f"rm -f {q(path)} {q(path)}.sha256")
        for p in store.glob(f"{name}.age*"):
            p.unlink()
    mo, mh, mp = statistics.median(ours), statistics.median(hand), statistics.median(pushes)
    mb = size / 1e6
    print(f"push of {mb:.0f} MB: fab offsite-sync {mo:.2f} s ({mb / mo:.0f} MB/s; the push "
          f"itself, as logged, {mp:.2f} s, {mb / mp:.0f} MB/s), age | rclone rcat by hand "
          f"{mh:.2f} s ({mb / mh:.0f} MB/s): {mh / mo:.3f}x the throughput for the task, "
          f"{mh / mp:.3f}x for the push (target >= 0.9x)")


if __name__ == "__main__":
    main()

"""Where a download's time goes: the library's receive path with one stage added at a time.

Streams a file from the sandbox host (``cat FILE``) through ``Remote.stream_from_remote``
into, in turn: nothing (the receive path alone), sha256 only, sha256 and a file (what
``fab download`` does), each with this process's CPU seconds; and, for comparison, the
same file by ``ssh HOST cat FILE > /dev/null`` and ``scp``. Variants of the window and
packet size are given as ``WINDOW:PACKET`` in KiB.

    AIMMS_OPS_INVENTORY=sandbox/inventory.yml .venv/bin/python bench/download_profile.py \\
        /home/USER/postgres-backups/FILE [--rounds 2] [--tune 4096:32,4096:256]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aimms_ops.backup import download as backups  # noqa: E402
from aimms_ops.host import remote, ssh, streams  # noqa: E402
from aimms_ops.inventory import loader, model  # noqa: E402
from aimms_ops.inventory.connected import open_host  # noqa: E402


class Null:
    def write(self, data: bytes) -> int:
        return len(data)


class HashOnly:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def one(host: model.Host, path: str, sink: str, out_dir: Path) -> tuple[float, float]:
    rem = open_host(host)
    try:
        c0, t0 = cpu(), time.monotonic()
        if sink == "null":
            rem.stream_from_remote(f"cat -- {path}", Null())
        elif sink == "hash":
            rem.stream_from_remote(f"cat -- {path}", HashOnly())
        else:
            target = out_dir / "dl"
            with target.open("wb") as fh:
                disk = streams.DiskFile(fh) if sink == "file" else fh
                w = backups._HashingWriter(disk, hashlib.sha256())
                rem.stream_from_remote(f"cat -- {path}", w)
                fh.flush()
                os.fsync(fh.fileno())
            target.unlink()
        return time.monotonic() - t0, cpu() - c0
    finally:
        rem.close()


def shell(cmd: list[str]) -> tuple[float, float]:
    t0 = time.monotonic()
    before = os.times()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = os.times()
    return (time.monotonic() - t0,
            (after.children_user - before.children_user)
            + (after.children_system - before.children_system))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", help="a file on the host")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tune", default=f"{ssh.WINDOW_SIZE // 1024}:{ssh.MAX_PACKET_SIZE // 1024}")
    ap.add_argument("--sinks", default="null,hash,plainfile,file")
    ap.add_argument("--anchors", default="ssh,scp")
    a = ap.parse_args()
    host = loader.load().host(None)
    cfg = host.ssh_config or ""
    size = int(subprocess.run(["ssh", "-F", cfg, host.name, f"stat -c %s {a.path}"],
                              capture_output=True, text=True, check=True).stdout)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        out = Path(tmp)
        for _ in range(a.rounds):
            for tune in a.tune.split(","):
                w, p = (int(x) * 1024 for x in tune.split(":"))
                ssh.WINDOW_SIZE = w
                ssh.MAX_PACKET_SIZE = p
                remote.RECV_CHUNK = w
                for sink in a.sinks.split(","):
                    results.setdefault(f"{sink} w={w >> 10}K p={p >> 10}K", []).append(
                        one(host, a.path, sink, out))
            for anchor in filter(None, a.anchors.split(",")):
                if anchor == "ssh":
                    r = shell(["bash", "-c", f"ssh -F {cfg} {host.name} cat {a.path} "
                               ">/dev/null"])
                else:
                    r = shell(["scp", "-q", "-F", cfg, f"{host.name}:{a.path}", str(out / "s")])
                    (out / "s").unlink()
                results.setdefault(anchor, []).append(r)
    print(f"{size / 1e6:.0f} MB, medians of {a.rounds}, load "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    for name, rs in results.items():
        t = statistics.median(r[0] for r in rs)
        c = statistics.median(r[1] for r in rs)
        print(f"{name:28s} {t:6.2f} s {size / t / 2**20:6.0f} MiB/s  client CPU {c:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

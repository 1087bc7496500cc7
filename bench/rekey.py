"""Stress the SSH key re-exchange: transfers of sizes around multiples of 2^29 bytes.

paramiko re-keys every 2^29 bytes; when the server closes a channel while a re-key
the client started is under way, the transport can stall for 30 s and fail (paramiko
issue #822). This sends and receives exactly 1 GiB (and a few sizes around it) several
times through the library and reports any failure or stall.

    AIMMS_OPS_INVENTORY=sandbox/inventory.yml python bench/rekey.py [--times 5]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aimms_ops.core.errors import OpsError  # noqa: E402
from aimms_ops.inventory import loader as inventory  # noqa: E402
from aimms_ops.inventory.connected import open_host  # noqa: E402

GIB = 2**30
SIZES = (GIB, GIB - 4096, GIB + 4096, 2**29)


class _Count(io.RawIOBase):
    def __init__(self) -> None:
        self.n = 0

    def write(self, b) -> int:  # type: ignore[override]
        self.n += len(b)
        return len(b)


class _Pattern(io.RawIOBase):
    """``size`` bytes of a repeated random block, without a file."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = min(len(b), self.left, len(self.block))
        b[:n] = self.block[:n]
        self.left -= n
        return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--times", type=int, default=5)
    ap.add_argument("--stall", type=float, default=20.0,
                    help="seconds above which a transfer counts as stalled")
    args = ap.parse_args()
    host = inventory.load().host(None)
    bad = 0
    for i in range(args.times):
        for size in SIZES:
            for direction in ("download", "upload"):
                started = time.monotonic()
                try:
                    with open_host(host) as remote:
                        if direction == "download":
                            sink = _Count()
                            res = remote.stream_from_remote(f"head -c {size} /dev/zero", sink)
                            got = sink.n
                        else:
                            res = remote.stream_to_remote(_Pattern(size), "wc -c")
                            got = int(res.stdout.strip() or -1)
                    ok = res.ok and got == size
                    detail = f"rc {res.rc}, {got} bytes"
                except OpsError as exc:
                    ok, detail = False, str(exc)
                seconds = time.monotonic() - started
                stalled = seconds > args.stall
                if not ok or stalled:
                    bad += 1
                print(f"{i + 1}/{args.times} {direction:8} {size:>10} bytes: {seconds:5.1f} s "
                      f"{'OK' if ok and not stalled else 'STALLED' if ok else 'FAILED'} "
                      f"({detail})", flush=True)
    print(f"{bad} failed or stalled of {args.times * len(SIZES) * 2}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

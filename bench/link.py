"""A link like a laptop's to a cloud region, in userspace: a TCP proxy on loopback that
delays every byte by half a round trip in each direction and paces each direction at a
rate (the kernel here has no netem).

    python bench/link.py --to 127.0.0.1:22 [--rtt-ms 80] [--rate-mbit 400] [--port N]

prints ``listening PORT`` once it accepts connections, then forwards each connection to
``--to`` until it is killed. A byte read at t leaves at max(t + rtt/2, when the byte
before it has left + its share at the rate): what the sender has in flight is what a real
link of that delay and rate would hold, and a window smaller than rate × rtt shows, as it
does on the real link. Buffers are unbounded, as a link's queue never is: the senders
measured here (SSH) are limited by their windows, not by loss.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time

CHUNK = 64 * 1024
#: The link a laptop has to a cloud region, by default.
RTT_MS, MBIT = 80.0, 400.0


class Direction:
    """One direction of one connection: read, stamp, hold, write at the rate."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float, rate: float) -> None:
        self.reader, self.writer = reader, writer
        self.delay, self.rate = delay, rate
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = asyncio.Event()
        self.eof = False

    async def read(self) -> None:
        try:
            while data := await self.reader.read(CHUNK):
                self.queue.append((time.monotonic(), data))
                self.ready.set()
        except (ConnectionError, OSError):
            pass
        self.eof = True
        self.ready.set()

    async def write(self) -> None:
        leaves = 0.0  # when the last byte written has left, at the rate
        try:
            while True:
                if not self.queue:
                    if self.eof:
                        break
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                stamp, data = self.queue.popleft()
                leaves = max(stamp + self.delay, leaves) + len(data) / self.rate
                wait = leaves - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.writer.write(data)
                await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except (ConnectionError, OSError):
            pass


async def serve(port: int, to: tuple[str, int], delay: float, rate: float) -> None:
    async def handle(r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        try:
            r2, w2 = await asyncio.open_connection(*to)
        except OSError:
            w1.close()
            return
        ways = (Direction(r1, w2, delay, rate), Direction(r2, w1, delay, rate))
        await asyncio.gather(*(f() for d in ways for f in (d.read, d.write)))
        for w in (w1, w2):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--to", required=True, help="HOST:PORT to forward to (loopback)")
    p.add_argument("--rtt-ms", type=float, default=RTT_MS)
    p.add_argument("--rate-mbit", type=float, default=MBIT)
    p.add_argument("--port", type=int, default=0, help="0: any free port")
    a = p.parse_args(argv)
    host, _, port = a.to.rpartition(":")
    if not host.startswith("127."):
        p.error("--to must be on loopback (127.0.0.0/8)")
    try:
        asyncio.run(serve(a.port, (host, int(port)), a.rtt_ms / 2000.0,
                          a.rate_mbit * 1e6 / 8))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

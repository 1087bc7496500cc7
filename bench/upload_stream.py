"""The library's upload stream alone: a local file into ``cat > /dev/null`` on the host.

Run as its own process by bench/run.py so that its peak memory can be measured:

    AIMMS_OPS_INVENTORY=sandbox/inventory.yml python bench/upload_stream.py FILE [COMMAND]

Prints one JSON object: connect and stream seconds, bytes, the negotiated cipher.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from aimms_ops.inventory import loader as inventory
from aimms_ops.inventory.connected import open_host


def main(argv: list[str]) -> int:
    src = Path(argv[1])
    command = argv[2] if len(argv) > 2 else "cat > /dev/null"
    host = inventory.load().host(None)
    started = time.monotonic()
    remote = open_host(host)
    connected = time.monotonic()
    transport = remote.conn.client.get_transport()
    with remote, src.open("rb") as fh:
        res = remote.stream_to_remote(fh, command)
    done = time.monotonic()
    json.dump({
        "connect": connected - started,
        "stream": done - connected,
        "bytes": src.stat().st_size,
        "rc": res.rc,
        "cipher": transport.local_cipher if transport else None,
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

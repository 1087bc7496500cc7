"""``inspect-dump FILE`` (``inspect-dump.sh``): a dump on this host checked before anything
is touched. Read-only.

key=value lines on stdout: exists, size, sha256_recorded (from FILE.sha256, or empty),
format (gz|zst|plain), then what the dump reader (``aimms-ops.pyz dump inspect``) found
reading it as psql would: header, complete (the completion marker at a statement
boundary), db=HEX per database section, role=HEX per role, preface=HEX per database whose
properties the dump carries; then stream (ok|bad: the whole file decompresses) and sha256
(computed). The file is hashed here while the decompressor reads it beside (a second read,
from the page cache) into the dump reader: the decompressed dump crosses Python once.
Exit 69 when the decompressor is missing, 64 usage.
"""

import hashlib
import os
import subprocess
import sys
from typing import List, Optional

from aimms_ops.agent.hosttools import _program, decompressor
from aimms_ops.agent.restore import say

CHUNK = 1024 * 1024


def _recorded(path: str) -> str:
    """The first field of the first line of the .sha256 beside the dump."""
    try:
        with open(path + ".sha256", "rb") as fh:
            line = fh.readline()
    except OSError:
        return ""
    return line.rstrip(b"\n").split(b" ", 1)[0].decode("ascii", "replace")


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        say("usage: aimms-ops.pyz inspect-dump FILE")
        return 64
    path = argv[0]
    if not os.path.isfile(path):
        print("exists=0")
        return 0
    print("exists=1")
    print("size=%d" % os.stat(path).st_size)
    print("sha256_recorded=%s" % _recorded(path))
    unzip: Optional[List[str]] = None
    fmt = path.rsplit(".", 1)[-1] if path.endswith((".gz", ".zst")) else "plain"
    if fmt != "plain":  # igzip, else pigz, else gzip; zstd for a .zst
        unzip, missing = decompressor(path)
        if unzip is None:
            say("aimms-ops: %s is not installed on this host; reading a .%s dump needs it "
                "(install %s)" % (missing, fmt, missing))
            return 69
    print("format=%s" % fmt)
    sys.stdout.flush()
    digest = hashlib.sha256()
    with open(path, "rb") as src, open(path, "rb") as fh:
        first = None
        if unzip:
            first = subprocess.Popen(unzip, stdin=src, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        reader = subprocess.Popen([*_program(), "dump", "inspect"],
                                  stdin=first.stdout if first else src)
        if first is not None:
            first.stdout.close()  # type: ignore[union-attr]  # the reader has it
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
        stream = first.wait() if first is not None else 0
        reader.wait()
    print("stream=%s" % ("ok" if stream == 0 else "bad"))
    print("sha256=%s" % digest.hexdigest())
    return 0

"""``inspect-dump [--full] FILE``: a dump on this host checked before anything is touched.
Read-only.

One ``facts`` event: exists, size, sha256_recorded (from FILE.sha256, or empty), format
(gz|zst|plain), then what the dump reader (``aimms-ops.pyz dump inspect``) found reading it
as psql would (:func:`aimms_ops.dump.facts.fields`: header, complete, bytes, db, role and
preface as hex names), then stream (ok|bad: the whole file decompresses) and sha256
(computed). The file is hashed here while the decompressor reads it beside (a second read,
from the page cache) into the dump reader: the decompressed dump crosses Python once.

When the backup recorded what it holds (``agent.dumpfacts``) and the file's hash is the
one its ``.sha256`` names, the file is only hashed: its facts are the recorded ones, with
``recorded`` true (the backup checked that stream when it wrote it). A full read that
finds a good dump records its facts, for the next restore of it.
Exit 69 when the decompressor is missing, 64 usage.
"""

import hashlib
import os
import subprocess
from typing import List, Optional

from aimms_ops.agent import dumpfacts
from aimms_ops.agent.hostfacts import Report, sha256_file
from aimms_ops.agent.hosttools import _program, decompressor
from aimms_ops.agent.restore import say
from aimms_ops.core import events
from aimms_ops.dump.facts import INSPECT

CHUNK = 1024 * 1024


def main(argv: List[str]) -> int:
    full = argv[:1] == ["--full"]
    if full:
        argv = argv[1:]
    if len(argv) != 1:
        say("usage: aimms-ops.pyz inspect-dump [--full] FILE")
        return 64
    path = argv[0]
    out = Report("inspect-dump")
    if not os.path.isfile(path):
        out.put("exists", False)
        return out.send()
    out.put("exists", True)
    out.put("size", os.stat(path).st_size)
    recorded = dumpfacts.recorded(path)
    out.put("sha256_recorded", recorded)
    unzip: Optional[List[str]] = None
    fmt = path.rsplit(".", 1)[-1] if path.endswith((".gz", ".zst")) else "plain"
    if fmt != "plain":  # igzip, else pigz, else gzip; zstd for a .zst
        unzip, missing = decompressor(path)
        if unzip is None:
            say("aimms-ops: %s is not installed on this host; reading a .%s dump needs it "
                "(install %s)" % (missing, fmt, missing))
            return 69
    out.put("format", fmt)
    directory = os.path.dirname(path)
    kept = None if full else dumpfacts.load(directory, recorded)
    if kept is not None:
        sha256 = sha256_file(path)
        if sha256 == recorded:
            for key, value in kept.items():
                out.put(key, value)
            out.put("recorded", True)
            out.put("stream", "ok")
            out.put("sha256", sha256)
            return out.send()
    digest = hashlib.sha256()
    with open(path, "rb") as src, open(path, "rb") as fh:
        first = None
        if unzip:
            first = subprocess.Popen(unzip, stdin=src, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        reader = subprocess.Popen([*_program(), "dump", "inspect"],
                                  stdin=first.stdout if first else src,
                                  stdout=subprocess.PIPE)
        if first is not None:
            first.stdout.close()  # type: ignore[union-attr]  # the reader has it
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
        # The reader's report is one line, written once it has read everything.
        said = reader.communicate()[0].decode("utf-8", "replace")
        stream = first.wait() if first is not None else 0
    found = events.facts_in(said, INSPECT) or {}
    for key, value in found.items():
        out.put(key, value)
    out.put("stream", "ok" if stream == 0 else "bad")
    out.put("sha256", digest.hexdigest())
    good = dumpfacts.complete(found)
    if stream == 0 and good is not None and digest.hexdigest() == recorded:
        dumpfacts.store(directory, recorded, good)
    return out.send()

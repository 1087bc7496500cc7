"""The host program (aimms_ops.agent as the zipapp the host runs), for tests that run it
here as the host would: ``[*HOST, "dump", "filter", ...]``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from aimms_ops.core import events
from aimms_ops.core.names import BackupFile
from aimms_ops.host import bundle


def write_program(directory: Path) -> Path:
    """The host program as a bundle has it, in ``directory``: the zipapp and the folder of
    its modules beside it; the zipapp's path."""
    for name, data in bundle.files():
        if name == bundle.PROGRAM or name.startswith(bundle.PROGRAM + bundle.BESIDE + "/"):
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
    return directory / bundle.PROGRAM


PROGRAM = write_program(Path(tempfile.mkdtemp(prefix="aimms-ops-hostprog.")))
#: The command that runs the host program, to which its arguments are added.
HOST = [sys.executable, str(PROGRAM)]
#: The environment of a packaged script run here: it finds the host program there.
SCRIPT_ENV = {**os.environ, "AIMMS_OPS_PROGRAM": str(PROGRAM)}


def said(of: str, facts: dict) -> str:
    """The line the host program's command ``of`` prints for ``facts`` (its event)."""
    return events.facts_line(of, facts) + "\n"


def listing(backups: list[BackupFile] | None) -> dict:
    """The facts of list-backups for ``backups`` (None: no backup dir)."""
    if backups is None:
        return {"dir.exists": "0"}
    return {"dir.exists": "1", "backups": [
        {"name": b.name, "mtime": int(b.created.timestamp()), "size": b.size,
         "sha256": b.sha256, "pin": None} for b in backups]}


#: The start of a fake ``docker`` for fake_tools: it records its argv and stdin (read
#: when ``-i`` is given) in FAKE_DOCKER_DIR/calls.jsonl, has the test's scenario.json as
#: ``sc`` and ``answer(out, rc, err)``; the rest, which answers, is the test's.
FAKE_DOCKER_PRELUDE = r'''#!PYTHON
"""A fake docker: records argv and stdin (calls.jsonl), answers from scenario.json."""
import json, os, sys
d = os.environ["FAKE_DOCKER_DIR"]
argv = sys.argv[1:]
sc = json.load(open(os.path.join(d, "scenario.json")))
if "-i" in argv and "-f" in argv and sc.get("psql_rate"):  # a psql that takes its time
    import time
    parts = []
    while True:
        part = sys.stdin.buffer.read(sc["psql_rate"] // 10)
        if not part:
            break
        parts.append(part)
        time.sleep(0.1)
    data = b"".join(parts)
else:
    data = sys.stdin.buffer.read() if "-i" in argv else b""
with open(os.path.join(d, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps({"argv": argv, "stdin": data.decode("utf-8", "replace")}) + "\n")
def answer(out="", rc=0, err=""):
    sys.stdout.write(out); sys.stderr.write(err); sys.exit(rc)
'''


def fake_tools(tmp: Path, tools: dict[str, str]) -> dict[str, str]:
    """Fakes of the host's tools (NAME -> a python script whose first line is
    ``#!PYTHON``) in ``tmp/bin``; the environment of a script run here that finds them
    first on its PATH, and the host program, and keeps its temporary files in
    ``tmp/tmp``; the fakes' own dir is FAKE_DOCKER_DIR (``tmp/fake``)."""
    bin_dir = tmp / "bin"
    for d in (bin_dir, tmp / "fake", tmp / "tmp"):
        d.mkdir(exist_ok=True)
    for name, text in tools.items():
        (bin_dir / name).write_text(text.replace("PYTHON", f"{sys.executable} -S", 1))
        (bin_dir / name).chmod(0o755)
    return {**SCRIPT_ENV, "FAKE_DOCKER_DIR": str(tmp / "fake"), "TMPDIR": str(tmp / "tmp"),
            "PATH": f"{bin_dir}:{os.environ['PATH']}"}

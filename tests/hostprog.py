"""The host program (aimms_ops.agent as the zipapp the host runs), for tests that run it
here as the host would: ``[*HOST, "dump", "filter", ...]``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from aimms_ops.host import bundle

_DIR = Path(tempfile.mkdtemp(prefix="aimms-ops-hostprog."))
PROGRAM = _DIR / bundle.PROGRAM
PROGRAM.write_bytes(bundle.program())
#: The command that runs the host program, to which its arguments are added.
HOST = [sys.executable, str(PROGRAM)]
#: The environment of a packaged script run here: it finds the host program there.
SCRIPT_ENV = {**os.environ, "AIMMS_OPS_PROGRAM": str(PROGRAM)}


def key_values(text: str) -> dict[str, list[str]]:
    """KEY=VALUE lines (the host's facts, a report) as KEY -> its values, in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


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

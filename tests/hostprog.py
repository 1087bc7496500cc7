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

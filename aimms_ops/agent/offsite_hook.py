"""The offsite push after a good backup: the installed backup script's own offsite code
(``backup-postgres.sh --offsite-push-all``), under the backup's lock and run id. It never
fails the backup: each target ends with its RESULT line in the log."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aimms_ops.agent.backup import Backup


def after_backup(b: "Backup") -> None:
    script = b.s.get("--script", "")
    if not script:
        b.job.log("RESULT offsite all failed: the backup script's path is unknown")
        return
    args = ["bash", script, "--offsite-push-all", "--run-id", b.job.run_id,
            "--backup-dir", b.dir, "--log-file", b.s["LOG_FILE"],
            "--offsite-config", b.s["OFFSITE_CONFIG"]]
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("offsite."):
            b.job.report(line)

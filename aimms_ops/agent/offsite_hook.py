"""The offsite push after a good backup: the host program's own (``offsite.push_all``),
in the backup's process, under its lock, with its log and events and its run id.
It never fails the backup: each target ends with its RESULT line in the log."""

from __future__ import annotations

import shutil
import tempfile
from typing import TYPE_CHECKING

from aimms_ops.agent import offsite

if TYPE_CHECKING:
    from aimms_ops.agent.backup import Backup
    from aimms_ops.agent.job import Job


class _JobRun(offsite.Run):
    """The offsite run's lines go through the backup job's log and report."""

    def __init__(self, job: "Job", work: str) -> None:
        super().__init__("", job.run_id, False, True, work)
        self.job = job

    def log(self, line: str) -> None:
        self.job.log(line)

    def report(self, line: str) -> None:
        self.job.report(line)


def after_backup(b: "Backup") -> None:
    try:
        work = tempfile.mkdtemp(prefix="aimms-offsite.")
    except OSError:
        b.job.log("RESULT offsite all failed: cannot create a temporary dir")
        return
    try:
        offsite.push_all(b.s["OFFSITE_CONFIG"], b.dir, _JobRun(b.job, work))
    except Exception as e:  # noqa: BLE001 - nothing of the push may fail the backup
        b.job.log("RESULT offsite all failed: internal error: %s: %s" % (type(e).__name__, e))
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""The metrics the host's jobs write (the format is core/metrics.py's): the backup's,
``aimms_ops_backup.prom``, and each drill's, ``aimms_ops_drill_KIND_SOURCE.prom``, in
the ``METRICS_DIR`` setting (the inventory's ``metrics_dir``; nothing when unset). A
failure to write is logged by the caller and never fails the job."""

import os
import time
from typing import Dict, Optional

from aimms_ops.core import metrics, retention


def backup(directory: str, ok: bool, seconds: float, backup_dir: str,
           now: Optional[float] = None) -> str:
    """The backup's metrics file after a run (``ok``: it made a backup); a problem, or
    ''. The last success is the newest regular backup in ``backup_dir`` (its time and
    size), so that a failed run leaves them as they were."""
    if not directory:
        return ""
    now = int(time.time() if now is None else now)
    try:
        regular = [b for b in retention.scan(backup_dir) if not retention.is_safety(b.name)]
    except OSError:
        regular = []
    newest = max(regular, key=lambda b: (b.mtime, b.name)) if regular else None
    try:
        metrics.write(directory, metrics.BACKUP_FILE, [
            metrics.gauge("aimms_ops_backup_last_run_timestamp_seconds",
                          "When the last backup run ended (Unix time).", now),
            metrics.gauge("aimms_ops_backup_last_run_success",
                          "1 if the last backup run made a backup, else 0.", 1 if ok else 0),
            metrics.gauge("aimms_ops_backup_last_run_duration_seconds",
                          "How long the last backup run took.", round(seconds, 1)),
            metrics.gauge("aimms_ops_backup_last_success_timestamp_seconds",
                          "When the newest regular backup was written (Unix time).",
                          int(newest.mtime) if newest else None),
            metrics.gauge("aimms_ops_backup_last_success_size_bytes",
                          "The size of the newest regular backup.",
                          newest.size if newest else None),
            metrics.gauge("aimms_ops_backup_count", "Regular backups in the backup dir.",
                          len(regular)),
        ])
    except (OSError, ValueError) as e:
        return "cannot write the metrics in %s: %s" % (directory, getattr(e, "strerror", e))
    return ""


def drill(directory: str, source: str, ok: bool, figures: Dict[str, object],
                  now: Optional[float] = None) -> str:
    """The drill's metrics file in ``directory`` (nothing when it is empty); a problem,
    or ''. The last success is carried over from the file a failed run replaces."""
    if not directory:
        return ""
    now = int(time.time() if now is None else now)
    stem = metrics.drill_stem(source)
    last_ok = now if ok else metrics.value(metrics.read(
        os.path.join(directory, metrics.file_name(stem))),
        "aimms_ops_drill_last_success_timestamp_seconds")
    labels = (("kind", metrics.drill_kind(source)), ("source", source))

    def num(key: str) -> Optional[float]:
        v = figures.get(key)
        return float(v) if ok and isinstance(v, (int, float)) else None

    try:
        metrics.write(directory, stem, [
            metrics.gauge("aimms_ops_drill_last_run_timestamp_seconds",
                          "When the last drill ended (Unix time).", now, labels),
            metrics.gauge("aimms_ops_drill_success", "1 if the last drill passed, else 0.",
                          1 if ok else 0, labels),
            metrics.gauge("aimms_ops_drill_last_success_timestamp_seconds",
                          "When the last drill that passed ended (Unix time).", last_ok, labels),
            metrics.gauge("aimms_ops_drill_rto_seconds", "Recovery time measured by the "
                          "last drill: fetch start to a cluster answering with the data.",
                          num("rto_seconds"), labels),
            metrics.gauge("aimms_ops_drill_rpo_seconds", "Age of what the last drill "
                          "restored: when it answered minus the backup's time.", num("rpo_seconds"),
                          labels),
            metrics.gauge("aimms_ops_drill_databases_checked", "Databases the last drill "
                          "found restored and present live.", num("databases"), labels),
        ])
    except (OSError, ValueError) as e:
        return "cannot write the metrics in %s: %s" % (directory, getattr(e, "strerror", e))
    return ""

"""The backup disk's outlook: how many more backups fit, judged for status.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from aimms_ops.backup.listing import good_backups
from aimms_ops.core import units
from aimms_ops.core.checks import Check, State
from aimms_ops.core.names import BackupFile
from aimms_ops.monitor.hostfacts import HostFacts


@dataclass(frozen=True)
class DiskOutlook:
    free: int
    total: int
    growth_per_day: float | None  # bytes per day the backups add, None when unknown
    days_left: float | None

    def as_dict(self) -> dict[str, object]:
        return {"free_bytes": self.free, "total_bytes": self.total,
                "growth_bytes_per_day": None if self.growth_per_day is None
                else round(self.growth_per_day),
                "days_left": None if self.days_left is None else round(self.days_left, 1)}


def disk_outlook(free: int, total: int, backups: list[BackupFile] | None) -> DiskOutlook:
    """Free space and how many days it lasts at the present growth of the backups.

    Retention keeps about as many backups as there are now, so the backup dir grows
    as each backup grows: the growth per day is the slope of the backup sizes over
    time (least squares, bytes per day per backup) times the number of backups kept.
    Unknown with backups of less than a day apart; ``days_left`` is None when not growing.
    """
    good = good_backups(backups)
    if len(good) < 2:
        return DiskOutlook(free, total, None, None)
    xs = [b.created.timestamp() / 86400 for b in good]
    ys = [float(b.size) for b in good]
    if max(xs) - min(xs) < 1:
        return DiskOutlook(free, total, None, None)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    growth = slope * len(good)
    days = free / growth if growth > 0 else None
    return DiskOutlook(free, total, growth, days)


def check_disk(outlook: DiskOutlook | None, backups: list[BackupFile] | None,
               backup_dir: str) -> Check:
    """Free space in the backup dir: room for the next backup, and days left."""
    name = "disk"
    if outlook is None:
        return Check(name, State.UNKNOWN, f"free space of {backup_dir} unknown")
    good = good_backups(backups)
    last = good[0].size if good else 0
    free = outlook.free
    detail = f"{units.size(free)} free in {backup_dir}"
    if outlook.days_left is not None:
        detail += f", about {outlook.days_left:.0f} days left at the present growth " \
                  f"({units.size(outlook.growth_per_day or 0)}/day)"
    elif outlook.growth_per_day is not None:
        detail += ", backups not growing"
    if last and free < last * 12 // 10:
        return Check(name, State.CRITICAL, f"only {detail}: the next backup "
                     f"({units.size(last)} last time) will not fit",
                     "free space, or lower retention_days and run fab prune")
    if (last and free < 3 * last) or (outlook.days_left is not None and outlook.days_left < 14):
        return Check(name, State.WARNING, f"only {detail}",
                     "free space, or lower retention_days and run fab prune")
    return Check(name, State.OK, detail)


def disk_from(hf: HostFacts) -> DiskOutlook | None:
    avail, size = hf.facts.get("backup_dir.avail_kb", ""), hf.facts.get("backup_dir.size_kb", "")
    if not avail.isdigit():
        return None
    return disk_outlook(int(avail) * 1024, int(size) * 1024 if size.isdigit() else 0,
                        hf.backups)

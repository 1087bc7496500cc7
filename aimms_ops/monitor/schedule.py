"""When cron runs a job next: the five fields of a crontab line, read as cron reads them.

``minute hour day-of-month month day-of-week``, each ``*``, a number, a range ``a-b``, a
list ``a,b`` or a step ``*/n`` / ``a-b/n``; month and weekday names (``jan``, ``mon``);
weekday 0 and 7 both Sunday. When both day fields are restricted, a day matching either
one runs the job (cron's rule). Times are the host's local time: the caller gives the
host's UTC offset.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

_NAMES = {**{m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
          **{d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field(text: str, low: int, high: int) -> set[int] | None:
    """The values of one field; None when it is ``*`` (any)."""
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.lower().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        else:
            first, _, last = base.partition("-")
            start = int(_NAMES.get(first, first))
            end = int(_NAMES.get(last, last)) if last else (high if step_text else start)
        if not (low <= start <= high and low <= end <= high and step >= 1):
            raise ValueError(f"{part!r} is out of {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def next_run(schedule: str, after: datetime, utc_offset: int = 0) -> datetime | None:
    """The first moment after ``after`` (aware) at which ``schedule`` fires, in UTC, for a
    host whose clock is ``utc_offset`` seconds ahead of UTC; None when it never does (or
    the line is not five fields cron reads)."""
    try:
        fields = schedule.split()
        if len(fields) != 5:
            return None
        minute, hour, dom, month, dow = (_field(f, lo, hi)
                                         for f, (lo, hi) in zip(fields, _RANGES, strict=True))
    except ValueError:
        return None
    if dow is not None:
        dow = {d % 7 for d in dow}
    tz = timezone(timedelta(seconds=utc_offset))
    local = after.astimezone(tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = local.replace(hour=0, minute=0)
    for _ in range(366 * 5):
        if _day_matches(day, dom, month, dow):
            for h in sorted(hour) if hour is not None else range(24):
                for m in sorted(minute) if minute is not None else range(60):
                    at = day.replace(hour=h, minute=m)
                    if at >= local:
                        return at.astimezone(UTC)
        day += timedelta(days=1)
    return None


def _day_matches(day: datetime, dom: set[int] | None, month: set[int] | None,
                 dow: set[int] | None) -> bool:
    if month is not None and day.month not in month:
        return False
    weekday = (day.weekday() + 1) % 7  # cron: 0 is Sunday
    if dom is not None and dow is not None:
        return day.day in dom or weekday in dow
    return (dom is None or day.day in dom) and (dow is None or weekday in dow)

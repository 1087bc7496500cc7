"""``fab info``: when cron runs next (monitor/schedule.py, as cron reads a line) and the
one screen of the whole state (monitor/info.py), from canned facts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aimms_ops.backup import install
from aimms_ops.monitor import hostfacts, info, status
from aimms_ops.monitor.schedule import next_run
from aimms_ops.offsite.copies import OffsiteCopy, TargetListing

from .test_health_unit import NOW, SHA, _b, _gathered, _host

MON = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(("line", "offset", "want"), [
    ("0 2 * * *", 0, datetime(2026, 12, 7, 2, 0)),
    ("0 2 * * *", 3600, datetime(2026, 12, 8, 1, 0)),  # 02:00 at UTC+1 has passed today
    ("0 2 * * *", -5 * 3600, datetime(2026, 12, 7, 7, 0)),
    ("*/15 * * * *", 0, datetime(2026, 12, 7, 1, 45)),
    ("0 4 * * 0", 0, datetime(2026, 12, 13, 4, 0)),  # Sunday
    ("0 4 * * 7", 0, datetime(2026, 12, 13, 4, 0)),  # 7 is Sunday too
    ("0 4 * * sun", 0, datetime(2026, 12, 13, 4, 0)),
    ("30 1 * * mon-fri", 0, datetime(2026, 12, 8, 1, 30)),  # now is not after now
    ("0 0 1 jan *", 0, datetime(2027, 1, 1, 0, 0)),
    ("0 0 13 * 5", 0, datetime(2026, 12, 11, 0, 0)),  # the 13th or a Friday (cron's OR)
    ("0 0 30 2 *", 0, None),  # never
    ("0 2 * *", 0, None),  # not five fields
    ("61 * * * *", 0, None),
])
def test_next_run_reads_a_line_as_cron_does(line, offset, want):
    got = next_run(line, MON, offset)
    assert got == (want.replace(tzinfo=UTC) if want else None)


def test_the_screen_says_what_is_kept_where_what_runs_next_and_what_you_would_lose():
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    text = _gathered([_b(2, 2048), _b(26, 2000), _b(50, 1024)], crontab=cron)
    hf = hostfacts.parse_gathered(text, h, "ssh-ed25519 SHA256:x")
    report = status.judge(hf, h, status.parse_max_age("26h"), "26h")
    copy = OffsiteCopy("s3", _b(26).name, SHA, 2000, SHA, 2100, NOW, 2100)
    listings = [TargetListing("s3", True, copies=[copy]),
                TargetListing("vault", False, "cannot list vault: refused")]
    screen = info.describe(hf, h, report, listings)
    rows = {r.what: r.text for r in screen.rows}
    assert rows["backups on the host"].startswith("3, 5.0 KiB, ")
    assert rows["backups on the host"].endswith("(2h00m ago)")
    assert rows["offsite s3"].startswith("1, 2.0 KiB, ") and "(26h ago)" in rows["offsite s3"]
    assert rows["offsite vault"] == "cannot list it: cannot list vault: refused"
    assert rows["you would lose now"].startswith("up to 2h00m of writes")
    assert rows["next backup"].startswith("2026-11-26 02:00 UTC (in 14h)")
    assert "free of" in rows["space"] and rows["set aside by restores"] == "none"
    d = screen.as_dict()
    assert d["state"] == "OK" and d["you_would_lose_now"] == 7200
    assert d["backups_on_the_host"]["count"] == 3 and d["offsite_s3"]["count"] == 1
    assert d["next_backup"] == "2026-11-26T02:00:00Z"


def test_with_no_copy_anywhere_everything_would_be_lost():
    h = _host()
    hf = hostfacts.parse_gathered(_gathered([], crontab=""), h, "ssh-ed25519 SHA256:x")
    report = status.judge(hf, h, status.parse_max_age("26h"), "26h")
    rows = {r.what: r.text for r in info.describe(hf, h, report, []).rows}
    assert rows["you would lose now"] == "everything: no good copy anywhere"
    assert rows["backups on the host"] == "none" and rows["pinned"] == "none"

"""Retention: the one pure function over synthetic lists of backups (no host, no disk).

borg prune's documented example and rules, GFS over years, gaps, several backups a
day, runs of failures, pins and min_keep; and the day-based rule of today's
inventories, against the backup script's own day-based fallback run for real.
"""

from __future__ import annotations

import os
import random
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aimms_ops.core import retention
from aimms_ops.core.errors import OpsError
from aimms_ops.core.retention import Backup, Pin, Policy, decide
from aimms_ops.host import events as host_events
from aimms_ops.host import shell
from aimms_ops.inventory import loader, model
from tests.hostprog import SCRIPT_ENV

REPO = Path(__file__).resolve().parents[2]
DAY = 86400


def _at(d: date, hour: int = 2, minute: int = 0) -> float:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC).timestamp()


def _name(ts: float, label: str = "") -> str:
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y%m%d_%H%M%S")
    return f"aimms_postgres_{stamp}{'_' + label if label else ''}.sql.gz"


def _daily(first: date, last: date, *, skip: tuple[date, ...] = (), hour: int = 2
           ) -> list[Backup]:
    out = []
    d = first
    while d <= last:
        if d not in skip:
            ts = _at(d, hour)
            out.append(Backup(_name(ts), ts, 1000))
        d += timedelta(days=1)
    return out


def _kept(decisions) -> dict[str, str]:
    """{YYYY-MM-DD HH:MM: rule} of the kept backups."""
    return {datetime.fromtimestamp(d.mtime, tz=UTC).strftime("%Y-%m-%d %H:%M"): d.rule
            for d in decisions if d.keep}


def _days(decisions) -> dict[str, str]:
    return {k[:10]: v for k, v in _kept(decisions).items()}


# --- borg's documented example (docs/misc/prune-example.txt) --------------------------


def test_borgs_visualized_example():
    """Daily in 2015 but 12-19; it is 2016-01-01; --keep-daily 14 --keep-monthly 6
    --keep-yearly 1 keeps exactly these, for exactly these rules."""
    backups = _daily(date(2015, 1, 1), date(2015, 12, 31), skip=(date(2015, 12, 19),))
    got = decide(backups, Policy(daily=14, monthly=6, yearly=1, min_keep=0),
                 _at(date(2016, 1, 1), 0))
    want = {f"2015-12-{d:02d}": "daily" for d in (*range(20, 32), 17, 18)}
    want.update({"2015-11-30": "monthly", "2015-10-31": "monthly", "2015-09-30": "monthly",
                 "2015-08-31": "monthly", "2015-07-31": "monthly", "2015-06-30": "monthly",
                 "2015-01-01": "yearly[oldest]"})
    assert _days(got) == want
    assert len(got) == len(backups)
    assert sum(1 for d in got if not d.keep) == len(backups) - len(want)


def test_borg_doc_daily_7_weekly_4():
    """borg prune --keep-daily=7 --keep-weekly=4: 7 end-of-day, then 4 more end-of-week
    (ISO weeks, Sunday the last day), the week of the dailies not counted again."""
    backups = _daily(date(2026, 9, 1), date(2026, 11, 30))  # 2026-11-30 is a Monday
    got = decide(backups, Policy(daily=7, weekly=4, min_keep=0), _at(date(2026, 12, 1)))
    days = _days(got)
    assert [d for d, r in days.items() if r == "daily"] == [
        f"2026-11-{d}" for d in (30, 29, 28, 27, 26, 25, 24)]
    # Week 2026-W48 (23..29) is used up by the dailies; the next 4 Sundays are weekly.
    assert [d for d, r in days.items() if r == "weekly"] == [
        "2026-11-22", "2026-11-15", "2026-11-08", "2026-11-01"]
    assert len(days) == 11


def test_100_daily_backups_with_daily_7_weekly_4_monthly_3():
    """OFFSITE.md: over 100 daily backups borg keeps 14 with these rules (restic 10)."""
    backups = _daily(date(2026, 8, 23), date(2026, 11, 30))
    assert len(backups) == 100
    got = decide(backups, Policy(daily=7, weekly=4, monthly=3, min_keep=0),
                 _at(date(2026, 12, 1)))
    assert sum(d.keep for d in got) == 14
    rules = [d.rule for d in got if d.keep]
    assert rules.count("daily") == 7 and rules.count("weekly") == 4
    assert rules.count("monthly") == 3  # Oct, Sep, Aug (Nov is used up by the dailies)


def test_a_rule_that_cannot_be_filled_keeps_the_oldest_once():
    backups = _daily(date(2026, 11, 1), date(2026, 11, 30))
    got = decide(backups, Policy(daily=3, monthly=6, yearly=5, min_keep=0),
                 _at(date(2026, 12, 1)))
    days = _days(got)
    # monthly finds only October? No: only November, used up by daily: then its oldest.
    assert days["2026-11-01"] == "monthly[oldest]"
    # yearly finds nothing new either; the oldest is already kept: nothing more.
    assert list(days.values()).count("yearly[oldest]") == 0
    assert len(days) == 4


# --- GFS over years -------------------------------------------------------------------


def test_years_of_daily_backups():
    backups = _daily(date(2021, 3, 10), date(2026, 11, 30))
    got = decide(backups, Policy(daily=7, weekly=4, monthly=12, yearly=10, min_keep=3),
                 _at(date(2026, 12, 1)))
    days = _days(got)
    rules = list(days.values())
    assert rules.count("daily") == 7
    assert rules.count("weekly") == 4
    assert rules.count("monthly") == 12
    # monthly: Oct 2026 back to Nov 2025 (Nov 2026 is used up by the dailies)
    assert days["2025-12-31"] == "monthly" and days["2025-11-30"] == "monthly"
    # yearly: 2026 and 2025 are used up by earlier rules, so 2024 .. 2021, then the oldest
    yearly = sorted(d for d, r in days.items() if r == "yearly")
    assert yearly == ["2021-12-31", "2022-12-31", "2023-12-31", "2024-12-31"]
    assert days["2021-03-10"] == "yearly[oldest]"
    assert len(got) == len(backups)  # one decision per backup
    # Every decision names its rule, removed ones too.
    assert {d.rule for d in got if not d.keep} == {"none"}


def test_each_period_keeps_its_newest_when_there_are_several_a_day():
    backups = []
    for day in range(1, 11):
        for hour in (2, 9, 14, 23):
            ts = _at(date(2026, 11, day), hour)
            backups.append(Backup(_name(ts), ts, 1000))
    got = decide(backups, Policy(daily=5, min_keep=1), _at(date(2026, 11, 11)))
    assert set(_kept(got)) == {f"2026-11-{d:02d} 23:00" for d in range(6, 11)}


def test_gaps_reach_further_back_since_only_periods_with_a_backup_count():
    backups = [b for b in _daily(date(2026, 11, 1), date(2026, 11, 30))
               if not date(2026, 11, 20) <= datetime.fromtimestamp(b.mtime, UTC).date()
               <= date(2026, 11, 27)]
    got = decide(backups, Policy(daily=5, min_keep=1), _at(date(2026, 12, 1)))
    assert sorted(_days(got)) == ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19",
                                  "2026-11-28", "2026-11-29", "2026-11-30"][2:]


def test_weeks_are_iso_weeks_across_the_new_year():
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 2026-W53.
    backups = _daily(date(2026, 12, 20), date(2027, 1, 10))
    got = decide(backups, Policy(weekly=3, min_keep=0), _at(date(2027, 1, 11)))
    days = _days(got)
    assert days == {"2027-01-10": "weekly", "2027-01-03": "weekly", "2026-12-27": "weekly"}
    assert [d.reason for d in got if d.keep][1].endswith("(2026-W53)")


def test_periods_are_utc_calendar_periods():
    # 23:30 UTC and 00:30 UTC the next day: two days, whatever the local time zone.
    a, b = _at(date(2026, 11, 29), 23, 30), _at(date(2026, 11, 30), 0, 30)
    got = decide([Backup(_name(a), a), Backup(_name(b), b)], Policy(daily=2, min_keep=0),
                 b + 3600)
    assert all(d.keep and d.rule == "daily" for d in got)


# --- failures, empty files, min_keep ----------------------------------------------------


def test_a_run_of_failures_never_empties_the_store():
    """No backup for 40 days: the daily rule keeps what it can, min_keep the newest 3."""
    backups = _daily(date(2026, 9, 1), date(2026, 10, 20))
    now = _at(date(2026, 11, 30))
    got = decide(backups, Policy(within_days=7, min_keep=3), now)
    kept = _days(got)
    assert kept == {"2026-10-20": "min_keep", "2026-10-19": "min_keep",
                    "2026-10-18": "min_keep"}
    gfs = decide(backups, Policy(daily=7, min_keep=3), now)
    assert len(_days(gfs)) == 7  # periods with a backup count, however old


def test_empty_files_fill_no_period_and_do_not_count_for_min_keep():
    backups = _daily(date(2026, 11, 1), date(2026, 11, 10))
    empty = [Backup(_name(_at(date(2026, 11, d), 12)), _at(date(2026, 11, d), 12), 0)
             for d in range(11, 16)]
    got = decide(backups + empty, Policy(daily=3, min_keep=4), _at(date(2026, 11, 20)))
    days = _days(got)
    assert days == {"2026-11-10": "daily", "2026-11-09": "daily", "2026-11-08": "daily",
                    "2026-11-07": "min_keep"}
    assert {d.rule for d in got if d.name in {e.name for e in empty}} == {"empty"}


def test_min_keep_alone_keeps_the_newest_good_ones():
    backups = _daily(date(2026, 1, 1), date(2026, 1, 31))
    got = decide(backups, Policy(yearly=1, min_keep=5), _at(date(2026, 11, 30)))
    days = _days(got)
    assert days["2026-01-31"] == "yearly"
    assert [d for d, r in days.items() if r == "min_keep"] == [
        "2026-01-30", "2026-01-29", "2026-01-28", "2026-01-27"]


# --- pins --------------------------------------------------------------------------------


def test_a_pinned_backup_older_than_every_rule_survives():
    backups = _daily(date(2026, 11, 1), date(2026, 11, 30))
    old_ts = _at(date(2019, 5, 5))
    old = Backup(_name(old_ts, "pre-migration"), old_ts, 1000,
                 Pin(by="ops@laptop", reason="before the migration"))
    got = decide([*backups, old], Policy(daily=7, min_keep=3), _at(date(2026, 12, 1)))
    d = next(x for x in got if x.name == old.name)
    assert d.keep and d.rule == "pinned"
    assert "ops@laptop" in d.reason and "before the migration" in d.reason


def test_a_pin_uses_up_no_period_and_an_expired_pin_protects_nothing():
    backups = _daily(date(2026, 11, 1), date(2026, 11, 30))
    now = _at(date(2026, 12, 1))
    safety_ts = _at(date(2026, 11, 30), 10)  # after that day's nightly backup
    safety = Backup(_name(safety_ts, "pre-restore"), safety_ts, 1000,
                    Pin(reason="safety copy", until=now + 13 * DAY))
    got = decide([*backups, safety], Policy(daily=2, min_keep=1), now)
    assert _kept(got) == {"2026-11-30 10:00": "pinned", "2026-11-30 02:00": "daily",
                          "2026-11-29 02:00": "daily"}
    later = now + 15 * DAY
    got = decide([*backups, safety], Policy(daily=2, min_keep=1), later)
    assert _kept(got) == {"2026-11-30 10:00": "daily", "2026-11-29 02:00": "daily"}


def test_pins_are_parsed_from_their_file():
    text = retention.pin_text("ops@laptop", 1764547200, "keep it", 1764547200 + 14 * DAY)
    pin = retention.parse_pin(text)
    assert pin.by == "ops@laptop" and pin.reason == "keep it"
    assert pin.until == 1764547200 + 14 * DAY
    assert pin.active(1764547200) and not pin.active(1764547200 + 15 * DAY)
    assert retention.parse_pin("by=x\nuntil=\nreason=\n").until is None  # for ever
    assert retention.parse_pin("until=garbage\n").active(10**12)  # unreadable: kept


# --- the day-based rule of today's inventories ---------------------------------------------


def _old_rule(backups: list[Backup], days: int, min_keep: int, now: float) -> set[str]:
    """What the day-based rule kept before: the newest min_keep good ones whatever their
    age, and every backup whose (whole-second) mtime is within ``days`` days of now."""
    kept, i = set(), 0
    for b in sorted(backups, key=lambda b: (b.mtime, b.name), reverse=True):
        if b.size > 0 and i < min_keep:
            kept.add(b.name)
        if b.size > 0:
            i += 1
        if int(b.mtime) >= int(now) - days * DAY:
            kept.add(b.name)
    return kept


def _random_dir(rng: random.Random, now: float) -> list[Backup]:
    out = []
    for _ in range(rng.randint(0, 40)):
        ts = now - rng.uniform(0, 40) * DAY
        ts = round(ts, rng.choice((0, 3)))
        out.append(Backup(_name(ts, rng.choice(("", "", "pre-restore"))), ts,
                          rng.choice((0, 100, 5000, 5000, 5000))))
    return list({b.name: b for b in out}.values())


@pytest.mark.parametrize("seed", range(200))
def test_retention_days_keeps_exactly_what_it_kept_before(seed):
    rng = random.Random(seed)
    now = 1764547200 + rng.uniform(0, DAY)
    backups = _random_dir(rng, now)
    days, min_keep = rng.randint(1, 20), rng.randint(1, 6)
    got = decide(backups, Policy(within_days=days, min_keep=min_keep), now)
    assert {d.name for d in got if d.keep} == _old_rule(backups, days, min_keep, now)


def test_the_legacy_inventory_gives_the_day_based_policy(tmp_path):
    inv = loader.load(REPO / "inventory.yml")
    p = inv.host(None).policy
    assert (p.within_days, p.min_keep, p.rules_text) == (7, 3, "")


def _script_decisions(tmp_path: Path, backups: list[Backup],
                      *extra: str) -> list[tuple[str, str]]:
    d = tmp_path / "b"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for b in backups:
        f = d / b.name
        f.write_bytes(b"x" * b.size)
        os.utime(f, (b.mtime, b.mtime))
    script = tmp_path / "backup-postgres.sh"
    script.write_text(shell.script_text("backup-postgres.sh"))
    env = SCRIPT_ENV
    proc = subprocess.run(
        ["bash", str(script), "--backup-dir", str(d), "--log-file", str(tmp_path / "log"),
         "--project", "p", "--prune-only", "--dry-run", "--report", *extra],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [(e["action"], e["name"]) for e in host_events.parse(proc.stdout).of("prune")]


@pytest.mark.parametrize("seed", range(6))
def test_the_script_applies_the_decision_of_retention_decide(tmp_path, seed):
    """The backup script's retention step, run for real with the host program beside it,
    applies retention.decide's decision, backup for backup."""
    rng = random.Random(1000 + seed)
    now = datetime.now(UTC).timestamp()
    # Whole seconds, away from the day boundary, so that the two clocks agree.
    backups = [b for b in _random_dir(rng, now)
               if abs(((now - b.mtime) / DAY) % 1 - 0.5) < 0.45]
    backups = [Backup(b.name, float(int(b.mtime)), b.size) for b in backups]
    days, keep = rng.randint(1, 20), rng.randint(1, 6)
    flags = ("--retention-days", str(days), "--min-keep", str(keep))
    got = _script_decisions(tmp_path, backups, *flags)
    pure = [(d.action, d.name) for d in decide(backups, Policy(within_days=days,
                                                               min_keep=keep), now)]
    assert got == pure


def test_without_the_host_program_nothing_is_removed_and_the_fix_is_named(tmp_path):
    backups = _daily(date(2026, 1, 1), date(2026, 1, 20))
    d = tmp_path / "b"
    d.mkdir()
    for b in backups:
        (d / b.name).write_bytes(b"x")
        os.utime(d / b.name, (b.mtime, b.mtime))
    script = tmp_path / "s.sh"
    script.write_text(shell.script_text("backup-postgres.sh"))
    proc = subprocess.run(
        ["bash", str(script), "--backup-dir", str(d), "--log-file", str(tmp_path / "log"),
         "--project", "p", "--prune-only", "--report", "--retention-rules", "daily=3"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "AIMMS_OPS_PROGRAM": str(tmp_path / "absent.pyz")})
    assert proc.returncode == 69
    assert "fab install-backups" in proc.stderr
    assert len(list(d.glob("aimms_postgres_*"))) == len(backups)


def test_the_host_entry_point_reads_the_dir_and_its_pins(tmp_path, capsys):
    now = _at(date(2026, 12, 1))
    backups = _daily(date(2026, 11, 1), date(2026, 11, 30))
    for b in backups:
        (tmp_path / b.name).write_bytes(b"x" * 10)
        os.utime(tmp_path / b.name, (b.mtime, b.mtime))
    (tmp_path / f"{backups[0].name}.pin").write_text(
        retention.pin_text("me@here", now, "first of the month"))
    (tmp_path / "not-a-backup.sql.gz").write_text("x")
    assert retention.main([str(tmp_path), str(now), "0", "1", "daily=2"]) == 0
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert len(lines) == 30
    assert [ln[:3] for ln in lines if ln[0] == "keep"] == [
        ["keep", backups[-1].name, "daily"], ["keep", backups[-2].name, "daily"],
        ["keep", backups[0].name, "pinned"]]
    assert retention.main([str(tmp_path), str(now), "0", "1", "hourly=2"]) == 64


# --- the inventory --------------------------------------------------------------------------


def _inv(tmp_path: Path, **host_changes) -> model.Inventory:
    data = yaml.safe_load((REPO / "inventory.yml").read_text())
    h = data["hosts"]["aidset"]
    for k, v in host_changes.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    p = tmp_path / "inv.yml"
    p.write_text(yaml.safe_dump(data))
    return loader.load(p)


def test_a_gfs_inventory_needs_no_retention_days(tmp_path):
    inv = _inv(tmp_path, retention_days=None, min_keep=None,
               retention={"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12,
                          "keep_yearly": 2, "min_keep": 5})
    p = inv.host(None).policy
    assert (p.within_days, p.daily, p.weekly, p.monthly, p.yearly, p.min_keep) == (
        0, 7, 4, 12, 2, 5)
    assert p.rules_text == "daily=7 weekly=4 monthly=12 yearly=2"


def test_an_inventory_without_any_retention_is_refused(tmp_path):
    with pytest.raises(OpsError, match="retention_days: missing; expected retention_days, "
                       "or a retention mapping"):
        _inv(tmp_path, retention_days=None)
    with pytest.raises(OpsError, match="at least one of keep_daily"):
        _inv(tmp_path, retention_days=None, retention={"keep_daily": 0})
    with pytest.raises(OpsError, match="min_keep in one place only"):
        _inv(tmp_path, retention={"keep_daily": 3, "min_keep": 2})


# --- what the tasks read back: listings with pins, status of the guard and the pings ----------


def _host(**kw) -> model.Host:
    from aimms_ops.inventory.model import Compose, Host, Ping, Postgres, Volumes

    base = dict(
        name="aidset", backup_dir="/b", backup_script="/s.sh", log_file="/l.log",
        cron_schedule="0 2 * * *", policy=Policy(within_days=7),
        compose=Compose("/c", "dc.yml", "aimms-web", "postgres"),
        postgres=Postgres("postgres"),
        volumes=Volumes("pg", "redis"), ping=Ping("https://hc-ping.com/x"))
    base.update(kw)
    return Host(**base)


def test_a_listing_carries_pins_and_latest_is_never_a_safety_copy():
    from aimms_ops.backup import listing

    now = int(time_now())
    pin = retention.pin_text("me@laptop", now, "why not", now + 3 * DAY)
    sha = "a" * 64
    rows = [(now, "aimms_postgres_20261130_100000_pre-restore.sql.gz", pin),
            (now - 9, "aimms_postgres_20261130_020000.sql.gz", None),
            (now - 99, "aimms_postgres_20261129_020000.sql.gz", None)]
    found = listing.parse_listing({"backups": [
        {"mtime": t, "size": 10, "name": name, "sha256": sha, "pin": p}
        for t, name, p in rows]}, "/b")
    assert [b.pinned for b in found] == [True, False, False]
    d = found[0].as_dict()
    assert (d["pinned"], d["pin_reason"], d["pinned_by"]) == (True, "why not", "me@laptop")
    assert d["pinned_until"].endswith("Z") and "pin" not in d
    assert listing.pick(found, "latest").name == "aimms_postgres_20261130_020000.sql.gz"
    with pytest.raises(OpsError, match="only safety copies"):
        listing.pick(found[:1], "latest")


def time_now() -> float:
    return datetime.now(UTC).timestamp()


def test_status_reads_the_last_ping_and_an_accepted_shrink():
    from aimms_ops.core.checks import State
    from aimms_ops.core.names import BackupFile
    from aimms_ops.monitor import runlog, status

    log = ("2026-12-01T02:00:00Z backup[7] ping start: ok (healthchecks)\n"
           "2026-12-01T02:00:09Z backup[7] ping ok: failed: curl: (7) Failed to connect "
           "to 127.0.0.1 port 9 (healthchecks)\n")
    pings = runlog.parse_pings(log)
    assert [(p.event, p.ok) for p in pings] == [("start", True), ("ok", False)]
    check = status.check_ping(pings, _host())
    assert check.state is State.WARNING and "curl: (7)" in check.detail
    assert status.check_ping(pings[:1], _host()).state is State.OK
    assert status.check_ping(pings, _host(ping=None)) is None

    t = datetime(2026, 12, 1, 2, tzinfo=UTC)
    files = [BackupFile(f"aimms_postgres_2026113{i}_020000.sql.gz", "/b/x", size, "a" * 64,
                        t - timedelta(days=i), "remote")
             for i, size in enumerate([100, 1000, 1000, 1000, 1000, 1000])]
    assert status.check_size(files).state is State.WARNING
    assert "100 B" in status.check_size(files).detail
    runs = runlog.parse_results(
        f"2026-12-01T02:00:09Z backup[7] RESULT ok {files[0].name} size=100 sha256=x "
        "seconds=1 shrink allowed: size dropped from 1000B to 100B\n")
    assert status.check_size(files, runs).state is State.OK
    suspicious = runlog.parse_results(
        f"2026-12-01T02:00:09Z backup[7] RESULT ok {files[0].name} size=100 sha256=x "
        "seconds=1 suspicious: size dropped from 1000B to 100B\n")
    assert status.check_size(files, suspicious).state is State.WARNING
    assert suspicious[0].ok and suspicious[0].name == files[0].name


def test_the_settings_carry_the_policy_the_pins_and_the_ping():
    from aimms_ops.backup import settings
    host = _host(policy=Policy(daily=7, monthly=3),
                 allow_shrink=True, safety_pin_days=5)
    s = settings.script_settings(host)
    assert s["RETENTION_DAYS"] == "0" and s["RETENTION_RULES"] == "daily=7 monthly=3"
    assert (s["SAFETY_PIN_DAYS"], s["ALLOW_SHRINK"], s["PING_URL"], s["PING_KIND"]) == (
        "5", "1", "https://hc-ping.com/x", "healthchecks")
    args = settings.script_args(host)
    assert "--allow-shrink" in args and "--retention-rules" in args
    assert "PING_URL_VERIFY" not in " ".join(args)  # the verify job's, in the conf only


def test_a_prune_removes_nothing_unless_its_decision_is_the_one_shown(tmp_path):
    """fab prune confirms a plan, then the host removes exactly that or nothing."""
    from aimms_ops.backup import run as bk

    now = time_now()
    stamps = [now - i * DAY - 3600 for i in range(12)]
    d = tmp_path / "b"
    d.mkdir()
    for ts in stamps:
        (d / _name(ts)).write_bytes(b"x")
        os.utime(d / _name(ts), (ts, ts))
    script = tmp_path / "s.sh"
    script.write_text(shell.script_text("backup-postgres.sh"))

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(script), "--backup-dir", str(d), "--log-file", str(tmp_path / "l"),
             "--project", "p", "--prune-only", "--report", "--retention-days", "5",
             "--min-keep", "1", *extra], capture_output=True, text=True, timeout=60,
            check=False, env=SCRIPT_ENV)

    plan = bk.parse_prune(host_events.parse(run("--dry-run").stdout))
    assert [x.action for x in plan].count("remove") == 7
    shown = plan[:-1]  # a plan that is not what the host decides now
    refused = run("--expect-plan", bk.plan_digest(shown))
    assert refused.returncode == 1 and "changed since the plan" in refused.stderr
    assert len(list(d.glob("aimms_postgres_*"))) == 12
    done = run("--expect-plan", bk.plan_digest(plan))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in d.glob("aimms_postgres_*")} == {
        x.name for x in plan if x.action == "keep"}
    empty = tmp_path / "e"
    empty.mkdir()
    d = empty
    assert run("--expect-plan", bk.plan_digest([])).returncode == 0

"""aimms_ops.core.units: the one definition of sizes, ages and durations every task shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aimms_ops.core import units


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (177, "177 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (2048 + 512, "2.5 KiB"),
    (2_000_000, "1.9 MiB"), (44_239_503_360, "41.2 GiB"), (3 * 1024**4, "3.0 TiB"),
    (5000 * 1024**4, "5000.0 TiB"), (-2048, "-2.0 KiB"), (1536.0, "1.5 KiB"),
])
def test_size(n, text):
    assert units.size(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0m"), (59, "0m"), (45 * 60, "45m"), (2 * 3600 + 5 * 60, "2h05m"),
    (9 * 3600 + 59 * 60, "9h59m"), (10 * 3600, "10h"), (30 * 3600 + 10, "30h"),
    (50 * 3600, "50h"), (72 * 3600 - 1, "71h"), (72 * 3600, "3d0h"), (80 * 3600, "3d8h"),
    (-5, "0m"), (None, "?"),
])
def test_age(seconds, text):
    assert units.age(seconds) == text


def test_age_of_a_moment_is_the_same_age():
    """A 50-hour-old backup is "50h" wherever it is shown (list-backups, status)."""
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert units.age_of(now - timedelta(hours=50), now) == "50h"
    assert units.age_of(now + timedelta(minutes=5), now) == "0m"
    assert units.age_of(datetime.now(UTC) - timedelta(minutes=3)) in ("2m", "3m")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0.0 s"), (0.44, "0.4 s"), (12.34, "12.3 s"), (59.94, "59.9 s"), (60, "1m00s"),
    (245.9, "4m05s"), (3599, "59m59s"), (3600, "1h00m"), (3720, "1h02m"), (-1, "0.0 s"),
])
def test_duration(seconds, text):
    assert units.duration(seconds) == text


@pytest.mark.parametrize(("text", "seconds"), [
    ("26h", 26 * 3600), ("90m", 5400), ("2d", 172800), (" 1.5d ", 129600), ("1h", 3600),
    ("0.5h", 1800),
])
def test_parse_duration(text, seconds):
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "26", "h", "5x", "-2h", "0h", "26 hours", "2w", "1e3h"])
def test_parse_duration_refuses(text):
    assert units.parse_duration(text) is None

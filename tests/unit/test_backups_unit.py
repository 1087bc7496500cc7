"""Pure logic of backups: names, labels, listing and script output parsing, cron merge."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from aimms_ops.backup import install, listing, run, settings
from aimms_ops.core import events, names
from aimms_ops.core import settings as core_settings
from aimms_ops.core.errors import OpsError
from aimms_ops.core.retention import Policy
from aimms_ops.host import events as host_events
from aimms_ops.inventory.model import Compose, Host, Postgres, Volumes


def _host(**kw) -> Host:
    base = dict(
        name="aidset", backup_dir="/home/ec2-user/postgres-backups",
        backup_script="/home/ec2-user/backup-postgres.sh",
        log_file="/home/ec2-user/postgres-backup.log", cron_schedule="0 2 * * *",
        policy=Policy(within_days=7),
        compose=Compose("/home/ec2-user/aimms-web", "docker-compose.prod.yml", "aimms-web",
                        "postgres"),
        postgres=Postgres("postgres"),
        volumes=Volumes("aimms_postgres_data_prod", "aimms_redis_data_prod"),
    )
    base.update(kw)
    return Host(**base)


@pytest.mark.parametrize("name", [
    "aimms_postgres_20261125_020000.sql.gz",
    "aimms_postgres_20261125_020000_pre-restore.sql.gz",
    "aimms_postgres_20261125_020000_a_b-C9.sql.gz",
])
def test_valid_names(name):
    assert names.validate_name(name) == name


@pytest.mark.parametrize("name", [
    "", "latest.sql.gz", "../aimms_postgres_20261125_020000.sql.gz",
    "/etc/passwd", "aimms_postgres_20261125_020000.sql.gz;reboot",
    "aimms_postgres_20261125_020000.sql.gz\n", "aimms_postgres_20261125_020000_$(id).sql.gz",
    "aimms_postgres_20261125_020000_a b.sql.gz", "sub/aimms_postgres_20261125_020000.sql.gz",
    "aimms_postgres_2026112_020000.sql.gz", "x" * 5000,
])
def test_invalid_names_refused(name):
    with pytest.raises(OpsError, match="not a backup name"):
        names.validate_name(name)


@given(st.text(max_size=80))
def test_label_accepts_only_safe_words(label):
    assume(label not in names.SAFETY_LABELS)  # reserved: refused with their own message
    ok = bool(label) and len(label) <= 64 and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in label)
    if ok:
        assert names.validate_label(label) == label
    else:
        with pytest.raises(OpsError, match="letters, digits, - and _ only"):
            names.validate_label(label)


def test_created_from_name():
    assert names.created_from_name("aimms_postgres_20261125_020304_x.sql.gz") == datetime(
        2026, 11, 25, 2, 3, 4, tzinfo=UTC)


LISTING = {"dir.exists": "1", "backups": [
    {"mtime": 1764036000, "size": 1234, "name": "aimms_postgres_20261125_020000.sql.gz",
     "sha256": "a" * 64, "pin": None},
    {"mtime": 1763949600, "size": 99, "name": "aimms_postgres_20261124_020000_pre-restore.sql.gz",
     "sha256": None, "pin": None, "newer_field": [1]},
    {"mtime": 1763949500, "size": 5, "name": "not_a_backup.sql.gz", "sha256": None},
    {"mtime": "x", "size": 5, "name": "aimms_postgres_20261123_020000.sql.gz"},
    "not a backup",
]}


def test_parse_listing():
    items = listing.parse_listing(LISTING, "/b/")
    assert [b.name for b in items] == ["aimms_postgres_20261125_020000.sql.gz",
                                      "aimms_postgres_20261124_020000_pre-restore.sql.gz"]
    first, second = items
    assert first.path == "/b/aimms_postgres_20261125_020000.sql.gz"
    assert first.size == 1234 and first.sha256 == "a" * 64 and first.checksum_state == "recorded"
    assert second.sha256 is None and second.checksum_state == "missing"
    assert second.label == "pre-restore"
    d = first.as_dict()
    assert d["created"].endswith("Z") and d["location"] == "remote"
    assert listing.parse_listing({"dir.exists": "0"}, "/b") is None


def test_pick_latest_and_by_name():
    items = listing.parse_listing(LISTING, "/b")
    assert listing.pick(items, "latest").name == items[0].name
    assert listing.pick(items, items[1].name) == items[1]
    with pytest.raises(OpsError, match="no backup named"):
        listing.pick(items, "aimms_postgres_20200101_000000.sql.gz")
    with pytest.raises(OpsError, match="no backups on the host"):
        listing.pick([], "latest")


def test_prune_events_are_read_in_order_and_other_lines_ignored():
    out = "\n".join([
        events.line("result", name="n.sql.gz", size=10),
        "prune.keep=x.sql.gz older a line of the old format: not an event",
        events.line("prune", action="keep", name="a.sql.gz", rule="min_keep",
                    reason="newest 1 of 3 kept"),
        events.line("prune", action="keep", name="c.sql.gz", rule="monthly[oldest]",
                    reason="the oldest backup"),
        events.line("prune", action="remove", name="b.sql.gz", rule="older",
                    reason="older than 7 days (9d old)"), ""])
    found = host_events.parse(out)
    assert found.last("result") == {"event": "result", "name": "n.sql.gz", "size": 10}
    assert run.parse_prune(found) == [
        run.PruneDecision("a.sql.gz", "keep", "newest 1 of 3 kept", "min_keep"),
        run.PruneDecision("c.sql.gz", "keep", "the oldest backup", "monthly[oldest]"),
        run.PruneDecision("b.sql.gz", "remove", "older than 7 days (9d old)", "older"),
    ]


def test_script_args_carry_every_setting():
    args = settings.script_args(_host(), "--echo")
    assert args[-2:] == [core_settings.SECRETS_FLAG, "--echo"]  # the ping URL (none) on stdin
    pairs = dict(zip(args[:-2:2], args[1:-2:2], strict=True))
    assert pairs["--backup-dir"] == "/home/ec2-user/postgres-backups"
    assert pairs["--project"] == "aimms-web" and pairs["--min-keep"] == "3"


def test_every_setting_of_the_table_has_its_value_for_a_host():
    """The table of settings (core) and their values for a host (backup) name the same keys."""
    assert list(settings.VALUES) == [s.key for s in core_settings.SETTINGS]


SEED_CRON = ("MAILTO=ops@example.com\n"
             "0 2 * * * /home/ec2-user/backup-postgres.sh >> "
             "/home/ec2-user/postgres-backup.log 2>&1\n"
             "*/5 * * * * /usr/local/bin/other-job\n")


def test_merge_crontab_replaces_the_seed_line_and_keeps_others():
    h = _host()
    new = install.merge_crontab(SEED_CRON, install.cron_entries(h), h.backup_script)
    lines = new.splitlines()
    assert "MAILTO=ops@example.com" in lines
    assert "*/5 * * * * /usr/local/bin/other-job" in lines
    ours = [ln for ln in lines if "backup-postgres.sh" in ln]
    assert len(ours) == 1 and ours[0].endswith("# aimms-ops:backup")
    assert "--config /home/ec2-user/backup-postgres.sh.conf" in ours[0]
    # Idempotent: merging again changes nothing.
    assert install.merge_crontab(new, install.cron_entries(h), h.backup_script) == new


def test_merge_crontab_on_empty():
    h = _host(cron_schedule="30 3 * * *")
    new = install.merge_crontab("", install.cron_entries(h), h.backup_script)
    assert new.startswith("30 3 * * * /home/ec2-user/backup-postgres.sh") and new.count("\n") == 1


def test_conf_text_quotes_values():
    h = _host(backup_dir="/srv/it's here")
    text = install.conf_text(h, {"PATH": "/usr/bin:/bin", "DOCKER_HOST": ""})
    assert "BACKUP_DIR='/srv/it'\"'\"'s here'" in text
    assert "export PATH=/usr/bin:/bin" in text
    assert "DOCKER_HOST" not in text


def test_latest_is_the_newest_regular_backup_never_a_safety_copy():
    def b(name: str) -> names.BackupFile:
        return names.BackupFile(name, "/x/" + name, 1, None, datetime(2026, 1, 1, tzinfo=UTC),
                                  "remote")

    found = [b("aimms_postgres_20260102_000000_pre-restore.sql.gz"),
             b("aimms_postgres_20260101_000000.sql.gz")]
    assert listing.pick(found, "latest").name == "aimms_postgres_20260101_000000.sql.gz"
    with pytest.raises(OpsError, match="only safety copies"):
        listing.pick(found[:1], "latest")
    with pytest.raises(OpsError, match="reserved"):
        names.validate_label("pre-restore")
    assert names.validate_label("pre-restore", safety=True) == "pre-restore"


def test_the_ping_url_goes_on_stdin_never_among_the_flags():
    from dataclasses import replace

    from aimms_ops.inventory.model import Ping

    host = replace(_host(), ping=Ping(url="https://hc-ping.com/secret-uuid"))
    args = settings.script_args(host, "--echo")
    assert "https://hc-ping.com/secret-uuid" not in args and "--ping-url" not in args
    assert core_settings.SECRETS_FLAG in args
    assert settings.secret_input(host) == b"PING_URL=https://hc-ping.com/secret-uuid\n"
    # The host program reads it there (and only a secret setting).
    import io
    import sys

    from aimms_ops.agent import backup, jobsettings

    stdin = sys.stdin
    sys.stdin = io.StringIO("PING_URL=https://x/y\nBACKUP_DIR=/not-from-stdin\n")
    try:
        values, _ = jobsettings.read_settings([core_settings.SECRETS_FLAG], "", backup.FLAGS)
    finally:
        sys.stdin = stdin
    assert values["PING_URL"] == "https://x/y" and values.get("BACKUP_DIR") != "/not-from-stdin"

"""PITR's pure logic: the inventory's pitr:, the override, the window, the judgement of
archiving, the moment of restore --to and its plan, the cron lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from aimms_ops.backup import install
from aimms_ops.core import pitr
from aimms_ops.core.errors import OpsError
from aimms_ops.inventory import loader
from aimms_ops.pitr import restore as pitr_restore
from aimms_ops.pitr import setup
from aimms_ops.pitr.state import PitrState, check, start_hint

REPO = Path(__file__).resolve().parents[2]


def _host(tmp_path: Path, pitr_value=None):
    data = yaml.safe_load((REPO / "inventory.yml").read_text())
    if pitr_value is not None:
        data["hosts"]["aidset"]["pitr"] = pitr_value
    p = tmp_path / "inv.yml"
    p.write_text(yaml.safe_dump(data))
    return loader.load(p).host(None)


def test_pitr_is_off_unless_the_inventory_says_so(tmp_path):
    assert _host(tmp_path).pitr is None
    h = _host(tmp_path, {})
    assert h.pitr is not None
    assert h.pitr.repo == "/home/ec2-user/pgbackrest-repo"  # beside the backup dir
    assert (h.pitr.retention_full, h.pitr.image) == (2, None)
    assert _host(tmp_path, True).pitr == h.pitr


def test_cron_runs_full_and_differential_backups_only_with_pitr(tmp_path):
    assert not [k for k in install.cron_entries(_host(tmp_path)) if k.startswith("pitr")]
    entries = install.cron_entries(_host(tmp_path, {"full_schedule": "0 1 * * 6"}))
    assert entries["pitr-full"].startswith("0 1 * * 6 python3 /home/ec2-user/aimms-ops.pyz "
                                           "pitr-backup --type full --config ")
    assert entries["pitr-diff"].startswith("0 3 * * 1-6 ")
    assert entries["pitr-diff"].endswith("# aimms-ops:pitr-diff")


def test_the_override_is_yaml_compose_reads():
    text = pitr.override_text("3.8", "postgres", "aimms-ops/postgres-pitr:abc", "/srv/repo x",
                              "/srv/.pitr.env", "/var/lib/postgresql/data", 3)
    doc = yaml.safe_load(text)
    svc = doc["services"]["postgres"]
    assert doc["version"] == "3.8"
    assert svc["image"] == "aimms-ops/postgres-pitr:abc"
    assert svc["volumes"] == ["/srv/repo x:/var/lib/pgbackrest"]
    assert svc["env_file"] == ["/srv/.pitr.env"]
    assert svc["environment"]["PGBACKREST_STANZA"] == pitr.STANZA
    assert svc["environment"]["PGBACKREST_REPO1_RETENTION_FULL"] == "3"
    assert "CIPHER_PASS" not in text  # the passphrase stays in the env file on the host
    assert "version" not in yaml.safe_load(pitr.override_text("", "pg", "i", "/r", "/s",
                                                              "/d", 1))


def test_the_image_is_the_live_one_plus_pgbackrest():
    assert pitr.image_tag("sha256:0123456789abcdef99") == "aimms-ops/postgres-pitr:0123456789ab"
    text = pitr.dockerfile("postgres:15")
    assert text.splitlines()[1] == "FROM postgres:15"
    assert "apt-get install -y --no-install-recommends pgbackrest" in text


INFO = [{"name": "aimms", "status": {"message": "ok"}, "backup": [
    {"label": "F1", "type": "full", "error": False, "timestamp": {"start": 100, "stop": 110},
     "info": {"size": 5, "repository": {"delta": 2}}},
    {"label": "D1", "type": "diff", "error": False, "timestamp": {"start": 200, "stop": 230},
     "info": {"size": 5, "repository": {"delta": 1}}},
    {"label": "X", "type": "diff", "error": True, "timestamp": {"start": 50, "stop": 60}}]},
        {"name": "other", "backup": [{"timestamp": {"stop": 1}}]}]


def test_the_window_starts_at_the_oldest_good_backup():
    win = pitr.window(INFO)
    assert (win["oldest"], win["newest_backup"], win["status"]) == (110, 230, "ok")
    assert [b["label"] for b in win["backups"]] == ["F1", "D1", "X"]
    assert pitr.window([])["oldest"] is None


def _facts(**over):
    base = {"container": "c1", "image": "img", "pgbackrest": True, "archive_mode": "on",
            "archive_command": "pgbackrest archive-push %p", "last_archived_time": 1000.0,
            "last_failed_time": None, "failed_count": 0, "oldest_ready_age": None,
            "now": 1010.0, "window": pitr.window(INFO), "compose": "docker compose"}
    base.update(over)
    return base


@pytest.mark.parametrize("over, state, words", [
    ({}, "OK", "restorable from"),
    ({"window": {}}, "WARNING", "no PITR backup"),
    ({"container": ""}, "CRITICAL", "not running"),
    ({"pgbackrest": False, "image": "postgres:15"}, "CRITICAL", "archiving stopped"),
    ({"archive_mode": "off"}, "CRITICAL", "archiving is off"),
    ({"archive_command": "cp %p /x"}, "CRITICAL", "not aimms-ops' one"),
    ({"oldest_ready_age": 5, "last_failed_time": 1005.0, "failed_count": 3,
      "last_failed_wal": "0001"}, "CRITICAL", "archiving fails: 0001"),
    # A failure that was followed by a success is over.
    ({"oldest_ready_age": 5, "last_failed_time": 900.0}, "OK", "restorable"),
    ({"oldest_ready_age": pitr.MAX_WAL_LAG + 1}, "CRITICAL", "falls behind"),
])
def test_archiving_is_judged(over, state, words):
    level, detail, _fix = pitr.judge(_facts(**over))
    assert level == state and words in detail


def test_a_stack_started_without_the_override_gets_the_command_that_fixes_it(tmp_path):
    host = _host(tmp_path, {})
    got = check(PitrState(_facts(pgbackrest=False)), host)
    assert got.fix == start_hint(host, "docker compose")
    assert got.fix == ("cd /home/ec2-user/aimms-web && docker compose -f "
                       "docker-compose.prod.yml -f docker-compose.pitr.yml -p aimms-web "
                       "up -d postgres")


@pytest.mark.parametrize("text, want", [
    ("2026-12-06 14:03:00", datetime(2026, 12, 6, 14, 3, tzinfo=UTC)),
    ("2026-12-06T14:03:00Z", datetime(2026, 12, 6, 14, 3, tzinfo=UTC)),
    ("2026-12-06 15:03:00+01:00", datetime(2026, 12, 6, 14, 3, tzinfo=UTC)),
    ("2026-12-06 14:03", datetime(2026, 12, 6, 14, 3, tzinfo=UTC)),
    ("latest", None),
])
def test_the_moment_of_restore_to(text, want):
    assert pitr_restore.parse_moment(text) == want


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01 00:00:00", "14:03", "",
                                  "2026-12-06 14:03:00; reboot"])
def test_a_moment_that_is_not_one_is_refused(text):
    with pytest.raises(OpsError, match="is not a moment"):
        pitr_restore.parse_moment(text)


def test_the_plan_refuses_moments_outside_the_window(tmp_path):
    host = _host(tmp_path, {})
    state = PitrState(_facts())  # window 110 .. last archived 1000
    at = datetime.fromtimestamp
    with pytest.raises(OpsError, match="before the oldest point"):
        pitr_restore.make_plan(host, state, at(100, UTC), "r1")
    with pytest.raises(OpsError, match="after the newest archived WAL"):
        pitr_restore.make_plan(host, state, at(1001, UTC), "r1")
    plan = pitr_restore.make_plan(host, state, at(500, UTC), "r1")
    assert plan.keep == "aimms_postgres_data_prod.before-pitr-r1"
    assert plan.to == "1970-01-01 00:08:20.000000+00"
    assert "pitr-restore --to '1970-01-01 00:08:20.000000+00'" in plan.command.line
    latest = pitr_restore.make_plan(host, state, None, "r1")
    assert latest.to == "latest"
    with pytest.raises(OpsError, match="no pitr"):
        pitr_restore.make_plan(_host(tmp_path), state, None, "r1")
    with pytest.raises(OpsError, match="not running"):
        pitr_restore.make_plan(host, PitrState(_facts(archive_mode="off")), None, "r1")


def test_turning_it_on_is_planned_once_and_off_when_it_is_on(tmp_path):
    host = _host(tmp_path, {})
    off = PitrState(_facts(pgbackrest=False, archive_mode="off", image="postgres:15"))
    plan = setup.enable_plan(host, off)
    assert plan is not None
    assert [s for s, _ in plan.steps].count("restart") == 1
    assert "--base-image postgres:15" in plan.commands[0].line
    assert "pitr-backup --type full" in plan.commands[1].line
    assert setup.enable_plan(host, PitrState(_facts())) is None
    given = replace(host, pitr=replace(host.pitr, image="my/pg-pitr:1"))
    assert "--image my/pg-pitr:1" in setup.enable_plan(given, off).commands[0].line
    assert setup.disable_plan(host, off).commands == []
    assert "--disable" in setup.disable_plan(host, PitrState(_facts())).commands[0].line


def test_pgbackrests_error_is_one_line_without_its_hints():
    import subprocess

    from aimms_ops.agent.pitr import pgbackrest_error

    err = ("WARN: something first\n"
           "ERROR: [029]: unable to load info file '/r/archive.info':\n"
           "       FormatError: key/value found outside of section at line 1\n"
           "       HINT: archive.info cannot be opened\n"
           "       HINT: has a stanza-create been performed?\n")
    run = subprocess.CompletedProcess([], 29, "", err)
    assert pgbackrest_error(run) == ("ERROR: [029]: unable to load info file '/r/archive.info':"
                                     " FormatError: key/value found outside of section at "
                                     "line 1")
    assert pgbackrest_error(subprocess.CompletedProcess([], 3, "", "")) == "exit 3"


def _offsite_host(tmp_path: Path, pitr_value):
    data = yaml.safe_load((REPO / "inventory.yml").read_text())
    h = data["hosts"]["aidset"]
    h["offsite"] = [{"name": "s3", "type": "s3", "endpoint": "https://s3.example.com",
                     "bucket": "aimms-backups", "credentials": "/home/ec2-user/.s3"}]
    h["offsite_recipients"] = ["age1" + "q" * 58]
    h["pitr"] = pitr_value
    p = tmp_path / "inv.yml"
    p.write_text(yaml.safe_dump(data))
    return loader.load(p).host(None)


def test_the_repository_goes_offsite_every_minute_and_is_synced_after_a_backup(tmp_path):
    host = _offsite_host(tmp_path, {"offsite": "s3"})
    entries = install.cron_entries(host)
    assert entries["pitr-push"].startswith("* * * * * python3 /home/ec2-user/aimms-ops.pyz "
                                           "pitr-push --config ")
    assert "--target s3 --repo /home/ec2-user/pgbackrest-repo" in entries["pitr-push"]
    assert " && python3 " in entries["pitr-full"] and "--sync" in entries["pitr-full"]
    off = PitrState(_facts(pgbackrest=False, archive_mode="off", image="postgres:15"))
    plan = setup.enable_plan(host, off)
    assert "pitr-push" in plan.commands[-1].line and "--sync" in plan.commands[-1].line
    with pytest.raises(OpsError, match=r"pitr\.offsite"):
        _offsite_host(tmp_path, {"offsite": "vault"})


@pytest.mark.parametrize("push, state, words", [
    ({"last_ok_at": 1005.0}, "OK", "restorable"),
    ({}, "WARNING", "not copied to s3 yet"),
    ({"last_ok_at": 1010.0 - pitr.MAX_PUSH_AGE - 1}, "CRITICAL", "not copied to s3 for"),
    ({"last_ok_at": 900.0, "last_error": "rclone: denied", "last_error_at": 1000.0},
     "CRITICAL", "fails: rclone: denied"),
    ({"last_ok_at": 1005.0, "last_error": "old", "last_error_at": 1000.0}, "OK", "restorable"),
])
def test_the_offsite_copy_of_the_repository_is_judged(push, state, words):
    level, detail, _fix = pitr.judge(_facts(push=push), offsite="s3")
    assert level == state and words in detail, detail
    assert pitr.judge(_facts(push=push))[0] == "OK"  # no offsite copy asked for

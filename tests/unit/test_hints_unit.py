"""Hints that work when pasted: each fix names this host's compose command (v1's
``docker-compose`` or v2's ``docker compose``, with its file and project) and the real
container name, never a placeholder; a fix already made is not repeated (issue 24,
item 3)."""

from __future__ import annotations

import pytest

from aimms_ops.core.checks import State
from aimms_ops.monitor import health, runlog, status

from .test_backups_unit import _host

FILE = "/home/ec2-user/aimms-web/docker-compose.prod.yml"
V1 = f"docker-compose -f {FILE} -p aimms-web up -d postgres"
V2 = f"docker compose -f {FILE} -p aimms-web up -d postgres"


def _facts(compose: str = "docker-compose", **kw: str) -> dict[str, str]:
    facts = {"docker.ok": "1", "compose.file_exists": "1", "compose.cmd": compose,
             "compose.config_ok": "1", "container.id": "0123456789abcdef",
             "container.name": "aimms-web-postgres-1", "container.state": "exited",
             "postgres.ready": "0", "postgres.ready_detail": "container not running",
             "backup_dir.exists": "1", "backup_dir.writable": "1"}
    facts.update(kw)
    return facts


def _rows(facts: dict[str, str]) -> dict[str, str]:
    rows = health.connection_checks(facts, _host(), fingerprint="SHA256:x")
    return {r.name: r.fix for r in rows}


@pytest.mark.parametrize(("compose", "start"), [("docker-compose", V1), ("docker compose", V2)])
def test_check_names_the_hosts_own_compose_command(compose, start):
    fixes = _rows(_facts(compose))
    assert fixes["postgres container"] == f"start it: {start}"
    fixes = _rows(_facts(compose, **{"container.id": "", "container.name": ""}))
    assert fixes["postgres container"] == f"start it: {start}"


def test_check_names_the_real_container_in_the_log_hint():
    fixes = _rows(_facts())
    log = fixes["postgres accepting connections"]
    assert "CONTAINER" not in log
    assert log.endswith("docker logs --tail 50 aimms-web-postgres-1")
    no_container = _rows(_facts(**{"container.id": "", "container.name": ""}))
    assert no_container["postgres accepting connections"].endswith(
        f"docker-compose -f {FILE} -p aimms-web logs --tail 50 postgres")


FAILED = ("2026-11-25T02:00:01Z backup[200] RESULT failed: the postgres container of compose "
          "project aimms-web is not running (start it: docker compose up -d postgres)")


def test_status_names_the_hosts_start_command_while_postgres_is_down():
    fix = status.check_last_run(runlog.parse_results(FAILED), stack=(_facts(), _host())).fix
    assert fix == f"start postgres: {V1} (see fab doctor)"


def test_status_does_not_repeat_the_start_hint_once_postgres_is_back():
    up = _facts(**{"container.state": "running", "postgres.ready": "1"})
    check = status.check_last_run(runlog.parse_results(FAILED), stack=(up, _host()))
    assert check.state is State.CRITICAL  # the last run did fail: no backup was made
    assert "up -d" not in check.fix
    assert check.fix == "postgres is running again: make a backup now: fab backup"


# --- a verify of an old file does not decide status (issue 24, item 6) -------------------

VERIFIES = "\n".join([
    "2026-11-23T02:00:09Z backup[10] RESULT ok aimms_postgres_20261123_020001.sql.gz size=10 "
    "sha256=ab seconds=8",
    "2026-11-23T04:00:30Z verify[11] RESULT ok aimms_postgres_20261123_020001.sql.gz "
    "databases=2 tables=3 rows=22500 seconds=9",
    "2026-11-24T02:00:09Z backup[12] RESULT ok aimms_postgres_20261124_020001.sql.gz size=10 "
    "sha256=ab seconds=8",
    # By hand, of an old file (since removed): it failed.
    "2026-11-24T10:00:03Z verify[13] RESULT failed: gzip stream: the file does not decompress "
    "(aimms_postgres_20261101_020001.sql.gz)",
])


def test_a_manual_verify_of_an_old_file_does_not_decide_status():
    from datetime import UTC, datetime

    from aimms_ops.monitor import lastverify

    h = _host(verify_schedule="0 4 * * *")
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    runs = runlog.parse_results(VERIFIES)
    check = lastverify.check_verify(runs, h, now, {})
    assert check.state is State.OK, check
    assert lastverify.deciding_verify(runs).pid == 11
    # A verify of the newest backup of its time decides, failed or not.
    newest = VERIFIES + ("\n2026-11-24T10:30:00Z verify[14] RESULT failed: boom "
                         "(aimms_postgres_20261124_020001.sql.gz)")
    assert lastverify.check_verify(runlog.parse_results(newest), h, now, {}).state \
        is State.CRITICAL


# --- an unfinished rebuild is CRITICAL in status, with the command that finishes it ------

STATE = """\
2026-11-25T10:00:00Z run=20261125T100000Z-abc123
2026-11-25T10:00:00Z by=ops@laptop
2026-11-25T10:00:00Z host=aidset
2026-11-25T10:00:00Z volume=aimms_postgres_data_prod
2026-11-25T10:00:00Z backup=/home/ec2-user/postgres-backups/aimms_postgres_20261124_020001.sql.gz
2026-11-25T10:00:00Z backup_sha256=ab
2026-11-25T10:00:00Z keep=aimms_postgres_data_prod_before_rebuild_20261125_100000
2026-11-25T10:00:01Z begin=stop
2026-11-25T10:00:05Z done=stop
2026-11-25T10:00:05Z begin=keep
2026-11-25T10:00:09Z done=keep
2026-11-25T10:00:09Z begin=rm
2026-11-25T10:00:10Z done=rm
2026-11-25T10:00:10Z begin=create
"""


def test_an_unfinished_rebuild_is_critical_with_the_command_that_finishes_it():
    from aimms_ops.backup import install

    from .test_health_unit import _b, _gathered, _report

    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    text = _gathered([_b(10)], crontab=cron, running=False)
    plain = _report(text, h)
    assert all(c.name != "rebuild" for c in plain.checks)
    rep = _report(_gathered([_b(10)], crontab=cron, running=False, rebuild=STATE), h)
    assert rep.state is State.CRITICAL
    first = rep.checks[0]
    assert first.name == "rebuild" and first.state is State.CRITICAL
    assert "rebuild of aimms_postgres_data_prod unfinished" in first.detail
    assert "stopped after step rm" in first.detail
    assert "aimms_postgres_data_prod_before_rebuild_20261125_100000" in first.detail
    finish = "fab rebuild-volume --file=aimms_postgres_20261124_020001.sql.gz"
    assert first.fix.endswith(f"finish it: {finish} (it continues where it stopped)")
    assert rep.summary.startswith("AIMMS-OPS CRITICAL - rebuild of aimms_postgres_data_prod "
                                  "unfinished: ")
    # The stopped container's fix is to finish the rebuild, not to start it by hand.
    container = next(c for c in rep.checks if c.name == "postgres container")
    assert container.fix == f"finish the rebuild: {finish} (it continues where it stopped)"


def test_status_reads_the_rebuild_state_in_its_one_round_trip():
    from aimms_ops.monitor import hostfacts

    cmd = hostfacts.gather_command(_host())
    assert cmd.endswith(" --rebuild-state /home/ec2-user/postgres-backups/.rebuild-state")

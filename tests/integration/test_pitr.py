"""Integration: point-in-time recovery on pgBackRest, turned on by install-backups.

The sandbox's PITR image is its postgres image plus Debian's pgbackrest (sandbox/up.sh
builds it offline, as production derives its image from the official one). The module
turns PITR on once (the plan, one restart), then: archiving keeps up under pgbench; a
restore to a moment between two commits brings the first back and not the second; an
unreachable repository is CRITICAL at once and loses no WAL once it is back; a stack
started the manual procedure's way (without the override) is CRITICAL at once and the
fix status prints, pasted, ends it; pitr-off puts the stack back as it was. A killed
run's PITR is undone by sandbox/up.sh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, fab_error_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pitr_inventory(sandbox, tmp_path_factory) -> Path:
    """The offsite inventory (the sandbox's S3 server and vault) with pitr:, whose
    repository is copied to the S3 target."""
    data = yaml.safe_load(sandbox.inventory.with_name("inventory-offsite.yml").read_text())
    host = data["hosts"][data["default_host"]]
    host["pitr"] = {"image": sandbox.env["SANDBOX_PITR_IMAGE"], "offsite": "s3",
                    "repo": f"{sandbox.home}/pitr-repo-test", "retention_full": 1}
    path = tmp_path_factory.mktemp("pitr") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pitr_on(sandbox, pitr_inventory):
    """PITR on, from a fresh repository (what an earlier run left goes first)."""
    image = sandbox.env["SANDBOX_PITR_IMAGE"]
    sandbox.ssh(f"docker run --rm --network none --user 0:0 --entrypoint sh -v "
                f"{sandbox.home}:/h {image} -c 'rm -rf /h/pitr-repo-test'")
    run = sandbox.fab("install-backups", "--yes", inventory=pitr_inventory, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "PITR is on" in run.stderr + run.stdout
    yield pitr_inventory
    # Whatever the tests left, the next file gets the stack as a new sandbox has it, and
    # the S3 target without the repository's copy (the next file drops pgbench's tables:
    # tests/integration/conftest.py).
    shutil.rmtree(_s3_folder(sandbox, pitr_inventory), ignore_errors=True)
    subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=600)


def _s3_folder(sandbox, inventory: Path) -> Path:
    """Where the S3 server keeps the repository's copy."""
    data = yaml.safe_load(inventory.read_text())
    s3 = next(t for t in data["hosts"][data["default_host"]]["offsite"] if t["name"] == "s3")
    env = dict(line.split("=", 1) for line in
               (sandbox.inventory.with_name("offsite.env").read_text().split()))
    return Path(env["SANDBOX_S3_DATA"]) / s3["bucket"] / s3["prefix"] / "pitr"


def status_pitr(sandbox, inventory: Path) -> dict:
    run = sandbox.fab("status", "--json", inventory=inventory)
    report = json.loads(run.stdout)
    return next(c for c in report["checks"] if c["name"] == "pitr")


def test_install_shows_the_plan_and_changes_nothing_on_a_dry_run(sandbox, pitr_inventory):
    run = sandbox.fab("install-backups", "--dry-run", "--json", inventory=pitr_inventory)
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)["pitr"]
    if plan["enable"]:  # off now: the plan names the one restart and its commands
        assert [s["step"] for s in plan["steps"]][:2] == ["image", "repository"]
        assert any(s["step"] == "restart" for s in plan["steps"])
        assert "pitr-enable" in plan["commands"][0]["command"]
    refused = sandbox.fab("install-backups", inventory=pitr_inventory)
    if plan["enable"]:  # no terminal, no --yes: refused before any change
        assert refused.returncode == 2
        assert "--yes" in refused.stderr
        assert sandbox.psql("SHOW archive_mode") == "off"


def test_the_repository_is_copied_offsite_encrypted_and_kept_current_by_cron(sandbox,
                                                                              pitr_on):
    folder = _s3_folder(sandbox, pitr_on)
    info = folder / "backup" / "aimms" / "backup.info"
    assert info.is_file(), sorted(p.name for p in folder.rglob("*"))[:20]
    assert info.read_bytes().startswith(b"Salted__")  # pgBackRest's cipher: no plaintext
    assert "pitr-push" in sandbox.sh("crontab -l")
    # A segment archived now reaches the target by the next minute's cron run.
    wal = sandbox.psql("SELECT pg_walfile_name(pg_current_wal_lsn()); SELECT pg_switch_wal();",
                       "postgres").splitlines()[0]
    _wait_archived(sandbox)
    deadline = time.monotonic() + 130
    while not any(folder.joinpath("archive").rglob(f"{wal}-*")):
        assert time.monotonic() < deadline, f"{wal} not copied to the S3 target by cron"
        time.sleep(3)
    assert status_pitr(sandbox, pitr_on)["state"] == "OK"


def test_archiving_keeps_up_under_pgbench(sandbox, pitr_on):
    cid = sandbox.container()
    sandbox.ssh(f"docker exec {cid} pgbench -U postgres -i -s 5 aimms_web", timeout=120)
    bench = sandbox.ssh(f"docker exec -d {cid} pgbench -U postgres -c 2 -T 30 aimms_web")
    assert bench.returncode == 0
    ages = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        check = status_pitr(sandbox, pitr_on)
        assert check["state"] == "OK", check
        row = sandbox.psql("SELECT extract(epoch FROM now() - last_archived_time)::int "
                           "FROM pg_stat_archiver", "postgres")
        ages.append(int(row))
        time.sleep(3)
    assert max(ages) <= 60, f"newest archived WAL ages under pgbench: {ages}"


def test_restore_to_a_moment_between_two_commits(sandbox, pitr_on):
    sandbox.psql("DROP TABLE IF EXISTS pitr_probe; CREATE TABLE pitr_probe (n int); "
                 "INSERT INTO pitr_probe VALUES (1);")
    time.sleep(1.2)
    moment = sandbox.psql("SELECT to_char(now() AT TIME ZONE 'utc', "
                          "'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1.2)
    sandbox.psql("INSERT INTO pitr_probe VALUES (2); SELECT pg_switch_wal();")
    _wait_archived(sandbox)

    dry = sandbox.fab("restore", f"--to={moment}", "--dry-run", "--json", inventory=pitr_on)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and plan["restored"] is None and plan["keep"]
    assert sandbox.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe") == "1,2"

    early = sandbox.fab("restore", "--to=2001-01-01 00:00:00", "--yes", inventory=pitr_on)
    assert early.returncode == 2
    assert "before the oldest point" in fab_error_line(early)

    run = sandbox.fab("restore", f"--to={moment}", "--yes", "--json", inventory=pitr_on,
                      timeout=600)
    assert run.returncode == 0, run.stderr
    done = json.loads(run.stdout)["restored"]
    assert sandbox.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe") == "1"
    kept = done["kept"]
    assert sandbox.sh(f"docker volume ls -q --filter name={kept}").strip() == kept
    # The restored cluster archives again, on its new timeline: a restore to the newest
    # point follows that timeline (3 written after the restore), not the old one (2).
    sandbox.psql("INSERT INTO pitr_probe VALUES (3); SELECT pg_switch_wal();")
    _wait_archived(sandbox)
    assert status_pitr(sandbox, pitr_on)["state"] == "OK"
    assert sandbox.sh("docker ps -aq --filter label=org.aimms-ops.pitr-restore").strip() == ""
    again = sandbox.fab("restore", "--to=latest", "--yes", "--json", inventory=pitr_on,
                        timeout=600)
    assert again.returncode == 0, again.stderr
    assert sandbox.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe") == "1,3"
    # The kept volumes are listed and removed as a rebuild's are.
    listed = json.loads(sandbox.fab("volumes", "--json", inventory=pitr_on).stdout)
    assert kept in json.dumps(listed), listed
    for name in (kept, json.loads(again.stdout)["restored"]["kept"]):
        drop = sandbox.fab("rebuild-volume", f"--drop-kept={name}", "--yes", inventory=pitr_on)
        assert drop.returncode == 0, drop.stderr
        assert sandbox.sh(f"docker volume ls -q --filter name={name}").strip() == ""


def test_an_unreachable_repository_is_critical_at_once_and_loses_no_wal(sandbox, pitr_on):
    cid = sandbox.container()
    dirs = f"docker exec -u 0 {cid} find /var/lib/pgbackrest/archive -type d -exec chmod"
    sandbox.ssh(f"{dirs} u-w {{}} +")
    try:
        sandbox.psql("DROP TABLE IF EXISTS pitr_outage; CREATE TABLE pitr_outage (n int); "
                     "INSERT INTO pitr_outage SELECT generate_series(1, 1000); "
                     "SELECT pg_switch_wal();")
        started = time.monotonic()
        while True:
            check = status_pitr(sandbox, pitr_on)
            if check["state"] == "CRITICAL":
                break
            assert time.monotonic() - started < 60, check
            time.sleep(2)
        assert "archiving fails" in check["detail"], check
    finally:
        sandbox.ssh(f"{dirs} u+w {{}} +")
    # After three failures the archiver sleeps up to 60 s unless a new segment wakes it,
    # and switching a segment with nothing in it makes none: write, then switch.
    sandbox.psql("CREATE TABLE pitr_wake (); DROP TABLE pitr_wake; SELECT pg_switch_wal();")
    _wait_archived(sandbox, timeout=150)
    assert status_pitr(sandbox, pitr_on)["state"] == "OK"
    # No WAL lost: the rows written while the repository was unreachable come back.
    run = sandbox.fab("restore", "--to=latest", "--yes", "--json", inventory=pitr_on,
                      timeout=600)
    assert run.returncode == 0, run.stderr
    assert sandbox.psql("SELECT count(*) FROM pitr_outage") == "1000"
    sandbox.ssh(f"docker volume rm {json.loads(run.stdout)['restored']['kept']}")


def test_the_stack_started_without_the_override_is_critical_and_the_fix_works(sandbox,
                                                                            pitr_on):
    project = f"{sandbox.home}/aimms-web"
    sandbox.ssh(f"cd {project} && docker-compose -f docker-compose.prod.yml up -d postgres")
    sandbox.wait_ready()
    check = status_pitr(sandbox, pitr_on)
    assert check["state"] == "CRITICAL" and "archiving stopped" in check["detail"], check
    assert "docker-compose.pitr.yml" in check["fix"]
    sandbox.ssh(check["fix"])
    sandbox.wait_ready()
    sandbox.psql("SELECT pg_switch_wal();")
    _wait_archived(sandbox)
    assert status_pitr(sandbox, pitr_on)["state"] == "OK"


def test_the_drill_restores_the_repository_and_reports_rto_and_rpo(sandbox, pitr_on):
    sandbox.psql("SELECT pg_switch_wal();")
    _wait_archived(sandbox)
    run = sandbox.fab("drill", "--target=pitr", "--json", inventory=pitr_on, timeout=600)
    assert run.returncode == 0, run.stderr + run.stdout
    report = json.loads(run.stdout)
    assert report["source"] == "pitr" and report["state"] == "OK", report
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] >= 0
    assert sandbox.sh("docker ps -aq --filter label=org.aimms-ops.drill=1").strip() == ""
    assert sandbox.sh("docker volume ls -q --filter label=org.aimms-ops.drill=1").strip() == ""


def test_pitr_off_puts_the_stack_back(sandbox, pitr_on):
    run = sandbox.fab("pitr-off", "--yes", inventory=pitr_on, timeout=300)
    assert run.returncode == 0, run.stderr
    sandbox.wait_ready()
    assert sandbox.psql("SHOW archive_mode") == "off"
    image = sandbox.sh(f"docker inspect -f '{{{{.Config.Image}}}}' {sandbox.container()}")
    assert image.strip() != sandbox.env["SANDBOX_PITR_IMAGE"]
    assert "aimms-ops:pitr-" not in sandbox.sh("crontab -l")
    assert sandbox.sh(f"test -d {sandbox.home}/pitr-repo-test && echo kept").strip() == "kept"


def _wait_archived(sandbox, timeout: float = 90) -> None:
    """Until no WAL segment waits to be archived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sandbox.psql("SELECT count(*) FROM pg_ls_archive_statusdir() "
                        "WHERE name LIKE '%.ready'", "postgres") == "0":
            return
        time.sleep(1)
    logs = sandbox.ssh(f"docker logs --tail 30 {sandbox.container()}", check=False)
    said = (logs.stdout + logs.stderr).decode(errors="replace")
    raise AssertionError("WAL still waits to be archived: "
                         + sandbox.psql("SELECT * FROM pg_stat_archiver", "postgres")
                         + "\n" + "\n".join(ln for ln in said.splitlines()
                                             if "archive" in ln or "ERROR" in ln))

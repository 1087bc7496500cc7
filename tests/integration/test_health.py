"""Integration: fab status, verify, volumes and doctor against the sandbox host.

These tests install the backups under a directory of their own (~/health-test) with
a verify schedule, so what other test modules left in the default backup dir or log
does not change the verdicts; at the end the default install is put back.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import Sandbox, fab_error_line

pytestmark = pytest.mark.integration

MARKER = "-- PostgreSQL database cluster dump complete"
COMPOSE = "cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml"


@dataclass
class Health:
    sandbox: Sandbox
    inventory: Path
    base: str

    @property
    def backups(self) -> str:
        return f"{self.base}/postgres-backups"

    @property
    def log(self) -> str:
        return f"{self.base}/postgres-backup.log"

    def fab(self, *args: str):
        return self.sandbox.fab(*args, inventory=self.inventory)

    def ok(self, *args: str):
        proc = self.fab(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def status(self, *args: str):
        proc = self.fab("status", *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc, proc.stdout.splitlines()[0]

    def engine_state(self) -> tuple[str, str]:
        """Every container and volume of the engine (names), for before/after checks."""
        return (self.sandbox.sh("docker ps -a --format '{{.Names}} {{.ID}} {{.State}}' | sort"),
                self.sandbox.sh("docker volume ls -q | sort"))


@pytest.fixture(scope="module")
def health(sandbox, tmp_path_factory):
    base = f"{sandbox.home}/health-test"
    data = yaml.safe_load(sandbox.inventory.read_text())
    host = data["hosts"][data["default_host"]]
    host.update(backup_dir=f"{base}/postgres-backups", log_file=f"{base}/postgres-backup.log",
                backup_script=f"{base}/backup-postgres.sh", verify_schedule="0 4 * * 0")
    inv = tmp_path_factory.mktemp("health") / "inventory.yml"
    inv.write_text(yaml.safe_dump(data))
    sandbox.ssh(f"rm -rf {base}")
    h = Health(sandbox, inv, base)
    h.ok("install-backups")
    h.ok("backup")
    yield h
    sandbox.fab("install-backups")  # the default install again (its cron lines)
    sandbox.ssh(f"rm -rf {base}", check=False)


def test_status_ok_after_a_fresh_backup(health):
    health.ok("backup")
    proc, first = health.status()
    assert proc.returncode == 0, proc.stdout
    assert first.startswith("AIMMS-OPS OK - newest backup 0m ago ("), first
    assert "| age=" in first
    assert "deep verify" in proc.stdout and "cron verify" in proc.stdout


def test_status_json_has_the_documented_shape(health):
    proc = health.fab("status", "--json")
    assert proc.returncode == 0, proc.stdout
    d = json.loads(proc.stdout)
    assert list(d) == ["host", "state", "exit_code", "summary", "checked_at", "max_age_seconds",
                       "checks", "newest_backup", "last_backup_run", "last_verify", "disk",
                       "last_ping", "replaced"]
    assert (d["host"], d["state"], d["exit_code"]) == ("aidset", "OK", 0)
    assert d["summary"].startswith("AIMMS-OPS OK - ") and d["max_age_seconds"] == 26 * 3600
    names = [c["name"] for c in d["checks"]]
    for name in ("newest backup", "backup size", "last run", "cron backup", "cron verify",
                 "disk", "postgres container", "volume aimms_postgres_data_prod",
                 "volume aimms_redis_data_prod", "deep verify"):
        assert name in names
    assert all(set(c) == {"name", "state", "detail", "fix"} for c in d["checks"])
    newest = d["newest_backup"]
    assert newest["name"].startswith("aimms_postgres_") and newest["size"] > 0
    assert len(newest["sha256"]) == 64 and 0 <= newest["age_seconds"] < 600
    assert d["last_backup_run"]["result"] == "ok"
    assert d["last_backup_run"]["name"] == newest["name"]
    assert d["disk"]["free_bytes"] > 0 and d["disk"]["total_bytes"] >= d["disk"]["free_bytes"]


def test_status_is_critical_when_every_backup_is_30_hours_old(health):
    health.sandbox.ssh(f"touch -d '30 hours ago' {health.backups}/*")
    try:
        proc, first = health.status()
        assert proc.returncode == 2, proc.stdout
        assert first.startswith("AIMMS-OPS CRITICAL - newest good backup is 30h old (max 26h)")
        proc, first = health.status("--max-age=2d")
        assert proc.returncode == 0, first
        proc = health.fab("status", "--json", "--max-age=90m")
        d = json.loads(proc.stdout)
        assert proc.returncode == 2 and d["state"] == "CRITICAL"
        assert d["summary"].startswith("AIMMS-OPS CRITICAL - newest good backup is 30h old "
                                       "(max 90m)")
    finally:
        health.sandbox.ssh(f"touch {health.backups}/*")


def test_status_bad_max_age_is_unknown_in_one_line(health):
    proc, first = health.status("--max-age=26x")
    assert proc.returncode == 3
    assert proc.stdout.strip() == first
    assert first.startswith("AIMMS-OPS UNKNOWN - invalid --max-age '26x'")


def test_status_warns_naming_a_missing_cron_entry(health):
    health.sandbox.ssh("crontab -l | grep -v '# aimms-ops:backup$' | crontab -")
    try:
        proc, first = health.status()
        assert proc.returncode == 1, proc.stdout
        assert first.startswith("AIMMS-OPS WARNING - cron entry 'backup' missing")
    finally:
        health.ok("install-backups")
    assert health.status()[0].returncode == 0


def _production(health) -> str:
    return health.sandbox.sh(f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' "
                             f"{health.sandbox.container()}")


def test_deep_verify_restores_names_tables_and_leaves_nothing_behind(health):
    before, prod = health.engine_state(), _production(health)
    proc = health.ok("verify", "--file=latest", "--deep")
    assert health.engine_state() == before
    assert _production(health) == prod  # production's container untouched
    assert "restored into aimms-ops-verify-" in proc.stdout
    for word in ("aimms_web", "postgres", "public.orders", "public.customers",
                 "public.audit_log"):
        assert word in proc.stdout
    d = json.loads(health.ok("verify", "--deep", "--json").stdout)
    assert health.engine_state() == before
    assert d["state"] == "OK" and d["deep"] is True and d["failed_check"] is None
    assert d["throwaway"]["removed"] is True
    assert d["throwaway"]["container"].startswith("aimms-ops-verify-")
    assert [c["name"] for c in d["checks"]] == [
        "checksum", "disk", "start", "gzip stream", "dump header", "restore",
        "completion marker", "databases", "live restore", "cleanup"]
    dbs = {db["name"]: {t["name"]: t["rows"] for t in db["tables"]} for db in d["databases"]}
    assert set(dbs) >= {"aimms_web", "postgres"}
    counts = {"orders": "select count(*) from orders",
              "customers": "select count(*) from customers",
              "audit_log": "select count(*) from audit_log"}
    for table, sql in counts.items():
        assert dbs["aimms_web"][f"public.{table}"] == int(health.sandbox.psql(sql)), table
    # fab status reports the last deep verify.
    st = json.loads(health.fab("status", "--json").stdout)
    assert st["last_verify"]["result"] == "ok"
    assert st["last_verify"]["name"] == d["file"]


def _copy_as(health, name: str, damage: str) -> None:
    """A copy of the newest backup under ``name``, three days old, damaged by ``damage``."""
    b = health.backups
    latest = f"$(ls -t {b}/aimms_postgres_*.sql.gz | head -n 1)"
    health.sandbox.ssh(
        f"set -e; src={latest}; cp \"$src\" {b}/{name}; "
        f"sed 's/ .*/  {name}/' \"$src.sha256\" > {b}/{name}.sha256; cd {b}; {damage}; "
        f"touch -d '3 days ago' {name} {name}.sha256")


def test_verify_of_a_corrupted_backup_names_the_check_and_cleans_up(health):
    flipped = "aimms_postgres_20200101_000000.sql.gz"
    cut = "aimms_postgres_20200101_000001.sql.gz"
    _copy_as(health, flipped, f"printf '\\377\\377\\377' | dd of={flipped} bs=1 seek=4000 "
                              "conv=notrunc 2>/dev/null")
    # Cut short, with a checksum made to match: the gzip stream is what fails, mid-restore.
    _copy_as(health, cut, f"truncate -s $(( $(stat -c %s {cut}) / 2 )) {cut}; "
                          f"sha256sum {cut} > {cut}.sha256")
    # Whole, but without its completion marker: the restore runs, the marker check fails.
    unfinished = "aimms_postgres_20200101_000002.sql.gz"
    _copy_as(health, unfinished, f"gzip -dc \"$src\" | grep -vxF -- '{MARKER}' | gzip -1 "
                                 f"> {unfinished}; sha256sum {unfinished} > {unfinished}.sha256")
    before = health.engine_state()
    try:
        proc = health.fab("verify", f"--file={unfinished}", "--deep")
        assert proc.returncode == 2
        assert fab_error_line(proc).startswith("verify failed: completion marker: ")
        assert health.engine_state() == before
        proc = health.fab("verify", f"--file={flipped}")
        assert proc.returncode == 2
        assert fab_error_line(proc).startswith("verify failed: checksum: sha256 mismatch")
        proc = health.fab("verify", f"--file={flipped}", "--deep")
        assert proc.returncode == 2
        assert fab_error_line(proc).startswith("verify failed: checksum: the file does not "
                                               "match its .sha256")
        assert health.engine_state() == before

        proc = health.fab("verify", f"--file={cut}", "--deep", "--json")
        assert proc.returncode == 2
        assert fab_error_line(proc).startswith("verify failed: gzip stream: the file does not "
                                               "decompress to its end")
        assert health.engine_state() == before
        d = json.loads(proc.stdout)
        assert d["failed_check"] == "gzip stream" and d["throwaway"]["removed"] is True
        log = health.sandbox.sh(f"tail -n 8 {health.log}")
        assert "started throwaway container aimms-ops-verify-" in log
        assert "removed container aimms-ops-verify-" in log
        assert "removed volume aimms-ops-verify-" in log
        assert "RESULT failed: gzip stream: " in log and f"({cut})" in log
        # A verify of an old file, by hand, does not decide the state: the newest backup's
        # last verify does (it once kept status CRITICAL after the file was gone).
        st = json.loads(health.fab("status", "--json").stdout)
        assert "last deep verify failed" not in st["summary"]
        verify = next(c for c in st["checks"] if c["name"] == "deep verify")
        assert cut not in verify["detail"]
    finally:
        health.sandbox.ssh(f"rm -f {health.backups}/aimms_postgres_20200101_*")


def test_installed_verify_runs_like_cron_does(health):
    """The cron line of the deep verify, run in cron's bare environment, without Python."""
    line = next(ln for ln in health.sandbox.sh("crontab -l").splitlines()
                if ln.endswith("# aimms-ops:verify"))
    command = line.split(None, 5)[5].rsplit(" # aimms-ops:", 1)[0]
    before = health.engine_state()
    health.sandbox.ssh(f"env -i HOME=$HOME /bin/sh -c {shlex.quote(command)}")
    assert health.engine_state() == before
    assert " RESULT ok aimms_postgres_" in health.sandbox.sh(f"tail -n 1 {health.log}")
    st = json.loads(health.fab("status", "--json").stdout)
    verify = next(c for c in st["checks"] if c["name"] == "deep verify")
    assert verify["state"] == "OK" and verify["detail"].startswith("ok 0m ago")


def test_doctor_flags_a_stopped_postgres_and_a_modified_script(health):
    sandbox = health.sandbox
    sandbox.ssh(f"echo '# a local edit' >> {health.base}/backup-postgres.sh")
    sandbox.ssh(f"{COMPOSE} stop postgres")
    try:
        failed = health.fab("backup")
        assert failed.returncode != 0
        proc = health.fab("doctor", "--json")
        assert proc.returncode == 2
        err = fab_error_line(proc)
        assert err.startswith("doctor: CRITICAL: ")
        for name in ("postgres container", "backup script", "last run"):
            assert name in err
        d = json.loads(proc.stdout)
        rows = {c["name"]: c for c in d["checks"]}
        pg = rows["postgres container"]
        assert pg["state"] == "CRITICAL" and " is exited" in pg["detail"]
        assert "up -d postgres" in pg["fix"]
        assert d["container_log"], "the last lines of the container's log"
        assert rows["backup script"]["state"] == "WARNING"
        assert "differs from this version of aimms-ops" in rows["backup script"]["detail"]
        assert rows["last run"]["state"] == "CRITICAL"
        assert "is not running" in rows["last run"]["detail"]
        assert any("RESULT failed:" in ln for ln in d["last_run_log"])
        proc, first = health.status()
        assert proc.returncode == 2 and first.startswith("AIMMS-OPS CRITICAL - ")
    finally:
        sandbox.ssh(f"{COMPOSE} up -d postgres")
        sandbox.wait_ready()
        health.ok("install-backups")
    health.ok("backup")
    d = json.loads(health.fab("doctor", "--json").stdout)
    rows = {c["name"]: c for c in d["checks"]}
    for name in ("postgres container", "backup script", "last run", "container since install"):
        assert rows[name]["state"] == "OK", rows[name]


def test_doctor_notices_a_new_container_behind_the_service(health):
    sandbox = health.sandbox
    sandbox.ssh(f"{COMPOSE} up -d --force-recreate postgres")
    sandbox.wait_ready()
    proc = health.fab("doctor")
    assert proc.returncode >= 1 and "container since install" in fab_error_line(proc)
    row = next(ln for ln in proc.stdout.splitlines() if "container since install" in ln)
    assert "WARNING" in row and "the container changed" in row
    assert "last lines of the postgres container's log" in proc.stdout
    plan = health.ok("install-backups", "--dry-run")
    assert "install record" in plan.stdout
    health.ok("install-backups")
    d = json.loads(health.fab("doctor", "--json").stdout)
    row = next(c for c in d["checks"] if c["name"] == "container since install")
    assert row["state"] == "OK"


def test_volumes_are_external_and_named_with_what_destroys_them(health):
    proc = health.ok("volumes", "--json")
    found = {v["name"]: v for v in json.loads(proc.stdout)}
    for name in ("aimms_postgres_data_prod", "aimms_redis_data_prod"):
        v = found[name]
        assert v["external"] is True and v["exists"] is True and v["in_inventory"] is True
        assert any(d.startswith(f"docker volume rm {name}") for d in v["destroyed_by"])
        assert not any("down -v (the compose file owns" in d for d in v["destroyed_by"])
        assert v["mounted_by"] and v["size_bytes"] is not None
    assert found["aimms_postgres_data_prod"]["services"] == ["postgres"]
    text = health.ok("volumes").stdout
    assert "docker volume rm aimms_postgres_data_prod" in text
    assert "what preserves the data" in text

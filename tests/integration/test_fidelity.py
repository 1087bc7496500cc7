"""Integration: a managed host as the seed's page uses it, and a cron daemon that fires.

The seed's own commands (its manual backup, `ls -lh`, `tail -50`, `gunzip -t`,
`crontab -l`, its full restore onto an empty cluster) keep working on a host that
`fab install-backups` manages; the daily job fires under the real cron daemon of the
sandbox; the postgres container carries no compressor, as the official image.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from aimms_ops.host import shell

from .conftest import STABLE_TEXT, md5_sql

pytestmark = pytest.mark.integration

BACKUPS = "postgres-backups"
NAME = r"aimms_postgres_\d{8}_\d{6}(?:_[A-Za-z0-9_-]+)?\.sql\.gz"


@pytest.fixture(scope="module")
def managed(sandbox):
    proc = sandbox.fab("install-backups")
    assert proc.returncode == 0, proc.stderr
    return sandbox


def _names(sb) -> set[str]:
    out = sb.sh(f"cd ~/{BACKUPS} && ls -1 aimms_postgres_*.sql.gz 2>/dev/null || true")
    return set(out.split())


def _remove(sb, names: set[str]) -> None:
    if names:
        files = " ".join(shlex.quote(n) + " " + shlex.quote(n + ".sha256") for n in names)
        sb.ssh(f"cd ~/{BACKUPS} && rm -f -- {files}")


def test_the_container_carries_no_compressor_like_the_official_image(managed):
    cid = managed.container()
    proc = managed.ssh(f"docker exec {cid} sh -c 'command -v pigz; command -v zstd; "
                       "command -v igzip; command -v gzip'", check=False)
    assert proc.stdout.decode().split() == ["/usr/bin/gzip"] or proc.stdout.decode().split() == [
        "/bin/gzip"], proc.stdout


def test_the_seeds_manual_backup_command_makes_a_good_backup(managed):
    """`ssh aidset "/home/ec2-user/backup-postgres.sh"`: no arguments at all."""
    sb = managed
    before = _names(sb)
    proc = sb.ssh(f"{sb.home}/backup-postgres.sh", check=False)
    assert proc.returncode == 0, proc.stderr
    new = _names(sb) - before
    assert len(new) == 1, new
    name = new.pop()
    # The seed's other commands, as its page types them.
    listing = sb.sh(f"ls -lh {sb.home}/{BACKUPS}/")
    assert name in listing and f"{name}.sha256" in listing
    log = sb.sh(f"tail -50 {sb.home}/postgres-backup.log")
    assert re.search(rf"RESULT ok {re.escape(name)} size=\d+ sha256=[0-9a-f]{{64}}", log), log
    assert "compressed by igzip -1 on the host" in log
    assert sb.ssh(f"gunzip -t {sb.home}/{BACKUPS}/{name}", check=False).returncode == 0
    assert sb.ssh(f"cd {sb.home}/{BACKUPS} && sha256sum -c {name}.sha256",
                  check=False).returncode == 0
    assert "# aimms-ops:backup" in sb.sh("crontab -l")
    # The seed's "test backup integrity": the head of the dump, which starts with the
    # preface of database properties (comment lines), then pg_dumpall's own header.
    head = sb.sh(f"gunzip -c {sb.home}/{BACKUPS}/{name} | head -100")
    assert head.startswith("-- aimms-ops: properties of database template1")
    first = sb.sh(f"gunzip -c {sb.home}/{BACKUPS}/{name} | grep -m 1 -n -x -e "
                  "'-- PostgreSQL database cluster dump'")
    assert first.strip(), "no cluster dump header"


def test_the_seeds_bare_script_without_settings_says_what_is_missing(managed):
    """Elsewhere than beside its settings file, the script names what it lacks."""
    sb = managed
    # The script and the host program beside it, as installed, in another folder.
    proc = sb.ssh(f"d=$(mktemp -d) && cp {sb.home}/backup-postgres.sh "
                  f"{sb.home}/aimms-ops.pyz \"$d\" && \"$d\"/backup-postgres.sh; rc=$?; "
                  "rm -rf \"$d\"; exit $rc", check=False)
    assert proc.returncode == 64
    err = proc.stderr.decode()
    assert "BACKUP_DIR is not set" in err and "install-backups" in err


@pytest.mark.parametrize("tool", ["igzip", "pigz", "gzip"])
def test_each_host_compressor_writes_gzip_that_the_seeds_gunzip_reads(managed, tool):
    sb = managed
    before = _names(sb)
    proc = sb.ssh(f"{sb.home}/backup-postgres.sh --compressor {tool} --label {tool} "
                  "--no-prune", check=False)
    assert proc.returncode == 0, proc.stderr
    new = _names(sb) - before
    try:
        assert len(new) == 1 and next(iter(new)).endswith(f"_{tool}.sql.gz"), new
        name = next(iter(new))
        log = sb.sh(f"tail -n 6 {sb.home}/postgres-backup.log")
        assert f"compressed by {tool} -1 on the host" in log, log
        assert sb.ssh(f"gunzip -t {sb.home}/{BACKUPS}/{name}", check=False).returncode == 0
        tail = sb.sh(f"gunzip -c {sb.home}/{BACKUPS}/{name} | tail -n 3")
        assert "-- PostgreSQL database cluster dump complete" in tail
    finally:
        _remove(sb, new)


def test_an_unknown_compressor_is_refused_in_one_line(managed):
    sb = managed
    proc = sb.ssh(f"{sb.home}/backup-postgres.sh --compressor nosuch --no-prune",
                  check=False)
    assert proc.returncode == 64
    assert "COMPRESSOR must be auto, igzip, pigz or gzip" in proc.stderr.decode()


def test_the_verify_script_without_arguments_checks_the_newest_backup(managed):
    """`verify-backup.sh` with no arguments reads the backup script's settings beside it."""
    sb = managed
    sb.ssh(f"{sb.home}/backup-postgres.sh")
    path = f"{sb.home}/verify-backup.sh"
    sb.ssh(f"cat > {path} && chmod 700 {path}", input=shell.script_text("verify-backup.sh")
           .encode())
    try:
        proc = sb.ssh(path, check=False, timeout=600)
        assert proc.returncode == 0, proc.stderr
        last = sb.sh(f"grep -E 'verify\\[[0-9]+\\] RESULT' {sb.home}/postgres-backup.log "
                     "| tail -n 1")
        assert re.search(rf"RESULT ok {NAME} databases=\d+ tables=\d+ rows=\d+", last), last
    finally:
        sb.ssh(f"rm -f {path}")


def test_the_seeds_full_restore_onto_an_empty_cluster_gives_the_backups_data(managed):
    """The seed's step 6, `gunzip -c F | docker exec -i C psql -U postgres`, onto the
    new cluster the image makes on an empty volume (the seed's emergency sequence),
    here a throwaway container and volume: every table of aimms_web equals the live one.
    It reports errors (the roles and database the image made already exist) and still
    exits 0: psql without ON_ERROR_STOP goes on."""
    sb = managed
    sb.ssh(f"{sb.home}/backup-postgres.sh")
    name = sorted(_names(sb))[-1]
    live = sb.checksums()
    cid = sb.container()
    tmp = f"aimms-ops-seedtest-{os.getpid()}"
    image = sb.sh(f"docker inspect -f '{{{{.Image}}}}' {cid}").strip()
    env = sb.sh(f"docker inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' "
                f"{cid}")
    env_args = " ".join(f"-e {shlex.quote(ln)}" for ln in env.splitlines()
                        if ln.startswith(("POSTGRES_PASSWORD=", "AIMMS_DB_PASSWORD=")))
    try:
        sb.ssh(f"docker volume create {tmp} >/dev/null && docker run -d --name {tmp} "
               f"--network none -v {tmp}:/var/lib/postgresql/data {env_args} {image} "
               "postgres >/dev/null")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            q = sb.ssh(f"docker exec {tmp} psql -X -At -U postgres -d postgres "
                       "-c 'SHOW listen_addresses'", check=False)
            if q.returncode == 0 and q.stdout.strip():
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the throwaway cluster did not start")
        assert sb.sh(f"docker exec {tmp} psql -X -At -U postgres -d aimms_web "
                     "-c 'SELECT count(*) FROM pg_tables WHERE schemaname = $$public$$'"
                     ).strip() == "0"
        proc = sb.ssh(f"gunzip -c {sb.home}/{BACKUPS}/{name} | "
                      f"docker exec -i {tmp} psql -U postgres", check=False)
        assert proc.returncode == 0, proc.stderr
        errors = [ln for ln in proc.stderr.decode().splitlines() if "ERROR" in ln]
        assert errors and all("already exists" in ln for ln in errors), errors
        parts = [f"SELECT '{t}', {md5_sql(t)}" for t in sb.tables()]
        parts.append("SELECT 'seq:' || sequencename, coalesce(last_value, 0)::text "
                     "FROM pg_sequences")
        out = sb.ssh(f"docker exec -i {tmp} psql -X -q -A -t -U postgres -d aimms_web",
                     input=(STABLE_TEXT + " UNION ALL ".join(parts) + ";").encode()
                     ).stdout.decode()
        restored = dict(ln.split("|", 1) for ln in out.splitlines() if ln)
        assert restored == live
    finally:
        sb.ssh(f"docker rm -f -v {tmp} >/dev/null 2>&1; docker volume rm {tmp} >/dev/null "
               "2>&1; true")


def _next_minute(sb) -> tuple[str, float]:
    """A cron schedule for the next whole minute at least 15 s away, and its epoch."""
    now = int(sb.sh("date +%s"))
    target = (now // 60 + 1) * 60
    if target - now < 15:
        target += 60
    when = sb.sh(f"date -d @{target} '+%M %H'").split()
    return f"{int(when[0])} {int(when[1])} * * *", float(target)


@dataclass
class CronDue:
    schedule: str
    at: float  # the epoch the schedule is due
    inventory: Path  # the inventory it was installed with
    home: str  # its script, settings, backup dir and log
    env_file: str  # where the operator's own cron line records cron's environment
    before: set[str]  # the backups in its backup dir before it fired


@pytest.fixture(scope="module", autouse=True)
def cron_due(managed, tmp_path_factory):
    """install-backups with a schedule due in the next minute, when the module starts:
    the module's other tests run while cron waits for that minute, and the test of
    the firing comes last. It has a script, settings, backup dir and log of its own,
    so that its job changes nothing the other tests look at."""
    sb = managed
    schedule, at = _next_minute(sb)
    home = f"{sb.home}/cron-due"
    sb.ssh(f"rm -rf {home} && mkdir -m 700 {home}")
    inv = yaml.safe_load(sb.inventory.read_text())
    host = inv["hosts"]["aidset"]
    host.update(cron_schedule=schedule, ssh_config=str(sb.ssh_config),
                backup_script=f"{home}/backup-postgres.sh", backup_dir=f"{home}/backups",
                log_file=f"{home}/backup.log")
    soon = tmp_path_factory.mktemp("cron") / "inventory.yml"
    soon.write_text(yaml.safe_dump(inv))
    proc = sb.fab("install-backups", inventory=soon)
    assert proc.returncode == 0, proc.stderr
    # Beside it, a line of the operator's own that records cron's environment.
    envf = f"{home}/cron-env"
    sb.ssh(f"(crontab -l; echo '{schedule} env > {envf}') | crontab -")
    try:
        yield CronDue(schedule, at, soon, home, envf, set())
    finally:
        sb.ssh(f"crontab -l | grep -v {shlex.quote(envf)} | crontab -; rm -rf {home}")
        proc = sb.fab("install-backups")
        assert proc.returncode == 0, proc.stderr


def test_a_schedule_due_in_the_next_minute_fires_under_cron(managed, cron_due):
    """install-backups with a schedule due within a minute: the real cron daemon runs
    the job, in cron's own environment, and the backup it makes is good for status."""
    sb, due = managed, cron_due
    backups = f"{due.home}/backups"

    def names() -> set[str]:
        out = sb.sh(f"cd {backups} 2>/dev/null && ls -1 aimms_postgres_*.sql.gz 2>/dev/null "
                    "|| true")
        return set(out.split())

    try:
        assert (f"{due.schedule} {due.home}/backup-postgres.sh --config"
                in sb.sh("crontab -l")), "another install replaced the schedule under test"
        deadline = due.at + 75
        new: set[str] = set()
        while time.time() < deadline:
            new = names() - due.before
            if new and sb.ssh(f"test -s {due.env_file}", check=False).returncode == 0:
                break
            time.sleep(2)
        assert new, f"cron did not run the backup within 75 s of {due.schedule!r}"
        name = new.pop()
        log = sb.sh(f"tail -n 20 {due.home}/backup.log")
        assert f"RESULT ok {name}" in log, log
        done = re.search(rf"(\S+) backup\[\d+\] RESULT ok {re.escape(name)}", log)
        assert done and calendar.timegm(time.strptime(done.group(1), "%Y-%m-%dT%H:%M:%SZ")
                                        ) >= due.at
        cron_env = dict(ln.split("=", 1) for ln in sb.sh(f"cat {due.env_file}").splitlines()
                        if "=" in ln)
        assert "SSH_CONNECTION" not in cron_env and "DOCKER_HOST" not in cron_env
        assert cron_env.get("PATH") == "/usr/bin:/bin", cron_env
        status = sb.fab("status", inventory=due.inventory)
        assert status.returncode == 0, status.stdout
        assert name in sb.fab("status", "--json", inventory=due.inventory).stdout
    finally:
        proc = sb.fab("install-backups")
        assert proc.returncode == 0, proc.stderr
    # install-backups put the sandbox's own cron lines back (the backups themselves are
    # not this test's: each file starts from an empty backup dir).
    back = json.loads(sb.fab("status", "--json").stdout)
    assert all(c["state"] == "OK" for c in back["checks"] if c["name"].startswith("cron")), back


def test_doctor_is_ok_on_a_healthy_sandbox(managed):
    sb = managed
    assert sb.fab("install-backups").returncode == 0  # the schedule of the cron test gone
    sb.ssh(f"{sb.home}/backup-postgres.sh")
    proc = sb.fab("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"cron daemon\s*│\s*OK", proc.stdout), proc.stdout
    assert re.search(r"compressor\s*│\s*OK\s*│\s*igzip -1 \(ISA-L\)", proc.stdout), proc.stdout

"""Pure logic of status, doctor, volumes and verify, with canned host output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from aimms_ops.backup import install
from aimms_ops.core import events
from aimms_ops.core.checks import Check, State
from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import BackupFile
from aimms_ops.host import bundle, shell
from aimms_ops.host import events as host_events
from aimms_ops.monitor import (
    disk,
    doctor,
    hostfacts,
    lastverify,
    runlog,
    status,
    verify,
    volumes,
)
from aimms_ops.restore.source import DumpInfo
from tests.hostprog import listing, said

from .test_backups_unit import _host

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SHA = "a" * 64


def _b(hours_ago: float, size: int = 1000, sha: str | None = SHA, label: str = "") -> BackupFile:
    created = NOW - timedelta(hours=hours_ago)
    name = f"aimms_postgres_{created:%Y%m%d_%H%M%S}{label}.sql.gz"
    return BackupFile(name, f"/b/{name}", size, sha, created, "remote")


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("26h", 26 * 3600), ("90m", 5400), ("2d", 172800), (" 1.5d ", 129600), ("1h", 3600),
])
def test_parse_max_age(text, seconds):
    assert status.parse_max_age(text) == seconds


@pytest.mark.parametrize("text", ["", "26", "h", "5x", "-2h", "0h", "26 hours", "2w", "1e3h"])
def test_parse_max_age_refuses_with_one_line(text):
    with pytest.raises(OpsError, match="invalid --max-age") as exc:
        status.parse_max_age(text)
    assert exc.value.code == 3
    assert "\n" not in str(exc.value)


# --- the log ---------------------------------------------------------------------------

LOG = "\n".join([
    "2026-11-24T02:00:01Z backup[100] START backup of project aimms-web service postgres",
    "2026-11-24T02:00:09Z backup[100] RESULT ok aimms_postgres_20261124_020001.sql.gz size=10 "
    "sha256=ab seconds=8",
    "2026-11-25T02:00:01Z backup[200] START backup of project aimms-web service postgres",
    "2026-11-25T02:00:01Z backup[200] RESULT failed: the postgres container of compose project "
    "aimms-web is not running",
    "2026-11-22T04:00:30Z verify[300] RESULT ok aimms_postgres_20261122_020001.sql.gz "
    "databases=2 tables=3 rows=22500 seconds=9",
    "2026-11-25T04:00:03Z verify[400] RESULT failed: gzip stream: the file does not decompress "
    "(aimms_postgres_20261125_020001.sql.gz)",
    "garbage RESULT ok",
]) + "\n"


def test_parse_results_reads_backup_and_verify_lines():
    runs = runlog.parse_results(LOG)
    assert [(r.kind, r.pid, r.ok) for r in runs] == [
        ("backup", 100, True), ("backup", 200, False), ("verify", 300, True),
        ("verify", 400, False)]
    assert runs[0].name == "aimms_postgres_20261124_020001.sql.gz"
    assert runs[1].reason.startswith("the postgres container") and runs[1].name is None
    assert runs[3].name == "aimms_postgres_20261125_020001.sql.gz"
    assert runs[3].reason == "gzip stream: the file does not decompress"
    assert runlog.last_run(runs, "backup").pid == 200
    assert runlog.last_run(runs, "verify").pid == 400
    assert runlog.last_run([], "backup") is None


def test_last_run_failed_is_critical_with_reason_and_fix():
    c = status.check_last_run(runlog.parse_results(LOG))
    assert c.state is State.CRITICAL
    assert "is not running" in c.detail and "start postgres" in c.fix
    ok = status.check_last_run(runlog.parse_results(LOG.splitlines()[1]))
    assert ok.state is State.OK and "aimms_postgres_20261124_020001.sql.gz" in ok.detail
    assert status.check_last_run([]).state is State.WARNING


@pytest.mark.parametrize(("reason", "fix"), [
    ("not enough free space in /b: 1MB free", "free space"),
    ("docker is not reachable as x", "Docker daemon"),
    ("another backup is still running after 600s", "still running"),
    ("pg_dumpall failed (status 1): boom", "postgres log"),
    ("something else", "fab logs"),
])
def test_fix_for_failure(reason, fix):
    assert fix in status.fix_for_failure(reason)


# --- the newest backup, its size ---------------------------------------------------------


def test_newest_fresh_is_ok():
    c = status.check_newest([_b(2), _b(26)], NOW, 26 * 3600, "26h", "/b")
    assert c.state is State.OK and c.detail.startswith("newest backup 2h00m ago")


def test_newest_too_old_is_critical_and_says_how_old():
    c = status.check_newest([_b(30), _b(54)], NOW, 26 * 3600, "26h", "/b")
    assert c.state is State.CRITICAL
    assert c.detail == "newest good backup is 30h old (max 26h)"


def test_newest_ignores_backups_without_checksum():
    c = status.check_newest([_b(1, sha=None), _b(30)], NOW, 26 * 3600, "26h", "/b")
    assert c.state is State.CRITICAL and "30h old" in c.detail


def test_newest_without_dir_or_good_backup_is_critical():
    assert status.check_newest(None, NOW, 3600, "1h", "/b").state is State.CRITICAL
    c = status.check_newest([_b(1, sha=None)], NOW, 3600, "1h", "/b")
    assert c.state is State.CRITICAL and "no good backup" in c.detail


def test_size_drop_of_more_than_half_warns():
    c = status.check_size([_b(1, size=400), _b(25, size=1000), _b(49, size=1100)])
    assert c.state is State.WARNING and "less than half" in c.detail
    assert status.check_size([_b(1, size=600), _b(25, size=1000)]).state is State.OK
    assert status.check_size([_b(1)]).state is State.OK
    assert status.check_size([]).state is State.UNKNOWN


# --- cron ------------------------------------------------------------------------------


def test_cron_present_missing_and_different():
    h = _host(verify_schedule="0 4 * * 0")
    entries = install.cron_entries(h)
    full = "MAILTO=x\n" + "\n".join(entries.values()) + "\n"
    assert all(c.ok for c in status.check_cron(full, h))
    without_backup = "\n".join(ln for ln in full.splitlines() if "aimms-ops:backup" not in ln)
    rows = {c.name: c for c in status.check_cron(without_backup, h)}
    assert rows["cron backup"].state is State.WARNING
    assert rows["cron backup"].detail == "cron entry 'backup' missing"
    assert rows["cron verify"].ok
    changed = full.replace("0 2 * * *", "0 3 * * *")
    rows = {c.name: c for c in status.check_cron(changed, h)}
    assert rows["cron backup"].state is State.WARNING and "differs" in rows["cron backup"].detail
    assert status.check_cron(None, h)[0].state is State.WARNING


def test_cron_entries_add_the_verify_line_only_when_scheduled():
    assert list(install.cron_entries(_host())) == ["backup"]
    h = _host(verify_schedule="0 4 * * 0")
    line = install.cron_entries(h)["verify"]
    assert line.startswith("0 4 * * 0 /home/ec2-user/verify-backup.sh --config "
                           "/home/ec2-user/backup-postgres.sh.conf --file latest")
    assert "--protect aimms_postgres_data_prod --protect aimms_redis_data_prod" in line
    assert line.endswith("# aimms-ops:verify")
    merged = install.merge_crontab("", install.cron_entries(h), h.backup_script)
    assert install.merge_crontab(merged, install.cron_entries(h), h.backup_script) == merged
    # Unscheduling removes the verify line.
    again = install.merge_crontab(merged, install.cron_entries(_host()), h.backup_script)
    assert "aimms-ops:verify" not in again and "aimms-ops:backup" in again


# --- disk ------------------------------------------------------------------------------


def test_disk_outlook_growth_and_days_left():
    # Three backups a day apart, each 100 bytes bigger: 100 B/day per backup, 3 kept.
    bs = [_b(0, 1200), _b(24, 1100), _b(48, 1000)]
    o = disk.disk_outlook(30_000, 100_000, bs)
    assert o.growth_per_day == pytest.approx(300)
    assert o.days_left == pytest.approx(100)
    assert disk.disk_outlook(30_000, 0, [_b(0), _b(1)]).growth_per_day is None
    shrinking = disk.disk_outlook(30_000, 0, [_b(0, 900), _b(24, 1000)])
    assert shrinking.days_left is None and shrinking.growth_per_day < 0


def test_check_disk_states():
    bs = [_b(0, 1000)]
    assert disk.check_disk(disk.disk_outlook(1100, 0, bs), bs, "/b").state is State.CRITICAL
    assert disk.check_disk(disk.disk_outlook(2000, 0, bs), bs, "/b").state is State.WARNING
    ok = disk.check_disk(disk.disk_outlook(10**9, 0, bs), bs, "/b")
    assert ok.state is State.OK and "free in /b" in ok.detail
    grow = [_b(0, 1200), _b(24, 1100), _b(48, 1000)]
    soon = disk.check_disk(disk.disk_outlook(3000, 0, grow), grow, "/b")
    assert soon.state is State.WARNING and "10 days left" in soon.detail
    assert disk.check_disk(None, bs, "/b").state is State.UNKNOWN


# --- deep verify in status -----------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "days"), [
    ("0 4 * * 0", 7), ("0 2 * * *", 1), ("0 3 1 * *", 31), ("@weekly", 7), ("*/5 * * * *", 1 / 24),
])
def test_schedule_period(schedule, days):
    assert lastverify.schedule_period(schedule) == timedelta(days=days)


def test_check_verify():
    h = _host(verify_schedule="0 4 * * 0")
    assert lastverify.check_verify([], _host(), NOW, {}) is None
    runs = runlog.parse_results(LOG)
    failed = lastverify.check_verify(runs, h, NOW, {})
    assert failed.state is State.CRITICAL and "gzip stream" in failed.detail
    ok_runs = [r for r in runs if r.pid == 300]
    assert lastverify.check_verify(ok_runs, h, NOW, {}).state is State.OK
    late = lastverify.check_verify(ok_runs, h, NOW + timedelta(days=9), {})
    assert late.state is State.WARNING and "old" in late.detail
    assert lastverify.check_verify([], h, NOW, {}).state is State.OK
    never = lastverify.check_verify([], h, NOW, {"verify_since": "2026-11-01T00:00:00Z"})
    assert never.state is State.WARNING and "since it was scheduled" in never.detail


# --- the whole status from canned output ---------------------------------------------------

COMPOSE = """\
services:
  postgres:
    image: postgres:15
    volumes:
    - {type: volume, source: postgres_data, target: /var/lib/postgresql/data}
  redis:
    image: redis:7
    volumes:
    - redis_data:/data
volumes:
  postgres_data: {external: true, name: aimms_postgres_data_prod}
  redis_data: {external: true, name: aimms_redis_data_prod}
"""


def _gathered(backups: list[BackupFile], *, crontab: str, log: str = LOG.splitlines()[1],
              running: bool = True, record: str = "", script_sha: str | None = None,
              compose: str = COMPOSE, rebuild: str | None = None, **facts: str) -> str:
    """What fab status reads of the host (``facts``: more of the stack's facts;
    ``rebuild``: the state file of an unfinished rebuild)."""
    script_sha = script_sha or hashlib.sha256(
        shell.script_text("backup-postgres.sh").encode()).hexdigest()
    stack = {
        "ssh.user": "ec2-user", "docker.ok": "1", "docker.version": "24.0.7",
        "compose.file_exists": "1", "compose.cmd": "docker compose", "compose.config_ok": "1",
        "compose.config": compose, "container.id": "0123456789abcdef",
        "container.name": "aimms-web-postgres-1",
        "container.state": "running" if running else "exited",
        "container.started_at": "2026-11-20T10:00:00.123Z",
        "postgres.ready": "1" if running else "0", "postgres.ready_detail":
        "accepting connections", "volume.aimms_postgres_data_prod.exists": "1",
        "volume.aimms_postgres_data_prod.used_by": "aimms-web-postgres-1",
        "volume.aimms_redis_data_prod.exists": "1",
        "volume.aimms_redis_data_prod.used_by": "aimms-web-redis-1",
        "backup_dir.exists": "1", "backup_dir.writable": "1",
        "backup_dir.avail_kb": "10485760", "backup_dir.size_kb": "52428800", **facts}
    state = {
        "now.epoch": str(int(NOW.timestamp())), "script.sha256": script_sha,
        "script.mode": "700", "conf.sha256": "", "crontab.available": "1", "crontab": crontab,
        "cron.daemon": "1", "log.exists": "1", "log.results": log, "log.tail": LOG,
        "container.exit_code": "0", "container.finished_at": "2026-11-25T11:00:00Z",
        "container.log": "LOG: database system is shut down", "record": record,
        "env.PATH": "/usr/bin:/bin"}
    if rebuild is not None:
        state["rebuild.state"] = rebuild
    return (said("python", {"python3.version": "3.11"}) + said("facts", stack)
            + said("list-backups", listing(backups)) + said("status-facts", state))


def _report(text: str, host=None, max_age: str = "26h") -> status.StatusReport:
    host = host or _host()
    hf = hostfacts.parse_gathered(text, host, "ssh-ed25519 SHA256:x")
    return status.judge(hf, host, status.parse_max_age(max_age), max_age)


def test_status_ok_summary_first_and_perfdata():
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    rep = _report(_gathered([_b(2, 2048), _b(26, 2000)], crontab=cron))
    assert rep.state is State.OK, [c for c in rep.checks if not c.ok]
    assert rep.summary.startswith("AIMMS-OPS OK - newest backup 2h00m ago (2.0 KiB); last run ok;")
    assert "| age=7200s;;93600;0 size=2048B;;;0 free=" in rep.summary


def test_status_critical_names_the_age_first_then_the_warnings():
    h = _host()
    cron = install.cron_entries(h)["backup"].replace("0 2", "0 3")
    rep = _report(_gathered([_b(30), _b(54)], crontab=cron))
    assert rep.state is State.CRITICAL
    assert rep.summary.startswith("AIMMS-OPS CRITICAL - newest good backup is 30h old (max 26h); "
                                  "cron entry 'backup' differs from the inventory (schedule "
                                  "0 3 * * *, inventory 0 2 * * *) | age=")


def test_status_flags_a_volume_that_is_not_external_and_a_stopped_postgres():
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    not_external = COMPOSE.replace("{external: true, name: aimms_redis", "{name: aimms_redis")
    rep = _report(_gathered([_b(1)], crontab=cron, running=False, compose=not_external), h)
    bad = {c.name: c for c in rep.checks if not c.ok}
    assert bad["postgres container"].state is State.CRITICAL
    assert "not declared external" in bad["volume aimms_redis_data_prod"].detail
    assert "volume aimms_postgres_data_prod" not in bad
    assert rep.summary.startswith("AIMMS-OPS CRITICAL - postgres container: aimms-web-postgres-1"
                                  " is exited; ")
    assert "; volume aimms_redis_data_prod: exists, but is not declared external" in rep.summary


def test_status_is_critical_when_the_next_backup_cannot_write_its_dir():
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    text = _gathered([_b(1)], crontab=cron)
    rep = _report(text, h)
    assert rep.state is State.OK and "backup dir" not in {c.name for c in rep.checks}
    rep = _report(_gathered([_b(1)], crontab=cron, **{"backup_dir.writable": "0"}), h)
    assert rep.state is State.CRITICAL
    assert rep.summary.startswith("AIMMS-OPS CRITICAL - backup dir: /home/ec2-user/"
                                  "postgres-backups, 10.0 GiB free, not writable")
    assert [c.fix for c in rep.checks if c.name == "backup dir"] == [
        "chown the directory to ec2-user"]


def test_status_json_shape():
    h = _host(verify_schedule="0 4 * * 0")
    cron = "\n".join(install.cron_entries(h).values())
    d = _report(_gathered([_b(2)], crontab=cron, log=LOG), h).as_dict()
    json.dumps(d)
    assert list(d) == ["host", "state", "exit_code", "summary", "checked_at", "max_age_seconds",
                       "checks", "newest_backup", "last_backup_run", "last_verify", "disk",
                       "last_ping", "replaced"]
    assert d["state"] == "CRITICAL" and d["exit_code"] == 2
    assert set(d["checks"][0]) == {"name", "state", "detail", "fix"}
    assert d["newest_backup"]["age_seconds"] == 7200
    assert d["last_backup_run"]["result"] == "failed"
    assert d["last_verify"] == {"result": "failed", "at": "2026-11-25T04:00:03Z",
                                "name": "aimms_postgres_20261125_020001.sql.gz",
                                "reason": "gzip stream: the file does not decompress",
                                "detail": d["last_verify"]["detail"]}
    assert set(d["disk"]) == {"free_bytes", "total_bytes", "growth_bytes_per_day", "days_left"}


def test_a_cut_output_is_one_error_and_unknown_facts_are_ignored():
    """Facts are read whole or not at all: output cut anywhere is one error that names
    what is missing; a fact or a field this version does not know changes nothing."""
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    whole = _gathered([_b(2)], crontab=cron)
    for cut in (0, len(whole) // 3, len(whole) - 2):
        with pytest.raises(host_events.CutShort, match="ended before its report") as e:
            hostfacts.parse_gathered(whole[:cut], h)
        assert "\n" not in str(e.value) and "run it again" in (e.value.hint or "")
    with pytest.raises(host_events.CutShort, match="status-facts on aidset ended"):
        hostfacts.parse_gathered(whole.rsplit("\n", 2)[0] + "\n", h)
    newer = whole.replace('"event":"facts",', '"event":"facts","v":2,').replace(
        '"ssh.user":', '"ssh.shell":{"name":"bash","at":[1,2]},"ssh.user":')
    newer += '{"event":"disk-usage","of":"facts","facts":{"x":1}}\n'
    assert newer != whole
    assert _report(newer, h).as_dict() == _report(whole, h).as_dict()


@pytest.mark.parametrize("seen, said_", [("", "no python3 on aidset"),
                                         ("3.6", "python3 3.6 is too old on aidset")])
def test_a_host_where_python3_cannot_run_the_program_says_so(seen, said_):
    """The shell reads the python3 version first: without a usable python3 the gather
    says that, and doctor shows that one check."""
    text = said("python", {"python3.version": seen})
    with pytest.raises(hostfacts.NoHostProgram, match=said_) as e:
        hostfacts.parse_gathered(text, _host())
    assert "install python3" in (e.value.hint or "")
    check = doctor.python_missing(e.value.detail)
    assert check.state is State.CRITICAL and "python3" in check.fix


def test_gather_command_is_one_remote_command_of_one_program_start(tmp_path):
    cmd = hostfacts.gather_command(_host())
    assert cmd.count(f"python3 {bundle.directory()}/aimms-ops.pyz ") == 1
    assert f"bash {bundle.directory()}/" not in cmd
    program = cmd.split(f"python3 {bundle.directory()}/aimms-ops.pyz ")[1]
    assert program.startswith("batch 9 facts ") and " 2 list-backups " in program
    assert " 11 status-facts " in program and "--rebuild-state" in program
    # The python3 version is read by the shell first, with or without python3: a facts
    # event the reader takes.
    first = cmd.split("; python3 ")[0]
    for path in (os.environ["PATH"], str(tmp_path)):
        out = subprocess.run(["/bin/bash", "-c", first], env={"PATH": path},
                             capture_output=True, text=True, check=True).stdout
        version = host_events.facts_of(host_events.parse(out), "python")
        assert version is not None, out
        assert re.fullmatch(r"3\.\d+" if path != str(tmp_path) else "",
                            version["python3.version"]), out


# --- doctor --------------------------------------------------------------------------------


def test_doctor_flags_stopped_postgres_with_its_log_and_a_modified_script():
    h = _host()
    cron = "\n".join(install.cron_entries(h).values())
    record = "container_id=0123456789abcdef\ncontainer_name=aimms-web-postgres-1\n"
    hf = hostfacts.parse_gathered(_gathered([_b(1)], crontab=cron, running=False, record=record,
                                         script_sha="b" * 64, log=LOG), h)
    rep = doctor.diagnose(hf, h)
    rows = {c.name: c for c in rep.checks}
    pg = rows["postgres container"]
    assert pg.state is State.CRITICAL
    assert pg.detail.startswith("aimms-web-postgres-1 is exited (exit code 0) since 2026-11-25")
    assert "docker compose -f /home/ec2-user/aimms-web/docker-compose.prod.yml -p aimms-web " \
           "up -d postgres" in pg.fix
    assert rep.container_log == ["LOG: database system is shut down"]
    assert rows["backup script"].state is State.WARNING
    assert "differs from this version" in rows["backup script"].detail
    assert rows["settings"].state is State.CRITICAL  # not installed
    assert rows["container since install"].ok
    assert rows["last run"].state is State.CRITICAL
    assert rep.last_run_log == [ln for ln in LOG.splitlines() if "backup[200]" in ln]
    assert rep.state is State.CRITICAL
    assert rep.as_dict()["exit_code"] == 2


def test_doctor_container_changed_since_install():
    h = _host()
    record = "container_id=ffffffffffff\ncontainer_name=aimms_web_postgres_1\n"
    hf = hostfacts.parse_gathered(_gathered([_b(1)], crontab="", record=record), h)
    c = doctor.check_container_changed(hf, h)
    assert c.state is State.WARNING
    assert "was aimms_web_postgres_1 (ffffffffffff), now aimms-web-postgres-1" in c.detail
    hf = hostfacts.parse_gathered(_gathered([_b(1)], crontab=""), h)
    assert doctor.check_container_changed(hf, h).state is State.WARNING  # no record


def test_doctor_cron_daemon():
    hf = hostfacts.HostFacts({}, {"cron.daemon": "0"}, [])
    assert doctor.check_cron_daemon(hf).state is State.WARNING
    assert doctor.check_cron_daemon(hostfacts.HostFacts({}, {}, [])) is None


# --- install record ------------------------------------------------------------------------


def test_install_record_changes_only_with_the_container_or_the_schedule():
    h = _host(verify_schedule="0 4 * * 0")
    ctr = {"id": "abc", "name": "pg", "image": "postgres:15"}
    first = install.plan_record({}, ctr, h, NOW)
    assert first["container_id"] == "abc" and first["verify_since"] == "2026-11-25T12:00:00Z"
    text = install.record_text(first)
    assert install.parse_record(text) == first
    later = NOW + timedelta(days=3)
    assert install.plan_record(first, ctr, h, later) is None
    moved = install.plan_record(first, {**ctr, "id": "def"}, h, later)
    assert moved["container_id"] == "def"
    assert moved["verify_since"] == first["verify_since"]  # same schedule: kept
    unscheduled = install.plan_record(first, ctr, _host(), later)
    assert unscheduled["verify_schedule"] == "" and unscheduled["verify_since"] == ""
    # No container running now: the recorded one is kept.
    assert install.plan_record(first, {"id": ""}, h, later) is None


def test_verify_script_lives_next_to_the_backup_script():
    h = _host()
    assert h.layout.verify_script == "/home/ec2-user/verify-backup.sh"
    assert h.layout.install_record == "/home/ec2-user/backup-postgres.sh.installed"


# --- volumes -------------------------------------------------------------------------------

def _volume(name: str, labels: str = "") -> dict:
    return {"name": name, "driver": "local", "labels": labels,
            "mountpoint": f"/var/lib/docker/volumes/{name}/_data"}


def _container(name: str, state: str, mounts: str, project: str = "aimms-web",
               service: str = "") -> dict:
    return {"name": name, "state": state, "mounts": mounts, "project": project,
            "service": service}


ENGINE = {
    "api": ["1.43", "1.41"],
    "volumes": [_volume("aimms_postgres_data_prod"),
                _volume("aimms_redis_data_prod", "com.docker.compose.project=aimms-web"),
                {**_volume("other"), "mountpoint": "/x"}],
    "containers": [
        _container("aimms-web-postgres-1", "running", "aimms_postgres_data_prod",
                   service="postgres"),
        _container("aimms-web-redis-1", "exited", "aimms_redis_data_prod,/some/bind",
                   service="redis"),
        _container("unrelated", "running", "other", project="")],
    "sizes": {"aimms_postgres_data_prod": "72.75MB", "aimms_redis_data_prod": "177B"},
    "kept": []}


@pytest.mark.parametrize(("text", "n"), [("72.75MB", 72_750_000), ("177B", 177), ("1.5GB", 1.5e9),
                                          ("3kB", 3000), ("N/A", None), ("", None)])
def test_parse_docker_size(text, n):
    assert volumes.parse_docker_size(text) == n


def test_volumes_report():
    not_external = COMPOSE.replace("{external: true, name: aimms_redis", "{name: aimms_redis")
    facts = {"compose.cmd": "docker-compose", "compose.config": not_external}
    engine = volumes.parse_engine(ENGINE)
    assert engine.api == "1.41"
    rep = {v.name: v for v in volumes.report(facts, engine, _host())}
    assert list(rep) == ["aimms_postgres_data_prod", "aimms_redis_data_prod"]
    pg, redis = rep["aimms_postgres_data_prod"], rep["aimms_redis_data_prod"]
    assert pg.external is True and pg.services == ("postgres",) and pg.size_bytes == 72_750_000
    assert pg.mounted_by == (volumes.Mounter("aimms-web-postgres-1", "running"),)
    assert pg.destroyed_by[0].startswith("docker volume rm aimms_postgres_data_prod")
    assert any(d.startswith("docker volume prune (") for d in pg.destroyed_by)
    assert not any("down -v" in d for d in pg.destroyed_by)
    assert any("down -v (external" in p for p in pg.preserved_by)
    assert redis.external is False
    compose = ("docker-compose -f /home/ec2-user/aimms-web/docker-compose.prod.yml "
               "-p aimms-web down -v")
    assert any(d.startswith(compose) for d in redis.destroyed_by)
    assert redis.as_dict()["mounted_by"] == [{"container": "aimms-web-redis-1",
                                              "state": "exited"}]


def test_volumes_refuse_to_guess_when_docker_does_not_answer():
    """No daemon lists no volume: that is "docker is not reachable", not "does not exist"."""
    text = said("facts", {"docker.ok": "0", "docker.error": "Cannot connect to the Docker "
                          "daemon"}) + said("volume-facts", {})
    with pytest.raises(OpsError, match="docker is not reachable on aidset: Cannot connect") as e:
        volumes.parse_gathered(text, _host())
    assert "start the Docker daemon" in e.value.hint
    good = said("facts", {"docker.ok": "1", "compose.config": COMPOSE}) + said(
        "volume-facts", ENGINE)
    assert [v.name for v in volumes.parse_gathered(good, _host())][:1] == [
        "aimms_postgres_data_prod"]


def test_volume_prune_needs_all_from_api_1_42():
    new = volumes.destroyers("v", True, None, "1.43", "dc")
    assert "docker volume prune --all (when no container uses it)" in new
    assert not any("system prune" in d for d in new)
    old = volumes.destroyers("v", True, "/m", "1.41", "dc")
    assert any(d.startswith("docker system prune --volumes") for d in old)
    assert old[-1] == "rm -rf /m (as root, underneath Docker)"


# --- verify --------------------------------------------------------------------------------


def _dump(problems=(), recorded: str | None = SHA) -> DumpInfo:
    return DumpInfo("/b/x.sql.gz", "remote", 10, "gz", SHA, recorded, ("aimms_web",),
                    tuple(problems))


def test_checks_of_a_good_dump():
    checks = verify.checks_of(_dump())
    assert [c.name for c in checks] == list(verify.CHECK_ORDER)
    assert all(c.ok for c in checks)
    assert verify.checks_of(_dump(recorded=None))[0].state is State.WARNING


@pytest.mark.parametrize(("problem", "failed", "unknown"), [
    ("sha256 mismatch: the file is 1…, its .sha256 says 2…", "checksum", set()),
    ("the gzip stream is damaged or truncated (decompression failed)", "gzip stream",
     {"dump header", "completion marker"}),
    ("not a pg_dumpall dump: no cluster dump header", "dump header", {"completion marker"}),
    ("the dump is incomplete: its completion marker is missing", "completion marker", set()),
])
def test_checks_of_name_the_failed_check(problem, failed, unknown):
    checks = {c.name: c for c in verify.checks_of(_dump([problem]))}
    assert checks[failed].state is State.CRITICAL and checks[failed].detail == problem
    assert {n for n, c in checks.items() if c.state is State.UNKNOWN} == unknown


DEEP_OK = "\n".join([
    events.line("verify", file="aimms_postgres_20261125_020000.sql.gz", size=123),
    events.line("check", name="checksum", state="OK", detail="matches its .sha256"),
    events.line("verify", container="aimms-ops-verify-20261125040000-42", volume=None),
    events.line("check", name="restore", state="OK", detail="psql replayed it"),
    events.line("database", name="aimms_web"),
    events.line("table", database="aimms_web", table="public.orders", rows=20000),
    events.line("table", database="aimms_web", table="public.odd name", rows=3),
    events.line("database", name="postgres"),
    events.line("check", name="cleanup", state="OK", detail="container and volume removed"),
    events.line("verify", result="ok", seconds=9), ""])


def test_parse_deep():
    out = verify.parse_deep(host_events.parse(
        DEEP_OK + "noise\nverify.table=bad\n"
        + events.line("table", database="x", table="no count", rows=None)))
    assert [c.name for c in out.checks] == ["checksum", "restore", "cleanup"]
    assert out.databases == ["aimms_web", "postgres"]
    assert out.tables == [verify.TableCount("aimms_web", "public.orders", 20000),
                          verify.TableCount("aimms_web", "public.odd name", 3)]
    assert out.values["container"] == "aimms-ops-verify-20261125040000-42"
    assert "volume" not in out.values and out.values["size"] == "123"
    failed = verify.parse_deep(host_events.parse(events.line(
        "check", name="gzip stream", state="CRITICAL", detail="does not decompress")))
    assert failed.checks == [Check("gzip stream", State.CRITICAL, "does not decompress",
                                   verify._FIXES["gzip stream"])]


def test_verify_report_json_shape():
    out = verify.parse_deep(host_events.parse(DEEP_OK))
    rep = verify.VerifyReport("aidset", "f", "/b/f", 123, SHA, True, out.checks, out.databases,
                              out.tables, "c", "c", "sha256:i", 9)
    d = rep.as_dict()
    assert d["state"] == "OK" and d["exit_code"] == 0
    assert d["databases"] == [{"name": "aimms_web", "tables": [
        {"name": "public.orders", "rows": 20000}, {"name": "public.odd name", "rows": 3}]},
        {"name": "postgres", "tables": []}]
    assert d["throwaway"] == {"container": "c", "volume": "c", "image": "sha256:i",
                              "removed": True}


def test_deep_verify_script_args_protect_the_production_volumes():
    args = verify.script_args(_host(), "latest")
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--protect", "aimms_postgres_data_prod") in pairs
    assert ("--protect", "aimms_redis_data_prod") in pairs
    assert pairs[-1] == ("--file", "latest")


def test_verify_script_is_one_file_that_runs_the_host_programs_verify():
    """The deep verify is the host program's (tests/unit/test_agent_verify_unit.py: the
    dump reader's filter, a container with no network); the script is its entry point."""
    text = shell.script_text("verify-backup.sh")
    assert "@include" not in text
    assert 'exec python3 "$AIMMS_OPS_PROGRAM" verify --script ' in text


@pytest.mark.parametrize("seen, state", [
    ("3.11", State.OK), ("3.7", State.OK), ("3.6", State.CRITICAL), ("", State.CRITICAL),
])
def test_python3_on_the_host_is_checked_for_restores(seen, state):
    check = doctor.check_python(hostfacts.HostFacts({}, {"python3.version": seen}, []))
    assert check.state is state
    if state is not State.OK:
        assert "python3" in check.fix
    assert doctor.check_python(hostfacts.HostFacts({}, {}, [])) is None

"""The host program, run here as the host runs it (the zipapp, under python3), against a
temporary backup dir: the lock, pins, the size-drop guard, latest, what a killed run
left. Waits use a handshake (a line on a pipe), never a sleep."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aimms_ops.core import lock, retention
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy
from aimms_ops.host import shell
from aimms_ops.monitor.status import check_size
from tests.hostprog import HOST, PROGRAM, SCRIPT_ENV, write_program

STAMP = "aimms_postgres_20260101_020000"


def agent(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HOST, *args], capture_output=True, text=True, timeout=60,
                          input=stdin, check=False)


_HOLDER = """import sys
from aimms_ops.core.lock import Lock
held = Lock(sys.argv[1], sys.argv[2], shared=sys.argv[3] == "shared").acquire(0)
print("held", flush=True)
sys.stdin.read()
held.release()
"""


def _holding(path: Path, what: str, mode: str = "exclusive") -> subprocess.Popen:
    """A process of the host program's that holds the lock ``path`` until its stdin
    closes; returns once it holds it (it says so on stdout)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), what, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True, env={**SCRIPT_ENV,
                            "PYTHONPATH": str(SCRIPT_ENV["AIMMS_OPS_PROGRAM"])})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "held\n", proc.stderr.read() if proc.stderr else line
    return proc


def _end(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_script_waiting_for_a_lock_is_told_who_holds_it(tmp_path):
    """A backup waiting on an offsite sync (and a sync on a backup) names its holder: both
    take the lock through the one model, whose note says what holds it."""
    path = tmp_path / LOCK_FILES["backup"]
    for holder, waiter in (("offsite sync", "backup"), ("backup", "offsite sync")):
        held = _holding(path, holder)
        try:
            with open(path, "ab") as fd:  # the waiter's descriptor of the lock: its stdin
                waiting = subprocess.run([*HOST, "lock", str(path), "--fd", "0", "--pid",
                                          str(os.getpid()), "--what", waiter], stdin=fd,
                                         capture_output=True, text=True, timeout=60, check=False)
            rc, by = waiting.returncode, waiting.stdout.strip().removeprefix("held by ")
            assert rc == 75, waiting.stderr
            assert re.fullmatch(rf"{holder} pid {held.pid} since \d{{4}}-\d\d-\d\dT[\d:]+Z", by)
        finally:
            _end(held)
        assert not list(tmp_path.glob("*.owner.*")), "the holder's note outlives it"


def test_shared_holders_share_and_an_exclusive_one_waits_for_both(tmp_path):
    path = tmp_path / LOCK_FILES["cluster"]
    a, b = _holding(path, "backup", "shared"), _holding(path, "verify", "shared")
    try:
        with pytest.raises(LockBusy) as busy:
            Lock(str(path), "restore").acquire(0)
        assert sorted(n.split(" ")[0] for n in busy.value.holders) == ["backup", "verify"]
    finally:
        _end(a)
        _end(b)
    with Lock(str(path), "restore").acquire(0) as held:
        assert Path(held.note).read_text().startswith("restore pid ")
    assert not list(tmp_path.glob("*.owner.*"))


def test_a_bounded_wait_reports_while_it_waits_and_ends_when_the_holder_does(tmp_path):
    path = tmp_path / LOCK_FILES["backup"]
    held = _holding(path, "backup")
    told: list[tuple[list[str], float]] = []
    ticks = iter(range(1000))

    def clock() -> float:
        return float(next(ticks))

    def sleep(_: float) -> None:
        if len(told) == 2:
            _end(held)  # the holder ends while we wait

    lk = Lock(str(path), "restore").acquire(600, on_wait=lambda h, w: told.append((h, w)),
                                            clock=clock, sleep=sleep)
    try:
        assert told[0][0][0].startswith("backup pid ") and told[0][1] == 1.0
        assert lk.held
    finally:
        lk.release()
    with pytest.raises(LockBusy) as busy:
        held2 = _holding(path, "backup")
        try:
            Lock(str(path), "restore").acquire(0.3)
        finally:
            _end(held2)
    assert busy.value.waited >= 0.3


def test_notes_of_dead_holders_are_removed_not_named(tmp_path):
    path = tmp_path / LOCK_FILES["backup"]
    gone = subprocess.Popen(["true"])
    gone.wait()
    Path(lock.note_path(str(path), gone.pid)).write_text("backup pid 1 since x\n")
    assert lock.holders(str(path)) == []
    assert not Path(lock.note_path(str(path), gone.pid)).exists()


def test_clean_killed_removes_only_what_a_dead_run_left(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (d / f".{STAMP}.sql.gz.tmp").write_text("x")
    (d / f"{STAMP}.sql.gz.sha256.tmp").write_text("x")
    (d / f"{STAMP}.sql.gz").write_text("x")
    Path(lock.note_path(str(d / LOCK_FILES["backup"]), gone.pid)).write_text("backup\n")
    Path(lock.note_path(str(d / LOCK_FILES["cluster"]), os.getpid())).write_text("me\n")
    (tmpdir / f"aimms-backup.{gone.pid}.abc").mkdir()
    (tmpdir / f"aimms-backup.{os.getpid()}.abc").mkdir()
    proc = subprocess.run([*HOST, "clean-killed", str(d), "--pid", "1"], capture_output=True,
                          text=True, env={**os.environ, "TMPDIR": str(tmpdir)}, check=True)
    assert sorted(os.listdir(d)) == sorted([f"{STAMP}.sql.gz",
                                            f"{LOCK_FILES['cluster']}.owner.{os.getpid()}"])
    assert os.listdir(tmpdir) == [f"aimms-backup.{os.getpid()}.abc"]
    assert f".{STAMP}.sql.gz.tmp" in proc.stdout


def test_pin_and_unpin_under_the_backup_lock(tmp_path):
    (tmp_path / f"{STAMP}.sql.gz").write_text("x")
    got = agent("pin", str(tmp_path), f"{STAMP}.sql.gz", "me@here", "keep\nthis")
    assert got.returncode == 0 and got.stdout == f"pinned={STAMP}.sql.gz\n"
    pin = retention.parse_pin((tmp_path / f"{STAMP}.sql.gz.pin").read_text())
    assert (pin.by, pin.reason, pin.until) == ("me@here", "keep this", None)
    assert agent("pin", str(tmp_path), "nope.sql.gz", "a", "b").returncode == 64
    assert agent("pin", str(tmp_path), f"{STAMP}_x.sql.gz", "a", "b").returncode == 66
    held = _holding(tmp_path / LOCK_FILES["backup"], "backup")
    try:
        busy = agent("unpin", "--wait", "0", str(tmp_path), f"{STAMP}.sql.gz")
    finally:
        _end(held)
    assert busy.returncode == 75 and f"backup pid {held.pid}" in busy.stderr
    # The wait was said at once on stdout: what for, who holds it, up to how long.
    [wait] = [json.loads(ln) for ln in busy.stdout.splitlines() if ln.startswith("{")]
    assert wait["event"] == "wait" and wait["for"] == "a backup or retention run"
    assert f"backup pid {held.pid}" in wait["holder"] and wait["up_to"] == 0
    got = agent("unpin", str(tmp_path), f"{STAMP}.sql.gz")
    assert got.stdout.splitlines() == [f"unpinned={STAMP}.sql.gz", "was=1"]
    assert not (tmp_path / f"{STAMP}.sql.gz.pin").exists()


def _backup(d: Path, name: str, size: int, age_h: int, checksum: bool = True) -> None:
    (d / name).write_bytes(b"x" * size)
    t = time.time() - age_h * 3600
    os.utime(d / name, (t, t))
    if checksum:
        (d / f"{name}.sha256").write_text(f"{'0' * 64}  {name}\n")


def test_the_size_guard_of_the_host_is_the_one_of_fab_status(tmp_path):
    """The same backups, the same verdict: safety copies and backups without a checksum
    are not measured on either side."""
    from aimms_ops.backup import listing

    for i, size in enumerate((1000, 1100, 900, 1000, 1200, 5000)):
        _backup(tmp_path, f"aimms_postgres_2026010{i + 1}_020000.sql.gz", size, 100 - i)
    _backup(tmp_path, "aimms_postgres_20260108_020000_pre-restore.sql.gz", 100, 50)
    _backup(tmp_path, "aimms_postgres_20260108_030000.sql.gz", 100, 49, checksum=False)
    new = "aimms_postgres_20260109_020000.sql.gz"
    for size, dropped in ((400, True), (600, False)):
        _backup(tmp_path, new, size, 1)
        got = agent("size-guard", str(tmp_path), new, str(size))
        assert got.returncode == 0
        assert (got.stdout.strip() == "1100") is dropped, got.stdout
        assert (check_size(listing.list_local(tmp_path)).state.name == "WARNING") is dropped


def test_latest_is_the_newest_backup_that_is_not_a_safety_copy(tmp_path):
    _backup(tmp_path, f"{STAMP}.sql.gz", 10, 5)
    _backup(tmp_path, "aimms_postgres_20260102_020000_pre-rebuild.sql.gz", 10, 1)
    assert agent("latest", str(tmp_path)).stdout == f"{STAMP}.sql.gz\n"
    assert agent("latest", str(tmp_path / "none")).returncode != 0


def test_units_are_the_operator_side_ones():
    from aimms_ops.core import units

    assert agent("size", "2097152").stdout.strip() == units.size(2097152) == "2.0 MiB"
    assert agent("age", "288000").stdout.strip() == units.age(288000) == "3d8h"


def test_the_program_refuses_bad_usage_in_one_line():
    got = agent("pin")
    assert got.returncode == 64 and len(got.stderr.strip().splitlines()) == 1


def test_the_program_runs_on_the_oldest_python_it_claims():
    """It is parsed by the python3 it runs under: no syntax newer than HOST_PYTHON."""
    import ast

    from aimms_ops.core import HOST_PYTHON
    from aimms_ops.host import bundle

    assert bundle.program()  # what is built of them
    root = shell.PACKAGE_DIR
    for package in bundle.PROGRAM_PACKAGES:
        for path in (root / package).glob("*.py"):
            ast.parse(path.read_text(), feature_version=HOST_PYTHON)
    assert sys.version_info >= HOST_PYTHON


def _copies(tmp_path: Path, names: list[str]) -> Path:
    f = tmp_path / "copies"
    f.write_text("".join(f"{n}\t{'0' * 64}\t10\n" for n in names) + "partial\tx\n")
    return f


def _monthly_names(n: int) -> list[str]:
    """One backup on the first of each of the last ``n`` months, and daily ones this month."""
    today = time.gmtime()
    out = []
    y, m = today.tm_year, today.tm_mon
    for _ in range(n):
        m -= 1
        if m == 0:
            y, m = y - 1, 12
        out.append(f"aimms_postgres_{y:04d}{m:02d}01_020000.sql.gz")
    return out


def test_an_offsite_target_keeps_what_the_gfs_rules_and_the_pins_keep(tmp_path):
    """The target's copies follow the host's policy (GFS rules, pins), not days alone."""
    d = tmp_path / "b"
    d.mkdir()
    monthly = _monthly_names(6)
    pinned = monthly[-1]  # the oldest: only its pin on the host keeps it
    _backup(d, pinned, 10, 24 * 200)
    (d / f"{pinned}.pin").write_text(retention.pin_text("me", time.time(), "audit"))
    copies = _copies(tmp_path, monthly)
    now = str(time.time())
    gfs = agent("offsite-plan", str(d), str(copies), now, "0", "1", "monthly=4")
    assert gfs.returncode == 0, gfs.stderr
    kept = {ln.split()[1] for ln in gfs.stdout.splitlines() if ln.startswith("keep ")}
    assert kept == set(monthly[:4]) | {pinned}
    days_only = agent("offsite-plan", str(d), str(copies), now, "7", "1")
    kept = {ln.split()[1] for ln in days_only.stdout.splitlines() if ln.startswith("keep ")}
    assert kept == {monthly[0], pinned}
    assert "partial" not in gfs.stdout


def test_a_target_has_the_hosts_policy_unless_it_sets_its_own():
    from aimms_ops.inventory import offsite as config

    host = retention.Policy(within_days=0, daily=7, monthly=12, min_keep=2)
    target = {"name": "s3", "type": "s3", "endpoint": "http://127.0.0.1:9000",
              "bucket": "backups", "credentials": "/c"}
    recips = ["age1" + "q" * 58]
    off = config.parse({"offsite": [target], "offsite_recipients": recips}, "h", host,
                       Path("/"))
    assert (off.targets[0].rules, off.targets[0].retention_days) == ("daily=7 monthly=12", 0)
    off = config.parse({"offsite": [{**target, "keep_yearly": 3}],
                        "offsite_recipients": recips}, "h", host, Path("/"))
    t = off.targets[0]
    assert (t.rules, t.retention_days, t.min_keep) == ("yearly=3", 0, 2)
    assert config.settings(off)["OFFSITE_S3_RETENTION_RULES"] == "yearly=3"


def test_the_settings_files_read_as_bash_reads_them(tmp_path):
    """What install-backups writes, read without a shell, is what bash's source sets."""
    from aimms_ops.backup import install
    from aimms_ops.core import shellconf
    from tests.unit.test_backups_unit import _host

    text = install.conf_text(_host(backup_dir="/srv/it's here $HOME `x`"),
                             {"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///r d.sock"})
    (tmp_path / "c").write_text(text)
    got = shellconf.read(str(tmp_path / "c"))
    keys = sorted(got)
    script = f". {tmp_path / 'c'}; " + "; ".join(f'printf "%s\\0" "${k}"' for k in keys)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [got[k].encode() for k in keys]
    assert got["BACKUP_DIR"] == "/srv/it's here $HOME `x`"
    exported: set[str] = set()
    shellconf.parse(text, "c", exported)
    assert exported == {"PATH", "DOCKER_HOST"}
    with pytest.raises(shellconf.ConfError, match="line 2"):
        shellconf.parse("A=1\nrm -rf /\n")


_PARENT = """import subprocess, sys
from aimms_ops.core.lock import Lock
held = Lock(sys.argv[1], "restore").acquire(0)
child = subprocess.Popen(["sleep", "30"], pass_fds=(held.fileno(),))
print(child.pid, flush=True)
sys.stdin.read()
"""


def test_a_stage_given_the_lock_keeps_it_held_when_its_job_is_killed(tmp_path):
    """A restore killed with SIGKILL mid-stream: its stages still hold the cluster lock,
    so no backup dumps the cluster while psql goes on loading."""
    import signal

    path = tmp_path / LOCK_FILES["cluster"]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**SCRIPT_ENV, "PYTHONPATH": str(PROGRAM)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(30)
    try:
        with pytest.raises(LockBusy):
            Lock(str(path), "backup", shared=True).acquire(0)
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            Lock(str(path), "backup", shared=True).acquire(0).release()
            break
        except LockBusy:
            assert time.monotonic() < deadline, "the lock outlived the stage that held it"
            time.sleep(0.05)



def _program_copy(tmp_path: Path, sources: str | None) -> Path:
    """The zipapp in ``tmp_path`` with the folder beside it a bundle has, whose SOURCES
    file says ``sources`` (None: as built)."""
    from aimms_ops.host import bundle
    program = write_program(tmp_path)
    if sources is not None:
        (tmp_path / (bundle.PROGRAM + bundle.BESIDE) / bundle.SOURCES).write_text(sources)
    return program


def _cached(program: Path) -> list[Path]:
    return list((program.parent / (program.name + ".d")).rglob("__pycache__/*.pyc"))


def test_the_program_imports_from_the_folder_beside_it_when_it_holds_its_sources(tmp_path):
    """There its modules are compiled once and cached (a zipapp is compiled at every
    start); without the folder, or with other sources in it, the zipapp's own are used."""
    program = _program_copy(tmp_path / "same", None)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    run = subprocess.run([sys.executable, str(program), "list-backups", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert run.returncode == 0, run.stderr
    assert any(p.name.startswith("main.") for p in _cached(program))
    other = _program_copy(tmp_path / "other", "0" * 64)
    again = subprocess.run([sys.executable, str(other), "list-backups", str(tmp_path)],
                           capture_output=True, text=True, timeout=60, check=False, env=env)
    assert again.returncode == 0 and again.stdout == run.stdout, again.stderr
    assert not _cached(other)


def test_the_programs_children_run_the_zipapp_it_was_started_as(monkeypatch, tmp_path):
    """Its entry point names it in AIMMS_OPS_PROGRAM (as the scripts read it), also when
    its modules come from the folder beside it."""
    from aimms_ops.agent import hosttools
    program = _program_copy(tmp_path, None)
    monkeypatch.setenv("AIMMS_OPS_PROGRAM", str(program))
    assert hosttools._program()[1:] == [str(program)]
    monkeypatch.setenv("AIMMS_OPS_PROGRAM", str(tmp_path / "absent.pyz"))
    assert hosttools._program()[1:] == ["-m", "aimms_ops.agent"]  # these modules


def test_the_hosts_log_stays_utf8_whatever_a_line_carries(tmp_path):
    from aimms_ops.agent.job import Job

    log = tmp_path / "backups.log"
    job = Job("backup", str(log))
    name = b"caf\xe9 db".decode("utf-8", "surrogateescape")  # a name as os and psql give it
    job.log(f"database {name} refused: \ud800")
    text = log.read_bytes().decode("utf-8")  # strict: the log is UTF-8
    assert text.endswith(" database caf\\xe9 db refused: \\ud800\n"), text


def test_a_task_shows_what_a_host_log_line_says_and_any_other_line_whole(tmp_path):
    from aimms_ops.agent.job import Job
    from aimms_ops.monitor.runlog import text_of

    log = tmp_path / "backups.log"
    Job("offsite-sync", str(log)).log("uploaded 3 files")
    assert text_of(log.read_text().rstrip("\n")) == "uploaded 3 files"
    # What the host program printed itself (a traceback's lines) is not cut.
    for line in ("Traceback (most recent call last):", "NameError: name 'x' is not defined"):
        assert text_of(line) == line

"""Integration: host faults, each against every task it concerns.

For each fault (postgres stopped, the Docker daemon down, the backup dir full, missing,
impossible to create, not writable, the lock held by another run) every task of the
table either still works or ends with one line naming the cause and the fix, exit
!= 0, no traceback; a refused restore changes nothing. Each fault is made once for
its class and undone afterwards, so the sandbox is usable by the next test.

Covering a new task is adding rows; a row whose task `fab -l` does not list fails (a
renamed task must not take its rows out of the table unseen).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import faults
from .conftest import fab_error_line

pytestmark = pytest.mark.integration

OK = "ok"  # the task works despite the fault
CRITICAL = 2  # a monitoring task (status, doctor): the monitoring-plugin exit status
CRIT = "AIMMS-OPS CRITICAL - "  # fab status's line (what else it names comes after)


@dataclass
class Row:
    """What one task must do under a fault: work (exit 0), or end with exactly ``code``
    and an error line holding every one of ``expect``'s words. No row accepts any
    outcome: a failing row names its exit status."""

    task: str
    args: list[str]
    expect: object  # OK, or the words the error line must hold (cause, fix)
    changes_nothing: bool = False  # a refused restore: the data is as it was
    code: int | None = None  # the exact exit status (0 for OK; required otherwise)

    def __post_init__(self) -> None:
        if self.expect == OK:
            assert self.code in (None, 0), self.id
            self.code = 0
        elif self.code is None or self.code == 0:
            raise TypeError(f"row {self.id}: a failing row says its exit status (code=)")

    @property
    def id(self) -> str:
        return " ".join([self.task, *self.args]).replace("{name}", "NAME")


def _row_ids(rows: list[Row]) -> list[str]:
    return [r.id for r in rows]


@pytest.fixture(scope="module")
def small_backup(sandbox):
    """A backup of the (small) cluster to list, download and restore during the faults."""
    assert sandbox.fab("install-backups").returncode == 0
    proc = sandbox.fab("backup", "--label=faults")
    assert proc.returncode == 0, proc.stderr
    name = next(b["name"] for b in json.loads(sandbox.fab("list-backups", "--json").stdout)
                if b["location"] == "remote")
    return name


def _inventory(sandbox, tmp: Path, *, backup_dir: str | None = None,
               lock_timeout: int | None = None) -> Path:
    text = sandbox.inventory.read_text()
    if backup_dir is not None:
        text = text.replace(f"{sandbox.home}/postgres-backups", backup_dir)
    if lock_timeout is not None:
        text = text.replace("  aidset:\n", f"  aidset:\n    lock_timeout: {lock_timeout}\n", 1)
    inv = tmp / f"inv-{uuid.uuid4().hex[:8]}.yml"
    inv.write_text(text)
    return inv


@dataclass
class Fault:
    inventory: Path | None = None  # the inventory to run the tasks with (None: the sandbox's)
    data_checks: bool = True  # postgres answers, so data can be compared


def run_row(sandbox, fault: Fault, row: Row, name: str, tmp_path: Path) -> None:
    faults.require_task(sandbox, row.task)
    args = [a.replace("{name}", name).replace("{tmp}", str(tmp_path)) for a in row.args]
    before = sandbox.checksums() if row.changes_nothing and fault.data_checks else None
    backups_before = sandbox.sh("ls -1A ~/postgres-backups") if row.changes_nothing else None
    proc = sandbox.fab(row.task, *args, inventory=fault.inventory, timeout=300)
    assert proc.returncode == row.code, (proc.returncode, proc.stdout, proc.stderr)
    if row.expect == OK:
        assert "Traceback" not in proc.stderr + proc.stdout
    else:
        # A monitoring task's line may be its first line on stdout (fab status).
        line = faults.error_line(proc) if row.code == CRITICAL else fab_error_line(proc)
        shown = line + "\n" + proc.stdout
        for words in row.expect:  # type: ignore[attr-defined]
            assert words in shown, f"{words!r} not in: {line}"
    if before is not None:
        assert sandbox.checksums() == before
    if backups_before is not None:
        assert sandbox.sh("ls -1A ~/postgres-backups") == backups_before


COMPOSE = "cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml"

# --- postgres stopped ----------------------------------------------------------------------

POSTGRES_STOPPED = [
    Row("backup", [], ("is not running", "fab check names the command"), code=1),
    Row("restore", ["--file={name}", "--yes"], ("is not running", "start it"),
        changes_nothing=True, code=1),
    Row("check", [], ("check failed: postgres container",
                      "docker-compose -f /home/", " -p aimms-web up -d postgres"), code=2),
    Row("list-backups", [], OK),
    Row("download", ["--file={name}", "--dest={tmp}/dl"], OK),
    Row("prune", ["--dry-run"], OK),
    Row("install-backups", ["--dry-run"], OK),
    Row("logs", [], OK),
    Row("status", [], (CRIT, "postgres container: ", "is exited"), code=CRITICAL),
    Row("verify", ["--file={name}"], OK),  # the file's checks need no postgres
    Row("doctor", [], ("doctor: CRITICAL:", "postgres container", "accepting connections"),
        code=CRITICAL),
    Row("volumes", [], OK),
    Row("rebuild-volume", ["--file={name}", "--dry-run"], OK),  # what it is there for
]


@pytest.fixture(scope="class")
def postgres_stopped(sandbox, small_backup):
    sandbox.ssh(f"{COMPOSE} stop postgres")
    yield Fault(data_checks=False)
    sandbox.ssh(f"{COMPOSE} up -d postgres")
    sandbox.wait_ready()

class TestPostgresStopped:
    @pytest.fixture
    def fault(self, postgres_stopped):
        return postgres_stopped

    @pytest.mark.parametrize("row", POSTGRES_STOPPED, ids=_row_ids(POSTGRES_STOPPED))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        run_row(sandbox, fault, row, small_backup, tmp_path)


# --- the Docker daemon down ------------------------------------------------------------------

DOCKER_DOWN = [
    Row("backup", [], ("docker is not reachable", "start it"), code=1),
    Row("restore", ["--file={name}", "--yes"],
        ("docker is not reachable", "start the Docker daemon"), changes_nothing=True, code=1),
    Row("check", [], ("check failed: docker", "start the Docker daemon"), code=2),
    Row("list-backups", [], OK),
    Row("download", ["--file={name}", "--dest={tmp}/dl"], OK),
    Row("prune", ["--dry-run"], OK),
    Row("install-backups", ["--dry-run"], OK),
    Row("logs", [], OK),
    Row("status", [], (CRIT, "docker: ", "postgres container: no container"), code=CRITICAL),
    Row("verify", ["--file={name}"], OK),  # the file's checks run on the host, without docker
    Row("doctor", [], ("doctor: CRITICAL: docker", "postgres container"), code=CRITICAL),
    Row("volumes", [], ("docker is not reachable on aidset", "start the Docker daemon"), code=1),
    Row("rebuild-volume", ["--file={name}", "--dry-run"],
        ("refusing to rebuild: docker does not answer", "nothing was stopped or changed"),
        code=1),
]


@pytest.fixture(scope="class")
def docker_down(sandbox, small_backup):
    faults.stop_dockerd(sandbox)
    try:
        yield Fault(data_checks=False)
    finally:
        faults.start_sandbox(sandbox)

class TestDockerDown:
    @pytest.fixture
    def fault(self, docker_down):
        return docker_down

    @pytest.mark.parametrize("row", DOCKER_DOWN, ids=_row_ids(DOCKER_DOWN))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        run_row(sandbox, fault, row, small_backup, tmp_path)


# --- the backup dir full -------------------------------------------------------------------

BACKUP_DIR_FULL = [
    Row("backup", [], ("free", "space"), code=1),
    Row("restore", ["--file={name}", "--yes"],
        ("nothing was restored: the safety backup failed", "--no-safety-backup"),
        changes_nothing=True, code=1),
    Row("list-backups", [], OK),
    Row("download", ["--file={name}", "--dest={tmp}/dl"], OK),
    Row("prune", ["--yes"], OK),
    Row("check", [], OK),
    Row("status", [], (CRIT, "disk: only", "the next backup", "will not fit"),
        code=CRITICAL),
    Row("verify", ["--file={name}"], OK),  # it reads the file, writes nothing
]


@pytest.fixture(scope="class")
def backup_dir_full(sandbox, small_backup, tmp_path_factory):
    small = f"{sandbox.home}/full-backups"
    subprocess.run(["mkdir", "-p", small], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", small],
                   check=True)
    try:
        subprocess.run(["chown", f"{sandbox.user}:", small], check=True)
        src = f"~/postgres-backups/{small_backup}"
        sandbox.ssh(f"cp -p {src} {src}.sha256 {small}/ && "
                    f"(head -c 100000000 /dev/zero > {small}/filler || true)")
        inv = _inventory(sandbox, tmp_path_factory.mktemp("full"), backup_dir=small)
        yield Fault(inventory=inv)
    finally:
        subprocess.run(["umount", small], check=False)
        subprocess.run(["rmdir", small], check=False)

class TestBackupDirFull:
    @pytest.fixture
    def fault(self, backup_dir_full):
        return backup_dir_full

    @pytest.mark.parametrize("row", BACKUP_DIR_FULL, ids=_row_ids(BACKUP_DIR_FULL))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        run_row(sandbox, fault, row, small_backup, tmp_path)


# --- the backup dir missing, or impossible to create ---------------------------------------

BACKUP_DIR_MISSING = [
    Row("check", [], ("backup dir", "fab install-backups"), code=2),
    Row("list-backups", [], OK),
    Row("download", ["--file=latest", "--dest={tmp}/dl"], ("no backups on the host",
                                                            "fab backup"), code=1),
    Row("restore", ["--file=latest", "--yes"], ("no backups on the host", "fab backup"),
        changes_nothing=True, code=1),
    Row("status", [], (CRIT, "newest backup: backup dir", "does not exist"),
        code=CRITICAL),
    Row("verify", [], ("there are no backups on the host yet", "fab backup"), code=1),
    Row("backup", [], OK),  # it makes the dir (0700) and the backup
]


@pytest.fixture(scope="class")
def backup_dir_missing(sandbox, tmp_path_factory):
    where = f"{sandbox.home}/missing-backups-{uuid.uuid4().hex[:6]}"
    fault = Fault(inventory=_inventory(sandbox, tmp_path_factory.mktemp("missing"),
                                       backup_dir=where))
    fault.where = where  # type: ignore[attr-defined]
    yield fault
    sandbox.ssh(f"rm -rf {where}")

class TestBackupDirMissing:
    @pytest.fixture
    def fault(self, backup_dir_missing):
        return backup_dir_missing

    @pytest.mark.parametrize("row", BACKUP_DIR_MISSING, ids=_row_ids(BACKUP_DIR_MISSING))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        # Whatever ran before in this worker, the dir is missing when each row starts.
        sandbox.ssh(f"rm -rf {fault.where}")
        run_row(sandbox, fault, row, small_backup, tmp_path)
        if row.task == "backup":
            mode = sandbox.sh(f"stat -c %a {fault.where}").strip()
            assert mode == "700", "the backup dir the backup made is not 0700"


BACKUP_DIR_UNCREATABLE = [
    Row("backup", [], ("cannot create backup dir", "Permission denied", "create it for"), code=1),
    Row("restore", ["--file={tmp}/{name}", "--yes"],
        ("nothing was restored: the safety backup failed", "--no-safety-backup"),
        changes_nothing=True, code=1),
    Row("check", [], ("backup dir", "does not exist"), code=2),
    Row("list-backups", [], OK),
]


@pytest.fixture(scope="class")
def backup_dir_uncreatable(sandbox, tmp_path_factory):
    parent = tmp_path_factory.mktemp("root-owned")  # root's: the login user cannot write
    yield Fault(inventory=_inventory(sandbox, tmp_path_factory.mktemp("uncreatable"),
                                     backup_dir=f"{parent}/backups"))
    assert not (parent / "backups").exists()

class TestBackupDirUncreatable:
    @pytest.fixture
    def fault(self, backup_dir_uncreatable):
        return backup_dir_uncreatable

    @pytest.mark.parametrize("row", BACKUP_DIR_UNCREATABLE,
                             ids=_row_ids(BACKUP_DIR_UNCREATABLE))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        # The restore row restores a local copy of the backup: the host's dir is the fault.
        subprocess.run(["cp", f"{sandbox.home}/postgres-backups/{small_backup}", str(tmp_path)],
                       check=True)
        run_row(sandbox, fault, row, small_backup, tmp_path)


# --- the backup dir not writable -------------------------------------------------------------

BACKUP_DIR_READ_ONLY = [
    Row("backup", [], ("not writable", "chown it"), code=1),
    Row("restore", ["--file={name}", "--yes"],
        ("nothing was restored: the safety backup failed", "not writable"),
        changes_nothing=True, code=1),
    Row("prune", ["--yes"], ("not writable", "chown it"), code=1),
    Row("check", [], ("check failed: backup dir", "chown"), code=2),
    Row("list-backups", [], OK),
    Row("download", ["--file={name}", "--dest={tmp}/dl"], OK),
    # The next backup cannot be written: CRITICAL now, not when it fails tonight.
    Row("status", [], (CRIT, "backup dir: ", "not writable"), code=CRITICAL),
    Row("verify", ["--file={name}"], OK),  # it reads the file, writes nothing
]


@pytest.fixture(scope="class")
def backup_dir_not_writable(sandbox, small_backup, tmp_path_factory):
    where = f"{sandbox.home}/ro-backups"
    src = f"~/postgres-backups/{small_backup}"
    sandbox.ssh(f"rm -rf {where} && mkdir -p {where} && cp -p {src} {src}.sha256 {where}/ "
                f"&& chmod 500 {where}")
    yield Fault(inventory=_inventory(sandbox, tmp_path_factory.mktemp("ro"),
                                     backup_dir=where))
    sandbox.ssh(f"chmod 700 {where} && rm -rf {where}")

class TestBackupDirNotWritable:
    @pytest.fixture
    def fault(self, backup_dir_not_writable):
        return backup_dir_not_writable

    @pytest.mark.parametrize("row", BACKUP_DIR_READ_ONLY, ids=_row_ids(BACKUP_DIR_READ_ONLY))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        run_row(sandbox, fault, row, small_backup, tmp_path)


# --- the lock held by another run ------------------------------------------------------------

LOCK_HELD = [
    # A restore holds the cluster lock: backups and retention wait for it, naming it.
    Row("backup", [], ("a restore or rebuild of the cluster is still running", "restore pid"),
        code=1),
    Row("prune", ["--yes"], ("a restore or rebuild of the cluster is still running",
                             "restore pid"), code=1),
    Row("restore", ["--file={name}", "--yes"],
        ("nothing was restored: the safety backup failed",
         "a restore or rebuild of the cluster is still running"), changes_nothing=True, code=1),
    Row("restore", ["--file={name}", "--yes", "--no-safety-backup"],
        ("the cluster is busy", "restore pid", "nothing was restored"), changes_nothing=True,
        code=75),
    Row("list-backups", [], OK),
    Row("download", ["--file={name}", "--dest={tmp}/dl"], OK),
    Row("check", [], OK),
    Row("rebuild-volume", ["--file={name}", "--yes"],
        ("a restore is running on aidset", "restore pid", "nothing was changed"),
        changes_nothing=True, code=1),
]


@dataclass
class Holder:
    proc: subprocess.Popen
    pid: int  # the process on the host that holds the lock (under flock)


def _hold(sandbox, lock: str, seconds: int, what: str = "restore") -> Holder:
    """Hold a lock of the backup dir on the host, as another run would (its owner note too)."""
    note = f"~/postgres-backups/{lock}.owner.$$"
    proc = subprocess.Popen(
        ["ssh", "-F", str(sandbox.ssh_config), "aidset",
         f"exec flock ~/postgres-backups/{lock} sh -c 'echo \"{what} pid $$\" >{note}; "
         f"echo held $$; exec sleep {seconds}'"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    word, pid = proc.stdout.readline().split()
    assert word == "held"
    return Holder(proc, int(pid))


def _release(sandbox, holder: Holder) -> None:
    sandbox.ssh(f"kill {holder.pid} 2>/dev/null; true")
    holder.proc.wait(30)


@pytest.fixture(scope="class")
def lock_held(sandbox, small_backup, tmp_path_factory):
    holders = [_hold(sandbox, ".backup.lock", 600, "backup"),
               _hold(sandbox, ".cluster.lock", 600)]
    try:
        yield Fault(inventory=_inventory(sandbox, tmp_path_factory.mktemp("lock"),
                                         lock_timeout=1))
    finally:
        for h in holders:
            _release(sandbox, h)

class TestLockHeld:
    @pytest.fixture
    def fault(self, lock_held):
        return lock_held

    @pytest.mark.parametrize("row", LOCK_HELD, ids=_row_ids(LOCK_HELD))
    def test_task(self, sandbox, fault, small_backup, row, tmp_path):
        run_row(sandbox, fault, row, small_backup, tmp_path)


def _waiting_for(uid: int, lock: str) -> bool:
    """Whether a process of user ``uid`` waits for ``lock``: the host program taking it
    (its ``lock`` command, or a job of its own) with the lock file open."""
    for pid in (int(e) for e in os.listdir("/proc") if e.isdigit()):
        if faults._uid(pid) != uid or "aimms-ops.pyz" not in faults.cmdline(pid):
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/" + lock)
                   for fd in os.listdir(f"/proc/{pid}/fd")):
                return True
    return False


def test_a_restore_waits_for_the_one_before_it(sandbox, small_backup, tmp_path):
    """Within lock_timeout a second restore waits for the first one instead of failing:
    it is seen waiting for the lock while it is held, and restores once it is released."""
    want = sandbox.checksums()
    holder = _hold(sandbox, ".cluster.lock", 600)
    try:
        run = faults.start_fab(sandbox, "restore", f"--file={small_backup}", "--yes",
                               "--no-safety-backup",
                               inventory=_inventory(sandbox, tmp_path, lock_timeout=600))
        uid = int(subprocess.run(["id", "-u", sandbox.user], capture_output=True, text=True,
                                 check=True).stdout)
        faults.wait_until(lambda: _waiting_for(uid, ".cluster.lock")
                          or run.proc.poll() is not None, timeout=120)
        assert run.proc.poll() is None, "the restore ended instead of waiting for the lock"
    finally:
        _release(sandbox, holder)
    assert run.wait(300) == 0, run.stderr
    assert sandbox.checksums() == want
    # The wait was said as it began (what for, who holds it, up to how long), and its end.
    assert f"waiting for the cluster lock (restore pid {holder.pid}), up to 10m00s" \
        in run.stderr, run.stderr
    assert "waited " in run.stderr and " for the cluster lock (restore pid " in run.stderr


# --- the local download folder full ----------------------------------------------------------


def test_download_into_a_full_folder_refuses_before_it_starts(sandbox, small_backup, tmp_path):
    """The room it needs, and the room there is, said before a byte is written; the same
    download runs once there is room. (A disk that fills while the download writes is
    said to be full, and the .part kept to resume: tests/unit/test_openssh_unit.py.)"""
    dest = tmp_path / "small"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(dest)], check=True)
    try:
        proc = sandbox.fab("download", f"--file={small_backup}", f"--dest={dest}")
        assert proc.returncode != 0
        line = fab_error_line(proc)
        assert f"not enough space in {dest} for {small_backup}" in line, line
        assert " more, " in line and " is free" in line and "--dest" in line, line
        assert not list(dest.iterdir())
        subprocess.run(["mount", "-o", "remount,size=64m", str(dest)], check=True)
        rerun = sandbox.fab("download", f"--file={small_backup}", f"--dest={dest}")
        assert rerun.returncode == 0, rerun.stderr
        assert "verified" in rerun.stderr
    finally:
        subprocess.run(["umount", str(dest)], check=False)

"""Integration: a backup killed with SIGKILL is seen (issue 22, item 7).

The backup script is killed (``kill -9`` of the host script itself, on this sandbox
instance) while it dumps, and once just after it published its backup. ``fab status``
says the last backup died; the next run removes what the killed one left (its temporary
file, its lock notes) and closes again a database it had opened for the dump;
``fab backup`` reports what the host really published.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from aimms_ops.core import lock
from aimms_ops.core.lock import LOCK_FILES

from . import faults
from .conftest import fab_error_line
from .test_backup_coverage import allowconn, own_inventory

pytestmark = pytest.mark.integration

BIG = "killed_bulk"
CLOSED = "killed_closed"
ROWS = 600_000  # about 60 MB of dump: seconds to write, time to be killed in


@pytest.fixture(scope="module")
def big_cluster(sandbox):
    for db in (BIG, CLOSED):
        sandbox.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", "postgres")
        sandbox.psql(f"CREATE DATABASE {db}", "postgres")
    sandbox.psql("CREATE TABLE bulk (id int, body text); INSERT INTO bulk SELECT i, "
                 f"md5(i::text) || md5(random()::text) FROM generate_series(1, {ROWS}) i", BIG)
    yield
    for db in (BIG, CLOSED):
        sandbox.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", "postgres")


def _script_pid(d: Path) -> int | None:
    """The pid of the running backup script: the one its lock note names."""
    pids = lock.note_pids(str(d / LOCK_FILES["backup"]))
    return pids[0] if pids else None


def _dumping(sandbox, inv, here: Path) -> tuple[faults.Running, int | None]:
    """A fab backup started with CLOSED allowing no connections, once its script dumps
    (its temporary file is there); the run and the script's pid."""
    sandbox.psql(f"ALTER DATABASE {CLOSED} ALLOW_CONNECTIONS false", "postgres")
    run = faults.start_fab(sandbox, "backup", inventory=inv)
    faults.wait_until(lambda: any(here.glob(".aimms_postgres_*.tmp")) and _script_pid(here),
                      timeout=120, every=0.01, run=run)
    return run, _script_pid(here)


def _wait_lock_free(sandbox, d: str) -> None:
    """Wait until nothing holds the backup lock (the killed script's children let go)."""
    faults.wait_until(lambda: sandbox.ssh(f"flock -n {d}/.backup.lock true",
                                          check=False).returncode == 0, timeout=120, every=0.2)


def _status(sandbox, inv) -> dict:
    return json.loads(sandbox.fab("status", "--json", inventory=inv).stdout)


def test_a_backup_killed_while_it_dumps_is_seen_and_cleaned_up(sandbox, tmp_path,
                                                               big_cluster):
    inv, d = own_inventory(sandbox, tmp_path, "killed")
    here = Path(d)
    run, pid = _dumping(sandbox, inv, here)
    assert pid is not None and "backup-postgres.sh" in faults.cmdline(pid)
    assert allowconn(sandbox)[CLOSED] == "1"  # opened for the dump
    os.kill(pid, signal.SIGKILL)
    assert run.wait(300) != 0
    line = fab_error_line(run)
    assert "the backup script died" in line and "was not published" in line, line
    _wait_lock_free(sandbox, d)
    # What the killed run left: its temporary file, its lock notes, the database it opened.
    assert list(here.glob(".aimms_postgres_*.tmp"))
    assert (here / f".backup.lock.owner.{pid}").exists()
    assert (here / f".cluster.lock.owner.{pid}").exists()
    assert allowconn(sandbox)[CLOSED] == "1"
    status = _status(sandbox, inv)
    last = next(c for c in status["checks"] if c["name"] == "last run")
    assert last["state"] == "CRITICAL" and "last backup died" in last["detail"], last
    assert f"backup[{pid}]" in last["detail"]
    assert status["state"] == "CRITICAL" and "died" in status["summary"]
    assert status["last_backup_run"]["result"] == "died"

    # The next run cleans up after it, and closes the database again.
    again = sandbox.fab("backup", inventory=inv)
    assert again.returncode == 0, again.stderr
    assert not list(here.glob(".aimms_postgres_*.tmp"))
    assert not list(here.glob(f".*.lock.owner.{pid}"))
    assert not list(here.glob(".backup.allowconn"))
    assert allowconn(sandbox)[CLOSED] == "0"
    log = (here.parent / f"{here.name}.log").read_text()
    assert "removed what a killed run left" in log
    assert f"connections to database {CLOSED} closed again" in log
    last = next(c for c in _status(sandbox, inv)["checks"] if c["name"] == "last run")
    assert last["state"] == "OK", last
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_a_backup_killed_after_it_published_says_what_it_published(sandbox, tmp_path,
                                                                   big_cluster):
    hang = socket.socket()  # a monitor that accepts and never answers: the last ping waits
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    try:
        inv, d = own_inventory(sandbox, tmp_path, "killed-late", ping={
            "url": f"http://127.0.0.1:{hang.getsockname()[1]}/ping/x", "kind": "healthchecks",
            "timeout": 8})
        here = Path(d)
        logf = here.parent / f"{here.name}.log"
        run = faults.start_fab(sandbox, "backup", inventory=inv)
        pid: list[int] = []

        def published() -> bool:
            p = _script_pid(here)
            if p and not pid:
                pid.append(p)
            return logf.exists() and " RESULT ok " in logf.read_text()

        faults.wait_until(published, timeout=300, every=0.01, run=run)
        assert pid and faults.alive(pid[0])
        os.kill(pid[0], signal.SIGKILL)
        assert run.wait(300) != 0
    finally:
        hang.close()
    line = fab_error_line(run)
    name = next(f.name for f in here.glob("aimms_postgres_*.sql.gz"))
    assert f"failed after it published {name}" in line, line
    assert "nothing was published" not in run.stderr
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_a_backup_interrupted_while_it_dumps_closes_the_databases_it_opened(sandbox, tmp_path,
                                                                            big_cluster):
    inv, d = own_inventory(sandbox, tmp_path, "interrupted")
    here = Path(d)
    run, pid = _dumping(sandbox, inv, here)
    assert pid is not None and allowconn(sandbox)[CLOSED] == "1"
    os.kill(pid, signal.SIGTERM)
    assert run.wait(300) != 0
    assert "interrupted" in fab_error_line(run)
    _wait_lock_free(sandbox, d)
    # Its own trap closed the database again and removed its files, at once.
    assert allowconn(sandbox)[CLOSED] == "0"
    assert not list(here.glob(".backup.allowconn")) and not list(here.glob(".*.tmp"))
    assert not list(here.glob(f".*.lock.owner.{pid}"))
    log = (here.parent / f"{here.name}.log").read_text()
    assert "RESULT failed: interrupted" in log
    assert f"connections to database {CLOSED} closed again" in log
    sandbox.ssh(f"rm -rf {d} {d}.log")

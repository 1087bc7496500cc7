"""Integration: a backup never leaves a database out silently (issue 22, item 4).

pg_dumpall skips every database whose ``datallowconn`` is false. The backup allows
connections on each for the dump only (logged by name), closes them again, and ends the
dump with the statements that close them on a restore; the restore's side copies
(``aimms_ops_old_*``, ``aimms_ops_new_*``) are neither dumped nor touched. ``fab verify``
and ``fab status`` compare the backup's databases with the live cluster's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from .conftest import fab_error_line

pytestmark = pytest.mark.integration

CLOSED = "cov_closed"
SPACED = "zz cov closed"  # sorts last: the dump's last \connect is to it
SIDE = "aimms_ops_old_cov"
LATER = "cov_created_later"
ALL = (CLOSED, SPACED, SIDE, LATER)


def own_inventory(sandbox, tmp_path: Path, tag: str, **changes) -> tuple[Path, str]:
    """An inventory like the sandbox's with a backup dir and log of its own; (path, dir)."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    h = data["hosts"]["aidset"]
    d = f"{sandbox.home}/{tag}-backups"
    h["backup_dir"], h["log_file"] = d, f"{d}.log"
    h.update(changes)
    p = tmp_path / f"inv-{tag}.yml"
    p.write_text(yaml.safe_dump(data))
    sandbox.ssh(f"rm -rf {d} {d}.log && mkdir -m 700 {d}")
    return p, d


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def allowconn(sandbox) -> dict[str, str]:
    out = sandbox.psql("SELECT datname || '|' || datallowconn::int FROM pg_database", "postgres")
    return dict(line.rsplit("|", 1) for line in out.splitlines())


def drop_all(sandbox) -> None:
    for db in ALL:
        sandbox.psql(f"DROP DATABASE IF EXISTS {q(db)} WITH (FORCE)", "postgres")


@pytest.fixture
def closed_dbs(sandbox):
    drop_all(sandbox)
    for db in (CLOSED, SPACED, SIDE):
        sandbox.psql(f"CREATE DATABASE {q(db)}", "postgres")
    sandbox.psql("CREATE TABLE kept (id int); INSERT INTO kept SELECT generate_series(1, 7)",
                 CLOSED)
    for db in (CLOSED, SPACED, SIDE):
        sandbox.psql(f"ALTER DATABASE {q(db)} ALLOW_CONNECTIONS false", "postgres")
    yield
    drop_all(sandbox)


def test_closed_databases_are_backed_up_restored_closed_and_compared(sandbox, tmp_path,
                                                                      closed_dbs):
    inv, d = own_inventory(sandbox, tmp_path, "coverage")
    proc = sandbox.fab("backup", inventory=inv)
    assert proc.returncode == 0, proc.stderr
    name = next(ln.split()[2] for ln in proc.stderr.splitlines() if " RESULT ok " in ln)
    # Logged by name, opened for the dump only, closed again; the side copy left alone.
    log = sandbox.sh(f"cat {d}.log")
    for shown in (CLOSED, q(SPACED)):
        assert f"allowing connections to database {shown} for the dump only" in log, log
        assert f"connections to database {shown} closed again" in log, log
    assert SIDE not in log
    states = allowconn(sandbox)
    assert (states[CLOSED], states[SPACED], states[SIDE]) == ("0", "0", "0"), states
    # The dump holds both closed databases, not the side copy (quick verify reads it).
    report = json.loads(sandbox.fab("verify", f"--file={name}", "--json", inventory=inv).stdout)
    held = {db["name"] for db in report["databases"]}
    assert {CLOSED, SPACED} <= held and SIDE not in held, held
    coverage = next(c for c in report["checks"] if c["name"] == "databases")
    assert coverage["state"] == "OK", coverage
    # The trial restore holds them too (it failed them as missing when they came back closed).
    deep = sandbox.fab("verify", f"--file={name}", "--deep", "--json", inventory=inv)
    assert deep.returncode == 0, deep.stdout + deep.stderr
    assert {CLOSED, SPACED} <= {db["name"] for db in json.loads(deep.stdout)["databases"]}

    # A restore brings them back, still allowing no connections, with their rows.
    for db in (CLOSED, SPACED):
        sandbox.psql(f"DROP DATABASE {q(db)}", "postgres")
    restored = sandbox.fab("restore", f"--file={name}", "--yes", inventory=inv, timeout=900)
    assert restored.returncode == 0, restored.stderr
    states = allowconn(sandbox)
    assert (states[CLOSED], states[SPACED]) == ("0", "0"), states
    # One database restored alone comes back closed too.
    sandbox.psql(f"ALTER DATABASE {q(SPACED)} ALLOW_CONNECTIONS true", "postgres")
    one = sandbox.fab("restore", f"--file={name}", f"--database={SPACED}", "--yes",
                      "--no-safety-backup", inventory=inv, timeout=900)
    assert one.returncode == 0, one.stderr
    assert allowconn(sandbox)[SPACED] == "0"
    sandbox.psql(f"ALTER DATABASE {CLOSED} ALLOW_CONNECTIONS true", "postgres")
    assert sandbox.psql("SELECT count(*) FROM kept", CLOSED) == "7"
    sandbox.psql(f"ALTER DATABASE {CLOSED} ALLOW_CONNECTIONS false", "postgres")

    # A database created after the backup: status and verify name it.
    sandbox.psql(f"CREATE DATABASE {LATER}", "postgres")
    status = json.loads(sandbox.fab("status", "--json", inventory=inv).stdout)
    check = next(c for c in status["checks"] if c["name"] == "databases")
    assert check["state"] == "WARNING" and LATER in check["detail"], check
    assert status["state"] in ("WARNING", "CRITICAL")
    assert SIDE not in check["detail"] and "template0" not in check["detail"]
    newest = status["newest_backup"]["name"]  # the pre-restore safety copy, or the backup
    assert newest in check["detail"]
    report = json.loads(sandbox.fab("verify", f"--file={name}", "--json", inventory=inv).stdout)
    coverage = next(c for c in report["checks"] if c["name"] == "databases")
    assert coverage["state"] == "WARNING" and LATER in coverage["detail"], coverage
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_a_database_name_with_a_line_break_fails_the_backup_naming_it(sandbox):
    """pg_dumpall refuses such a name and says only its last line: the backup fails
    first, naming the database whole, and publishes nothing."""
    assert sandbox.fab("install-backups").returncode == 0
    name = "two\nlines"
    sandbox.psql('DROP DATABASE IF EXISTS "two\nlines"; CREATE DATABASE "two\nlines"',
                 "postgres")
    try:
        before = sandbox.sh(f"ls {sandbox.home}/postgres-backups")
        proc = sandbox.fab("backup")
        assert proc.returncode != 0
        line = fab_error_line(proc)
        assert "two\\nlines" in line and "line break" in line, line
        assert sandbox.sh(f"ls {sandbox.home}/postgres-backups") == before
    finally:
        sandbox.psql(f'DROP DATABASE IF EXISTS "{name}"', "postgres")


def test_the_backup_drops_what_restores_set_aside_longer_than_they_are_kept(sandbox, tmp_path):
    """A database a restore set aside KEEP_REPLACED_DAYS ago and more is dropped by the
    next backup (logged); one set aside since is kept; neither is dumped."""
    from aimms_ops.dump.beside import KEEP_REPLACED_DAYS, REPLACED_SETTING

    assert sandbox.fab("install-backups").returncode == 0
    inv, d = own_inventory(sandbox, tmp_path, "expiry")
    old_stamp = time.strftime("%Y%m%d_%H%M%S",
                              time.gmtime(time.time() - (KEEP_REPLACED_DAYS + 1) * 86400))
    new_stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(time.time() - 3600))
    old, new = f"aimms_ops_old_{old_stamp}_covexp", f"aimms_ops_old_{new_stamp}_covexp"
    try:
        for name, stamp in ((old, old_stamp), (new, new_stamp)):
            sandbox.psql(f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; "
                         f"ALTER DATABASE {name} SET {REPLACED_SETTING} = "
                         f"'{b'cov_gone'.hex()} {stamp} f t'", "postgres")
        proc = sandbox.fab("backup", inventory=inv, timeout=900)
        assert proc.returncode == 0, proc.stderr
        assert f"removed {old} (cov_gone before a restore of {old_stamp}, kept " \
               f"{KEEP_REPLACED_DAYS} days)" in sandbox.sh(f"cat {d}.log")
        left = sandbox.psql("SELECT datname FROM pg_database WHERE datname LIKE "
                            "'aimms_ops_old_%_covexp'", "postgres").split()
        assert left == [new]
        databases = next(ln for ln in sandbox.sh(f"cat {d}.log").splitlines()
                         if " DATABASES " in ln)
        assert new.encode().hex() not in databases and old.encode().hex() not in databases
    finally:
        for name in (old, new):
            sandbox.psql(f"DROP DATABASE IF EXISTS {name}", "postgres")
        sandbox.ssh(f"rm -rf {d} {d}.log")

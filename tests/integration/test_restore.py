"""Integration: fab restore against the sandbox, proved by per-table checksums and pg_dumpall."""

from __future__ import annotations

import gzip
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from .conftest import dump_difference, fab_error_line

pytestmark = pytest.mark.integration

CHANGE = """
UPDATE orders SET total = total + 1 WHERE id % 7 = 0;
DELETE FROM customers WHERE id IN (SELECT id FROM customers ORDER BY id DESC LIMIT 3)
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id);
INSERT INTO audit_log SELECT * FROM audit_log LIMIT 5;
CREATE TABLE IF NOT EXISTS added_after_backup (x int);
SELECT setval('orders_id_seq', 1);
"""


@pytest.fixture(scope="module")
def ready(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    return sandbox


def _backup(sandbox) -> dict:
    proc = sandbox.fab("backup")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(sandbox.fab("list-backups", "--json").stdout)
    return next(b for b in data if b["location"] == "remote")


def test_restore_local_file_onto_live_cluster_is_exact(ready, tmp_path):
    sandbox = ready
    b = _backup(sandbox)
    want = sandbox.checksums()
    want_dump = sandbox.dumpall()
    assert sandbox.fab("download", f"--file={b['name']}", f"--dest={tmp_path}").returncode == 0
    sandbox.psql(CHANGE)
    assert sandbox.checksums() != want
    session = sandbox.app_session()
    try:
        proc = sandbox.fab("restore", f"--file={tmp_path / b['name']}", "--yes")
    finally:
        session.kill()
    assert proc.returncode == 0, proc.stderr
    assert "public.orders" in proc.stdout
    # Every database of the backup (a killed run of another test may have left more).
    held = json.loads(sandbox.fab("verify", f"--file={b['name']}", "--json").stdout)
    names = [db["name"] for db in held["databases"]]
    assert {"template1", "aimms_web", "postgres"} <= set(names)
    assert f"restored {', '.join(names)} on aidset" in " ".join(proc.stdout.split())
    assert sandbox.checksums() == want
    got = sandbox.dumpall()
    assert got == want_dump, dump_difference(got, want_dump)
    # The safety backup holds the changed state.
    data = json.loads(sandbox.fab("list-backups", "--json").stdout)
    assert any(x["name"].endswith("_pre-restore.sql.gz") for x in data)


def test_restore_remote_name_is_exact(ready):
    sandbox = ready
    b = _backup(sandbox)
    want = sandbox.checksums()
    want_dump = sandbox.dumpall()
    sandbox.psql(CHANGE)
    proc = sandbox.fab("restore", f"--file={b['name']}", "--yes", "--no-safety-backup")
    assert proc.returncode == 0, proc.stderr
    assert sandbox.checksums() == want
    got = sandbox.dumpall()
    assert got == want_dump, dump_difference(got, want_dump)


def test_restore_of_a_plain_pg_dumpall_gzip_dump(ready, tmp_path):
    """Dumps made the old way (pg_dumpall | gzip, no .sha256) are accepted and exact."""
    sandbox = ready
    local = tmp_path / "aimms_postgres_20250101_000000.sql.gz"
    raw = sandbox.in_postgres("pg_dumpall -U postgres").stdout
    local.write_bytes(gzip.compress(raw))
    want = sandbox.checksums()
    sandbox.psql(CHANGE)
    proc = sandbox.fab("restore", f"--file={local}", "--yes", "--no-safety-backup")
    assert proc.returncode == 0, proc.stderr
    assert "no .sha256" in proc.stdout
    assert sandbox.checksums() == want


def test_restore_one_database_leaves_the_others_alone(ready, tmp_path):
    sandbox = ready
    sandbox.psql("DROP DATABASE IF EXISTS other_db WITH (FORCE)", "postgres")
    sandbox.psql("CREATE DATABASE other_db OWNER aimms_user", "postgres")
    try:
        sandbox.psql("CREATE TABLE notes (id serial primary key, body text);"
                     "INSERT INTO notes (body) SELECT md5(i::text) FROM generate_series(1, 50) i;",
                     "other_db")
        b = _backup(sandbox)
        want_web = sandbox.checksums()
        sandbox.psql(CHANGE)
        sandbox.psql("UPDATE notes SET body = 'changed later' WHERE id < 10;", "other_db")
        other_after_change = sandbox.checksums("other_db")
        unknown = sandbox.fab("restore", f"--file={b['name']}", "--database=nope", "--yes")
        assert unknown.returncode != 0
        line = fab_error_line(unknown)
        assert "no database 'nope'" in line and "aimms_web" in line and "other_db" in line
        proc = sandbox.fab("restore", f"--file={b['name']}", "--database=aimms_web", "--yes",
                           "--no-safety-backup")
        assert proc.returncode == 0, proc.stderr
        assert sandbox.checksums() == want_web
        assert sandbox.checksums("other_db") == other_after_change
    finally:
        sandbox.psql("DROP DATABASE IF EXISTS other_db WITH (FORCE)", "postgres")


def _damaged(kind: str, good: Path, tmp_path: Path) -> Path:
    data = good.read_bytes()
    name = "aimms_postgres_20250101_000000.sql.gz"
    out = tmp_path / kind / name
    out.parent.mkdir()
    if kind == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif kind == "sha-mismatch":
        out.write_bytes(data)
        (out.parent / (name + ".sha256")).write_text("0" * 64 + f"  {name}\n")
    elif kind == "not-a-dump":
        out.write_bytes(gzip.compress(b"hello\nthis is not a dump\n" * 1000))
    elif kind == "cut-before-marker":
        text = gzip.decompress(data)
        out.write_bytes(gzip.compress(text[: text.rindex(b"-- PostgreSQL database cluster")]))
    elif kind == "missing":
        return out
    return out


@pytest.mark.parametrize("kind, message", [
    ("truncated", "damaged or truncated"),
    ("sha-mismatch", "sha256 mismatch"),
    ("not-a-dump", "not a pg_dumpall dump"),
    ("cut-before-marker", "completion marker is missing"),
    ("missing", "no such file"),
])
def test_bad_dumps_are_refused_before_anything_is_touched(ready, tmp_path, kind, message):
    sandbox = ready
    b = _backup(sandbox)
    good = tmp_path / b["name"]
    assert sandbox.fab("download", f"--file={b['name']}", f"--dest={tmp_path}").returncode == 0
    bad = _damaged(kind, good, tmp_path)
    sandbox.psql("CREATE TABLE IF NOT EXISTS marker_table (x int)")
    before = sandbox.checksums()
    backups_before = sandbox.sh("ls ~/postgres-backups")
    proc = sandbox.fab("restore", f"--file={bad}", "--yes")
    assert proc.returncode != 0
    assert message in fab_error_line(proc)
    assert sandbox.checksums() == before
    assert sandbox.sh("ls ~/postgres-backups") == backups_before  # no safety backup either
    sandbox.psql("DROP TABLE marker_table")


def test_a_remote_damaged_backup_is_refused(ready):
    sandbox = ready
    b = _backup(sandbox)
    bad = "aimms_postgres_20250102_000000_damaged.sql.gz"
    sandbox.ssh(f"cd ~/postgres-backups && head -c 1000 {b['name']} > {bad}")
    try:
        before = sandbox.checksums()
        proc = sandbox.fab("restore", f"--file={bad}", "--yes")
        assert proc.returncode != 0
        assert "damaged or truncated" in fab_error_line(proc)
        assert sandbox.checksums() == before
    finally:
        sandbox.ssh(f"rm -f ~/postgres-backups/{bad}")


def test_sql_error_in_the_middle_stops_psql_and_names_the_line(ready, tmp_path):
    sandbox = ready
    text = sandbox.in_postgres("pg_dumpall -U postgres").stdout
    lines = text.split(b"\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith(b"CREATE TABLE public.orders"))
    lines.insert(at, b"THIS IS NOT SQL;")
    dump = tmp_path / "broken.sql"
    dump.write_bytes(b"\n".join(lines))
    proc = sandbox.fab("restore", f"--file={dump}", "--yes", "--no-safety-backup")
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert f"line {at + 1} of the dump" in line, line
    assert "syntax error" in line
    # Put the cluster back for the tests that follow.
    ok = sandbox.fab("restore", "--file=latest", "--yes", "--no-safety-backup")
    assert ok.returncode == 0, ok.stderr


def test_non_interactive_without_yes_refuses_and_changes_nothing(ready):
    sandbox = ready
    b = _backup(sandbox)
    sandbox.psql("CREATE TABLE IF NOT EXISTS marker_table (x int)")
    before = sandbox.checksums()
    listing = sandbox.sh("ls ~/postgres-backups")
    proc = sandbox.fab("restore", f"--file={b['name']}")
    assert proc.returncode != 0
    assert "--yes" in fab_error_line(proc)
    assert "restore plan" in proc.stdout
    assert sandbox.checksums() == before
    assert sandbox.sh("ls ~/postgres-backups") == listing
    sandbox.psql("DROP TABLE marker_table")


def test_wrong_confirmation_refuses(ready):
    """A terminal that types the wrong host name: nothing changes."""
    sandbox = ready
    b = _backup(sandbox)
    before = sandbox.checksums()
    script = (f"AIMMS_OPS_INVENTORY={shlex.quote(str(sandbox.inventory))} "
              f"{shlex.quote(str(Path(__file__).resolve().parents[2] / '.venv/bin/fab'))} "
              f"restore --file={b['name']}")
    proc = subprocess.run(["script", "-qec", script, "/dev/null"], input="wrong-host\n",
                          text=True, capture_output=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert "Type aidset to restore" in proc.stdout
    assert "not confirmed" in proc.stdout
    assert sandbox.checksums() == before


@pytest.mark.parametrize("value", ["-1", "a b", "x;touch /tmp/PWNED", "$(touch /tmp/PWNED)"])
def test_database_names_the_dump_does_not_hold_are_refused(ready, value):
    Path("/tmp/PWNED").unlink(missing_ok=True)
    proc = ready.fab("restore", "--file=latest", f"--database={value}", "--yes")
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert f"the dump holds no database {value!r}; it holds: " in line
    assert "'aimms_web'" in line
    assert not Path("/tmp/PWNED").exists()

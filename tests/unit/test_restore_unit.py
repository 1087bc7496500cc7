"""Pure parts of restore: inspection of a local dump, the plan's words, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from aimms_ops import restore
from aimms_ops.host import bundle
from aimms_ops.restore import source as dumpsource

DUMP = (Path(__file__).parent / "data" / "cluster-dump.sql").read_text()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_inspect_local_good_gz_lists_databases(tmp_path):
    p = _write(tmp_path, "d.sql.gz", gzip.compress(DUMP.encode()))
    info = dumpsource.inspect_local(p)
    assert info.ok, info.problems
    assert info.databases == ("template1", "My DB", "aimms_web", "postgres")
    assert info.format == "gz" and info.sha256_recorded is None


def test_inspect_local_multi_member_gzip(tmp_path):
    half = len(DUMP) // 2
    data = gzip.compress(DUMP[:half].encode()) + gzip.compress(DUMP[half:].encode())
    info = dumpsource.inspect_local(_write(tmp_path, "d.sql.gz", data))
    assert info.ok, info.problems


@pytest.mark.parametrize("make, problem", [
    (lambda: gzip.compress(DUMP.encode())[:-20], "damaged or truncated"),
    (lambda: b"not gzip at all", "damaged or truncated"),
    (lambda: gzip.compress(b"just text\n"), "not a pg_dumpall dump"),
    (lambda: gzip.compress(DUMP.split("-- PostgreSQL database cluster dump complete")[0]
                           .encode()), "completion marker is missing"),
    (lambda: b"", "empty"),
])
def test_inspect_local_refusals(tmp_path, make, problem):
    info = dumpsource.inspect_local(_write(tmp_path, "d.sql.gz", make()))
    assert not info.ok
    assert any(problem in p for p in info.problems), info.problems


def test_inspect_local_checks_recorded_sha(tmp_path):
    p = _write(tmp_path, "d.sql.gz", gzip.compress(DUMP.encode()))
    (tmp_path / "d.sql.gz.sha256").write_text("f" * 64 + "  d.sql.gz\n")
    info = dumpsource.inspect_local(p)
    assert any("sha256 mismatch" in x for x in info.problems)


def test_inspect_plain_sql(tmp_path):
    info = dumpsource.inspect_local(_write(tmp_path, "d.sql", DUMP.encode()))
    assert info.ok and info.format == "plain"


@pytest.mark.parametrize("stderr, expected", [
    # Two blocks inserted before the failing line (3 and 17 lines): taken off again.
    ("aimms-ops: inserted 17 lines after line 15\naimms-ops: inserted 3 lines after line 40\n"
     "psql:<stdin>:100: ERROR:  syntax error at or near \"X\"\n"
     "aimms-ops: status 141 141 141 3\n",
     'psql stopped at line 80 of the dump: ERROR: syntax error at or near "X"'),
    # A failure inside an inserted block says so, and where it stands in the dump.
    ("aimms-ops: inserted 17 lines after line 15\npsql:<stdin>:20: ERROR:  boom\n",
     "psql stopped in what aimms-ops inserted after line 15 of the dump: ERROR: boom"),
    # A message that spans lines (a name with a newline) is kept whole, on one line.
    ('psql:<stdin>:7: ERROR:  role "report\nreader" does not exist\naimms-ops: status 0 0 0 3\n',
     'psql stopped at line 7 of the dump: ERROR: role "report\\nreader" does not exist'),
    ("psql:<stdin>:12: ERROR:  relation \"t\" already exists\n",
     'psql stopped at line 12 of the dump: ERROR: relation "t" already exists'),
    ("aimms-ops: the postgres container of compose project p is not running\n",
     "the postgres container of compose project p is not running"),
    ("aimms-ops: status 0 1 0 0\n", "decompressing exited 1"),
    # The database a failing line is in is named (the filter says where each starts).
    (f"aimms-ops: database {b'app'.hex()} from line 10\naimms-ops: database "
     f"{b'a b'.hex()} from line 50\npsql:<stdin>:60: ERROR:  boom\n",
     "psql stopped at line 60 of the dump, in database 'a b': ERROR: boom"),
    # A failed swap says so before what it did to undo it.
    ("aimms-ops: status 0 0 0 0\naimms-ops: ended 1 session(s) on the databases being "
     "replaced\naimms-ops: swap failed: ERROR:  x\naimms-ops: the live cluster is as it was",
     "swap failed: ERROR:  x"),
    # psql that cannot start says why, not only its exit status.
    ('psql: error: connection to server on socket "/run/x" failed: FATAL:  database "q" does '
     'not exist\naimms-ops: status 141 141 141 2\n',
     'psql: error: connection to server on socket "/run/x" failed: FATAL:  database "q" '
     'does not exist'),
])
def test_explain_failure(stderr, expected):
    assert restore.explain_failure(stderr) == expected


def test_restore_plan_holds_the_exact_commands_it_sends():
    from aimms_ops.inventory import loader as inventory

    host = inventory.load(Path(__file__).resolve().parents[2] / "inventory.yml").host(None)
    remote = dumpsource.DumpInfo(f"{host.backup_dir}/b.sql.gz", "remote", 10, "gz", "x", None,
                                 ("template1", "My DB", "postgres"))
    stream, *estimates = restore.restore_commands(host, remote, "My DB", lock=True)
    args = (host.compose.project, host.compose.postgres_service, host.postgres.superuser, "gz",
            remote.source, "4d79204442", restore.cluster_lock(host), str(host.lock_timeout),
            "keep", "")
    assert stream.argv == ("restore-stream.sh", *args) and stream.stdin_file == ""
    assert stream.line == bundle.script_command("restore-stream.sh", args)
    # One database: only its estimates; the container is found on the host.
    (est,) = estimates
    assert est.about == "My DB" and est.script == "postgres-exec.sh"
    assert est.argv[-1] == "dbname='My DB'" and "ANALYZE" in est.argv[-3]
    # --as: the section of "My DB" restored as a new database, whose estimates are read.
    stream, est = restore.restore_commands(host, remote, "My DB", lock=True, as_name="copy")
    assert stream.argv[-2:] == ("keep", b"copy".hex()) and est.about == "copy"
    # The whole cluster: every database in one command, in the dump's order.
    _, whole = restore.restore_commands(host, remote, None, lock=True)
    assert whole.argv[-3:] == ("dbname='template1'", "dbname='My DB'", "dbname='postgres'")

    local = dumpsource.DumpInfo("/tmp/b.sql.gz", "local", 10, "gz", "x", None, ("postgres",))
    stream, _ = restore.restore_commands(host, local, None, lock=False)
    assert stream.argv[5:] == ("-", "", "", str(host.lock_timeout), "drop", "")
    assert stream.stdin_file == "/tmp/b.sql.gz" and "< /tmp/b.sql.gz" in stream.shown


def test_estimates_are_read_for_each_database_in_order():
    out = ("database=0\npublic.t=3\ndatabase=1\npublic.t=7\ns.x=0\ndatabase=2\n"
           "database=3\n")  # the third database's psql failed; no fourth database
    assert restore.parse_estimates(out, ("a", "b", "c")) == [
        restore.TableRows("a", "public.t", 3), restore.TableRows("b", "public.t", 7),
        restore.TableRows("b", "s.x", 0)]

"""Pure parts of restore: inspection of a local dump, the plan's words, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from aimms_ops import restore
from aimms_ops.core import events
from aimms_ops.host import bundle
from aimms_ops.host import events as host_events
from aimms_ops.restore import source as dumpsource
from aimms_ops.restore.execute import StreamResult

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


def _said(*found: tuple) -> str:
    """The stream's stdout: an event (KIND, FIELDS) for each of ``found``."""
    return "".join(events.line(kind, **fields) + "\n" for kind, fields in found)


INSERTED_17 = ("inserted", {"text": "inserted 17 lines after line 15", "after": 15,
                            "lines": 17})


@pytest.mark.parametrize("stderr, stdout, expected", [
    # Two blocks inserted before the failing line (3 and 17 lines): taken off again.
    ("psql:<stdin>:100: ERROR:  syntax error at or near \"X\"\n",
     _said(INSERTED_17, ("inserted", {"after": 40, "lines": 3}),
           ("stages", {"status": [141, 141, 141, 3]})),
     'psql stopped at line 80 of the dump: ERROR: syntax error at or near "X"'),
    # A failure inside an inserted block says so, and where it stands in the dump.
    ("psql:<stdin>:20: ERROR:  boom\n", _said(INSERTED_17),
     "psql stopped in what aimms-ops inserted after line 15 of the dump: ERROR: boom"),
    # A message that spans lines (a name with a newline) is kept whole, on one line, and
    # so are psql's DETAIL and HINT; what the stream said is never taken for its words.
    ('psql:<stdin>:7: ERROR:  role "report\nreader" does not exist\nDETAIL:  x=y\n',
     _said(("stages", {"status": [0, 0, 0, 3]}), ("undone", {"text": "the live cluster "
                                                             "is as it was"})),
     'psql stopped at line 7 of the dump: ERROR: role "report\\nreader" does not exist\\n'
     'DETAIL:  x=y'),
    ("psql:<stdin>:12: ERROR:  relation \"t\" already exists\n", "",
     'psql stopped at line 12 of the dump: ERROR: relation "t" already exists'),
    ("", _said(("error", {"text": "the postgres container of compose project p is not "
                                  "running"})),
     "the postgres container of compose project p is not running"),
    ("", _said(("stages", {"status": [0, 1, 0, 0]})), "decompressing exited 1"),
    # The database a failing line is in is named (the filter says where each starts),
    # a name that is not UTF-8 too.
    ("psql:<stdin>:60: ERROR:  boom\n",
     _said(("section", {"database": "app", "line": 10}),
           ("section", {"database": "a b", "line": 50}),
           ("section", {"database": "later", "line": 70})),
     "psql stopped at line 60 of the dump, in database 'a b': ERROR: boom"),
    ("psql:<stdin>:60: ERROR:  boom\n",
     _said(("section", {"database": b"caf\xe9".decode("utf-8", "surrogateescape"),
                        "line": 50})),
     "psql stopped at line 60 of the dump, in database 'caf\\xe9': ERROR: boom"),
    # A failed swap says so, not what it did to undo it.
    ("", _said(("stages", {"status": [0, 0, 0, 0]}),
               ("note", {"text": "ended 1 session(s) on the databases being replaced"}),
               ("error", {"text": "swap failed: ERROR:  x"}),
               ("error", {"text": "discard failed: y"}),
               ("undone", {"text": "the live cluster is as it was"})),
     "swap failed: ERROR:  x"),
    # psql that cannot start says why, not only its exit status.
    ('psql: error: connection to server on socket "/run/x" failed: FATAL:  database "q" does '
     'not exist\n', _said(("stages", {"status": [141, 141, 141, 2]}),
                          ("note", {"text": "psql stopped reading the restore stream"})),
     'psql: error: connection to server on socket "/run/x" failed: FATAL:  database "q" '
     'does not exist'),
    # A newer host program's events and fields are ignored; nothing at all says so.
    ("", _said(("stages", {"status": [0, 0, 0, 0], "seconds": 3}), ("new-kind", {})),
     "every stage ended well"),
    ("", "", "no message"),
    ("docker: something else\n", "", "docker: something else"),
])
def test_explain_failure(stderr, stdout, expected):
    assert restore.explain_failure(stderr, host_events.parse(stdout)) == expected


def test_the_databases_a_restore_replaced_come_from_its_events():
    odd = b"caf\xe9\n".decode("utf-8", "surrogateescape")
    found = host_events.parse(_said(
        ("replaced", {"text": "replaced aimms_web", "database": "aimms_web",
                      "kept_as": "aimms_ops_old_1"}),
        ("replaced", {"database": odd, "kept_as": "aimms_ops_old_2"}), ("note", {})))
    result = StreamResult(1.0, "", found)
    assert result.aside == {"aimms_web": "aimms_ops_old_1", "caf\\xe9\\n": "aimms_ops_old_2"}


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
    # One database: its rows, then its ANALYZE left running in the container (docker exec
    # -d); the container is found on the host.
    est, analyze = estimates
    assert est.about == analyze.about == "My DB"
    assert est.script == analyze.script == "postgres-exec.sh"
    assert est.argv[-1] == analyze.argv[-1] == "dbname='My DB'"
    assert "ANALYZE" not in est.argv[-3] and "n_live_tup" in est.argv[-3]
    assert analyze.argv[1] == "--detach" and "-c ANALYZE" in analyze.argv[-4]
    assert est.reads == "estimates" and analyze.reads == "analyze"
    # --as: the section of "My DB" restored as a new database, whose rows are read.
    stream, est, analyze = restore.restore_commands(host, remote, "My DB", lock=True,
                                                    as_name="copy")
    assert stream.argv[-2:] == ("keep", b"copy".hex()) and est.about == analyze.about == "copy"
    # The whole cluster: every database in one command, in the dump's order.
    _, whole, analyze = restore.restore_commands(host, remote, None, lock=True)
    names = ("dbname='template1'", "dbname='My DB'", "dbname='postgres'")
    assert whole.argv[-3:] == analyze.argv[-3:] == names
    assert analyze.argv[-4] == host.postgres.superuser

    # A dump with its own properties of template1 and postgres: the live ones are not read.
    carrying = dumpsource.DumpInfo(remote.source, "remote", 10, "gz", "x", None,
                                   ("template1", "postgres"),
                                   properties=("template1", "postgres"))
    stream, *_ = restore.restore_commands(host, carrying, None, lock=True)
    assert stream.argv[1] == "--props-in-dump"
    assert "--props-in-dump" not in restore.restore_commands(host, remote, None, lock=True)[0].argv

    local = dumpsource.DumpInfo("/tmp/b.sql.gz", "local", 10, "gz", "x", None, ("postgres",))
    stream, _, _ = restore.restore_commands(host, local, None, lock=False)
    assert stream.argv[5:] == ("-", "", "", str(host.lock_timeout), "drop", "")
    assert stream.stdin_file == "/tmp/b.sql.gz" and "< /tmp/b.sql.gz" in stream.shown


def test_estimates_are_read_for_each_database_in_order():
    out = ('{"database":0}\n{"table":"public.t","rows":3}\n{"database":1}\n'
           '{"table":"public.t","rows":7}\n{"table":"s.a=\\nb","rows":0}\n{"database":2}\n'
           "psql: error: connection failed\n"
           '{"database":3}\n')  # the third database's psql failed; no fourth database
    assert restore.parse_estimates(out, ("a", "b", "c")) == [
        restore.TableRows("a", "public.t", 3), restore.TableRows("b", "public.t", 7),
        restore.TableRows("b", "s.a=\nb", 0)]

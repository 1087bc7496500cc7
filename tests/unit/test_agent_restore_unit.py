"""The restore's host side (``restore-stream.sh``, ``inspect-dump``, ``replaced``,
``postgres-exec.sh``, each the entry point of the host program's command) against a fake
``docker`` on the PATH that records its argv and what it was given on stdin, and answers
the SQL of the swap from a scenario. The decompressor, the dump reader and filter, the
swap and the locks are the real ones."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from aimms_ops.core.lock import LOCK_FILES, Lock
from aimms_ops.dump.beside import REPLACED_SETTING, new_name
from aimms_ops.host import events as host_events
from aimms_ops.host import shell
from tests.hostprog import FAKE_DOCKER_PRELUDE, HOST, fake_tools

DUMP = (Path(__file__).parent / "data" / "cluster-dump.sql").read_bytes()
DBS = ["template1", "My DB", "aimms_web", "postgres"]

FAKE_DOCKER = FAKE_DOCKER_PRELUDE + r'''line = " ".join(argv)
if argv[:2] == ["ps", "-q"]:
    answer("cid\n" if sc.get("running", True) else "")
if argv[:1] != ["exec"]:
    answer(rc=1, err="unexpected")
if "-f" in argv:  # the stream's psql
    answer(rc=sc.get("replay_rc", 0), err=sc.get("replay_err", ""))
if "pg_dump" in argv:
    answer(rc=1, err="pg_dump: no props here\n")
if argv[-2:-1] == ["sh"] or argv[-1:] == ["sh"]:
    answer()
sql = data.decode() + line
if "RENAME TO" in sql and sc.get("swap_err"):
    answer(rc=3, err=sc["swap_err"])
if "aimms-ops: swapped" in sql:  # the swap, in one session: it prints that it committed
    answer("ended 0\nended 0\naimms-ops: swapped\n")
if "UNION ALL SELECT 'r '" in sql:  # the survey: databases, roles, set aside, tablespaces
    dbs = [h for h in sc["live_hex"] if sc.get("has_postgres", 1) or h != "706f737467726573"]
    answer("".join("d %s 0 1\n" % h for h in dbs) + "r 706f737467726573\n"
           + "".join("a %s %s\n" % tuple(row) for row in sc.get("aside_rows", []))
           + "t 70675f64656661756c74\nt 70675f676c6f62616c\n")
if "pg_db_role_setting" in sql:
    answer("".join("%s %s\n" % tuple(row) for row in sc.get("aside_rows", [])))
if "pg_tablespace" in sql:
    answer("70675f64656661756c74,70675f676c6f62616c\n")
if "datistemplate::int" in sql:
    answer("".join("%s 0 1\n" % h for h in sc["live_hex"]))
if "pg_roles" in sql:
    answer("706f737467726573\n")
answer()
'''


class Host:
    """A temporary host: the rendered scripts, a fake docker, a backup dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = fake_tools(tmp, {"docker": FAKE_DOCKER})
        self.fake, self.work = tmp / "fake", tmp / "tmp"
        for name in ("restore-stream.sh", "postgres-exec.sh"):
            (tmp / name).write_text(shell.script_text(name))
        self.lock = tmp / "backups" / LOCK_FILES["cluster"]
        self.scenario: dict = {"live_hex": [h for db in DBS for h in
                                            (db.encode().hex(), new_name(db.encode()).hex())]}

    def run(self, script: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        (self.fake / "scenario.json").write_text(json.dumps(self.scenario))
        return subprocess.run(["bash", str(self.tmp / script), *args], input=stdin,
                              capture_output=True, env=self.env, timeout=60, check=False)

    def program(self, *args: str) -> subprocess.CompletedProcess:
        """A command of the host program, run as fab runs it."""
        (self.fake / "scenario.json").write_text(json.dumps(self.scenario))
        return subprocess.run([*HOST, *args], capture_output=True, env=self.env, timeout=60,
                              check=False)

    def restore(self, fmt: str, source: str, *rest: str, stdin: bytes = b""):
        """The stream's exit status, its stderr (the stages' own) and its events."""
        res = self.run("restore-stream.sh", "aimms-web", "postgres", "postgres", fmt, source,
                       *rest, stdin=stdin)
        return res.returncode, res.stderr.decode(), host_events.parse(res.stdout.decode())

    def calls(self) -> list[dict]:
        path = self.fake / "calls.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

    def replayed(self) -> str:
        """What the stream's psql was given."""
        return "".join(c["stdin"] for c in self.calls() if "-f" in c["argv"])

    def sql(self) -> str:
        return "".join(c["stdin"] for c in self.calls() if "-f" not in c["argv"])

    def dump(self, name: str, data: bytes = DUMP) -> Path:
        path = self.tmp / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def texts(found: host_events.Events, kind: str) -> list[str]:
    return [e["text"] for e in found.of(kind)]


def test_a_dump_on_the_host_is_rebuilt_beside_then_swapped_in_under_the_lock(host):
    path = host.dump("aimms_postgres_20260101_020000.sql.gz")
    rc, err, found = host.restore("gz", str(path), "", str(host.lock), "5")
    assert rc == 0, err
    assert "aimms-ops" not in err  # stderr: the tools' own words; the restore's are events
    assert found.last("stages")["status"] == [0, 0, 0, 0]
    replaced = {e["database"]: e["kept_as"] for e in found.of("replaced")}
    assert replaced["postgres"].startswith("aimms_ops_old_")
    assert set(replaced) == set(DBS) and list(found.of("error")) == []
    # The filter says where each database starts (in its output's lines), in order.
    sections = [(e["database"], e["line"]) for e in found.of("section")]
    assert [db for db, _ in sections] == DBS
    assert [n for _, n in sections] == sorted(n for _, n in sections)
    replayed = host.replayed()
    assert new_name(b"aimms_web").decode() in replayed and "CREATE ROLE aimms_user" in replayed
    psql = next(c["argv"] for c in host.calls() if "-f" in c["argv"])
    assert psql[-7:] == ["ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-f", "-"]
    assert "RENAME TO" in host.sql()
    # Its work dir and its lock note are gone; the lock is free.
    assert os.listdir(host.work) == []
    assert [p.name for p in host.lock.parent.iterdir()] == [host.lock.name]
    Lock(str(host.lock), "test").acquire(0).release()


def test_the_live_properties_are_read_only_for_a_dump_that_lacks_them(host):
    """Without --props-in-dump the stream reads template1's and postgres's properties
    (pg_dump --create --schema-only), for a dump without its own; with it, it does not."""
    path = host.dump("aimms_postgres_20260101_020000.sql.gz")
    rc, err, _ = host.restore("gz", str(path), "", str(host.lock), "5")
    assert rc == 0, err
    dumped = [c["argv"][-1] for c in host.calls() if "pg_dump" in c["argv"]]
    assert dumped == ["template1", "postgres"]
    (host.fake / "calls.jsonl").unlink()
    res = host.run("restore-stream.sh", "--props-in-dump", "aimms-web", "postgres", "postgres",
                   "gz", str(path), "", str(host.lock), "5")
    assert res.returncode == 0, res.stderr
    assert [c for c in host.calls() if "pg_dump" in c["argv"]] == []
    assert "RENAME TO" in host.sql()


def test_a_plain_dump_streamed_on_stdin_is_restored_as_a_new_database(host):
    rc, err, found = host.restore("plain", "-", "4d79204442", "", "", "", "726f7773",
                                  stdin=DUMP)
    assert rc == 0, err
    assert "restored rows (new)" in texts(found, "note")
    assert new_name(b"My DB").decode() in host.replayed()


def test_psqls_error_removes_what_was_rebuilt_and_swaps_nothing(host):
    host.scenario.update(replay_rc=3, replay_err="psql:<stdin>:12: ERROR:  boom\n")
    rc, err, found = host.restore("gz", str(host.dump("d.sql.gz")))
    assert rc == 1
    assert err.endswith("\npsql:<stdin>:12: ERROR:  boom\n")  # psql's own words, whole
    assert "aimms-ops" not in err
    assert found.last("stages")["status"] == [0, 0, 0, 3]
    assert texts(found, "undone")[0].startswith("the live cluster is as it was")
    assert "RENAME TO" not in host.sql()


def test_a_failed_swap_is_undone_too(host):
    host.scenario["swap_err"] = "ERROR:  no\n"
    rc, _err, found = host.restore("gz", str(host.dump("d.sql.gz")))
    assert rc == 1
    assert texts(found, "error") == ["swap failed: ERROR:  no"]
    assert texts(found, "undone")[0].startswith("the live cluster is as it was")


def test_a_cut_dump_fails_its_stage_and_is_undone(host):
    path = host.dump("d.sql.gz")
    path.write_bytes(path.read_bytes()[:-20])
    rc, _err, found = host.restore("gz", str(path))
    assert rc == 1
    status = found.last("stages")["status"]
    assert status[2] != 0 and status[1] != 0
    assert texts(found, "error") == [
        "the dump ended before its completion marker: the restore is incomplete"]
    assert texts(found, "undone")[0].startswith("the live cluster is as it was")


def test_keep_drop_drops_what_the_swap_set_aside(host):
    rc, err, _found = host.restore("gz", str(host.dump("d.sql.gz")), "", "", "", "drop")
    assert rc == 0, err
    assert "DROP DATABASE IF EXISTS \"aimms_ops_old_" in host.sql()


def test_a_cluster_without_postgres_gets_it_first(host):
    host.scenario["has_postgres"] = 0
    rc, err, found = host.restore("gz", str(host.dump("d.sql.gz")))
    assert rc == 0, err
    assert "the cluster had no postgres database: created it empty first" in texts(found,
                                                                                   "note")
    assert any("CREATE DATABASE postgres WITH TEMPLATE = template0" in c["argv"]
               for c in host.calls())


@pytest.mark.parametrize(("args", "rc", "message"), [
    (("gz", "/nonexistent.sql.gz"), 66, "cannot read /nonexistent.sql.gz"),
    (("xz", "-"), 64, "unknown format xz"),
])
def test_refusals_touch_nothing(host, args, rc, message):
    got, err, found = host.restore(*args)
    assert (got, err, texts(found, "error")) == (rc, "", [message])
    assert [c for c in host.calls() if c["argv"][0] == "exec"] == []


def test_no_running_container_is_exit_10(host):
    host.scenario["running"] = False
    said = "the postgres container of compose project aimms-web is not running"
    rc, err, found = host.restore("gz", "-")
    assert (rc, err, texts(found, "error")) == (10, "", [said])
    for res in (host.program("replaced", "aimms-web", "postgres", "postgres", "lock", "1",
                             "undo"),
                host.run("postgres-exec.sh", "aimms-web", "postgres", "psql")):
        assert res.returncode == 10, res.stderr
        assert res.stderr.decode() == f"aimms-ops: {said}\n"


@pytest.mark.parametrize("fmt", ["plain", "gz"])
def test_a_dump_on_the_host_reports_how_far_it_was_read_as_it_goes(host, fmt):
    """The bar of a restore from a host file moves with the bytes the host has read (it
    once stood at 0 until the end): progress events, at most one a second, never going
    back, the last one the whole. A plain file: how far its reader is in it; a compressed
    one with its decompressed size given (--raw-size): the bytes the filter has read."""
    pad = b"".join(b"-- padding line %08d of the test dump, for its size\n" % i
                   for i in range(200_000))
    name = "aimms_postgres_20260101_020000.sql" + ("" if fmt == "plain" else ".gz")
    path = host.dump(name, pad + DUMP)
    host.scenario["psql_rate"] = 4 * 1024 * 1024  # bytes a second: about 3 s in all
    raw = [] if fmt == "plain" else ["--raw-size", str(len(pad + DUMP))]
    res = host.run("restore-stream.sh", *raw, "aimms-web", "postgres", "postgres", fmt,
                   str(path), "", str(host.lock), "5")
    assert res.returncode == 0, res.stderr
    found = list(host_events.parse(res.stdout.decode()).of("progress"))
    size = path.stat().st_size if fmt == "plain" else len(pad + DUMP)
    assert all(e["stage"] == "restore" and e["total"] == size and e["what"] == path.name
               for e in found)
    done = [e["done"] for e in found]
    assert done == sorted(done) and done[-1] == size
    assert any(0 < d < size for d in done), f"no progress between start and end: {done}"


def test_a_held_cluster_lock_is_exit_75_naming_its_holder(host):
    host.lock.parent.mkdir()
    with Lock(str(host.lock), "backup").acquire(0):
        res = host.run("restore-stream.sh", "aimms-web", "postgres", "postgres", "gz",
                       str(host.dump("d.sql.gz")), "", str(host.lock), "0")
        rc, err = res.returncode, res.stderr.decode()
        [wait, error] = host_events.parse(res.stdout.decode()).all
        assert wait["event"] == "wait" and wait["for"] == "the cluster lock"
        assert wait["holder"].startswith(f"backup pid {os.getpid()} since ")
        res = host.program("replaced", "aimms-web", "postgres", "postgres", str(host.lock),
                           "0", "undo")
    assert rc == 75 and res.returncode == 75 and err == ""
    busy = ("the cluster is busy after 0s: another restore, rebuild or backup holds it "
            f"(backup pid {os.getpid()} since ")
    assert error["event"] == "error" and error["text"].startswith(busy)
    assert res.stderr.decode().startswith("aimms-ops: " + busy)
    assert [c for c in host.calls() if "-f" in c["argv"]] == []


def test_replaced_lists_what_is_aside_and_undo_holds_the_lock(host):
    aside = b"aimms_ops_old_20260101_020000_aimms_web"
    host.scenario["live_hex"] = [aside.hex()]
    setting = f"{REPLACED_SETTING}={b'aimms_web'.hex()} 20260101_020000 f t".encode()
    host.scenario["aside_rows"] = [(aside.hex(), setting.hex())]
    res = host.program("replaced", "aimms-web", "postgres", "postgres", str(host.lock), "5",
                       "aside")
    assert res.returncode == 0, res.stderr
    listed = host_events.facts(res.stdout.decode(), "aside", "test")
    assert [r["name"] for r in listed["set_aside"]] == [aside.hex()]
    assert listed["set_aside"][0]["original"] == b"aimms_web".hex()
    assert not host.lock.exists()  # listing takes no lock
    res = host.program("replaced", "aimms-web", "postgres", "postgres", str(host.lock), "5",
                       "drop-aside", aside.hex())
    assert res.returncode == 0, res.stderr
    assert host.lock.exists() and "aimms_ops_old_%" in host.sql()
    assert host.program("replaced", "a", "b", "c", "d", "e", "bogus").returncode == 64


def test_postgres_exec_becomes_docker_exec_with_stdin_passed_on(host):
    res = host.run("postgres-exec.sh", "aimms-web", "postgres", "psql", "-X", "-d", "x",
                   stdin=b"SELECT 1;\n")
    assert res.returncode == 0, res.stderr
    assert host.calls()[-1] == {"argv": ["exec", "-i", "cid", "psql", "-X", "-d", "x"],
                                "stdin": "SELECT 1;\n"}


def _inspect(host: Host, path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """The host program's inspect-dump of ``path``, and its facts as the operator reads
    them (the one facts event)."""
    res = subprocess.run([*HOST, "inspect-dump", str(path)], capture_output=True,
                         env=host.env, timeout=60, check=False)
    return res, host_events.facts(res.stdout.decode(), "inspect-dump", "test")


def test_inspect_dump_hashes_decompresses_and_reads_the_dump(host):
    path = host.dump("aimms_postgres_20260101_020000.sql.gz")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    res, facts = _inspect(host, path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.decode().splitlines()) == 1, "one event, nothing else"
    assert list(facts)[:4] == ["exists", "size", "sha256_recorded", "format"]
    assert list(facts)[-2:] == ["stream", "sha256"]
    assert facts["exists"] == "1" and facts["size"] == str(path.stat().st_size)
    assert facts["sha256"] == facts["sha256_recorded"] == digest
    assert facts["format"] == "gz" and facts["stream"] == "ok"
    assert facts["header"] == "1" and facts["complete"] == "1"
    assert b"My DB".hex() in facts["db"]
    assert facts["bytes"] == str(len(DUMP))


def test_inspect_dump_of_a_cut_gzip_a_plain_dump_and_a_missing_file(host):
    cut = host.dump("cut.sql.gz")
    cut.write_bytes(cut.read_bytes()[:-20])
    facts = _inspect(host, cut)[1]
    assert facts["stream"] == "bad" and facts["sha256_recorded"] == ""
    plain = host.dump("dump.sql")
    facts = _inspect(host, plain)[1]
    assert facts["format"] == "plain" and facts["stream"] == "ok"
    assert facts["sha256"] == hashlib.sha256(DUMP).hexdigest()
    res, facts = _inspect(host, host.tmp / "nope.sql.gz")
    assert res.returncode == 0 and facts == {"exists": "0"}

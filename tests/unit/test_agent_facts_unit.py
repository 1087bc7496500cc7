"""The host program's read-only facts and small install commands (``agent/facts.py``,
``statefacts.py``, ``install.py``, ``waiting.py``) run as the host runs them (the zipapp),
with a fake ``docker`` on the PATH that records its argv and answers from rules; what
they print (one ``facts`` event each) is read by the operator side's own reader."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aimms_ops.backup.listing import parse_listing
from aimms_ops.core.lock import LOCK_FILES, note_path
from aimms_ops.host.events import Facts, facts
from aimms_ops.monitor.volumes import parse_engine
from tests.hostprog import HOST

FAKE_DOCKER = r'''#!PYTHON
import json, os, sys
d = os.environ["FAKE_DOCKER_DIR"]
argv = sys.argv[1:]
with open(os.path.join(d, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps(argv) + "\n")
line = " ".join(argv)
rules = json.load(open(os.path.join(d, "rules.json")))
for words, out, rc in rules:
    if all(w in line for w in words):
        sys.stdout.write(out)
        sys.exit(rc)
sys.exit(1)
'''

NAME = "aimms_postgres_20260101_020000.sql.gz"
#: A database name that is not UTF-8, with a newline and ``=`` (tests/integration/
#: test_odd_names.py makes one for real).
ODD = b"caf\xe9 'x'\n=y"


def read(res: subprocess.CompletedProcess, of: str) -> Facts:
    """The facts command ``of`` printed (it printed nothing but its event)."""
    out = res.stdout.decode("ascii")
    assert len(out.splitlines()) == 1, out
    return facts(out, of, "here")


def inspected(**fields: object) -> str:
    """``docker inspect``'s answer: one container of ``fields`` (``State_Status``: the
    field Status of State)."""
    obj: dict = {}
    for key, value in fields.items():
        *path, last = key.split("_")
        node = obj
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return json.dumps([obj])


class Fake:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "fake"
        self.dir.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "docker").write_text(FAKE_DOCKER.replace("PYTHON", f"{sys.executable} -S"))
        (self.bin / "docker").chmod(0o755)
        self.rules: list = []

    def rule(self, words: list[str], out: str = "", rc: int = 0) -> None:
        self.rules.append([words, out, rc])

    def run(self, *args: str, stdin: bytes | None = None, path: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        (self.dir / "rules.json").write_text(json.dumps(self.rules))
        environ = {**os.environ, "FAKE_DOCKER_DIR": str(self.dir),
                   "PATH": path or f"{self.bin}:{os.environ['PATH']}", **(env or {})}
        return subprocess.run([*HOST, *args], input=stdin, capture_output=True, env=environ,
                              timeout=60, check=False)

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


def _stack(fake: Fake) -> None:
    fake.rule(["version", "--format", "{{.Server.Version}}"], "24.0.5\n")
    fake.rule(["compose", "version"], "Docker Compose version v2\n")
    fake.rule(["compose", "-f", "config"], "services:\n  postgres:\n    image: pg\n")
    fake.rule(["ps", "-q", "label=com.docker.compose.service=postgres"], "cid1\ncid2\n")
    fake.rule(["inspect", "--type", "container", "cid1"], inspected(
        Name="/aimms-web-postgres-1", State_Status="running", State_StartedAt="T",
        State_ExitCode=0, State_FinishedAt="T", State_Error="", Config_Image="postgres:15",
        RestartCount=0, Unknown_Field=[1]))
    fake.rule(["exec", "cid1", "pg_isready"], "/var/run/postgresql:5432 - accepting\n")
    fake.rule(["exec", "cid1", "psql"], f"{b'postgres'.hex()}\n{ODD.hex()}\n")
    # redisdata is missing: docker lists the others and exits 1
    fake.rule(["volume", "inspect", "--format", "pgdata", "redisdata"], "pgdata\t/var/lib/d\n", 1)
    fake.rule(["ps", "-a", "--no-trunc", "{{.Mounts}}"],
              "aimms-web-postgres-1\tpgdata\nother\t/srv/x,pgdata\nunrelated\tpgdata2\n")


def test_facts_print_the_stack_as_the_checks_read_it(fake, tmp_path):
    _stack(fake)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("x")
    backups = tmp_path / "backups"
    backups.mkdir()
    lock = str(backups / LOCK_FILES["backup"])
    Path(note_path(lock, os.getpid())).write_text("backup pid x\n")
    res = fake.run("facts", str(tmp_path), str(compose), "Aimms.Web", "postgres", "postgres",
                   str(backups), "pgdata", "redisdata")
    assert res.returncode == 0, res.stderr
    f = read(res, "facts")
    assert f["docker.ok"] == "1" and f["docker.version"] == "24.0.5"
    assert f["compose.file_exists"] == "1" and f["compose.cmd"] == "docker compose"
    assert f["compose.config"].endswith("image: pg")
    assert f["container.id"] == "cid1" and f["container.name"] == "aimms-web-postgres-1"
    assert f["container.restart_count"] == "0" and f["container.state"] == "running"
    assert f["postgres.ready"] == "1" and f["postgres.ready_detail"] == "accepting connections"
    assert not [c for c in fake.calls() if "pg_isready" in c]  # the query said it is ready
    # Names as they are, a byte that is not UTF-8 too (a surrogate escape: its bytes back).
    assert f["postgres.databases"] == ["postgres", "caf\udce9 'x'\n=y"]
    assert [n.encode("utf-8", "surrogateescape") for n in f["postgres.databases"]] == [
        b"postgres", ODD]
    assert f["volume.pgdata.exists"] == "1" and f["volume.pgdata.mountpoint"] == "/var/lib/d"
    assert f["volume.pgdata.used_by"] == "aimms-web-postgres-1,other"
    assert f["volume.redisdata.exists"] == "0"
    assert f["backup_dir.exists"] == "1" and f["backup_dir.writable"] == "1"
    assert int(f["backup_dir.avail_kb"]) > 0 and int(f["backup_dir.size_kb"]) > 0
    assert f["lock.backup.live"] == str(os.getpid())
    assert f["ssh.user"] and f["time.now"].endswith("Z")
    # The compose config ran in the project dir, with the project's own name.
    assert ["compose", "-f", str(compose), "-p", "Aimms.Web", "config"] in fake.calls()


def test_facts_without_the_config_leave_compose_config_out(fake, tmp_path):
    _stack(fake)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("x")
    res = fake.run("facts", "--no-config", str(tmp_path), str(compose), "aimms-web",
                   "postgres", "postgres", str(tmp_path), "pgdata")
    assert res.returncode == 0, res.stderr
    f = read(res, "facts")
    assert f["container.id"] == "cid1" and f["postgres.ready"] == "1"
    assert "compose.config" not in f and "compose.config_ok" not in f
    assert not [c for c in fake.calls() if c[-1:] == ["config"]]


def test_a_postgres_that_does_not_answer_is_said_so_by_pg_isready(fake, tmp_path):
    """The query of the databases failed: pg_isready, asked then, says why."""
    fake.rule(["exec", "cid1", "psql"], "psql: error: connection failed\n", 2)
    fake.rule(["exec", "cid1", "pg_isready"], "/var/run/postgresql:5432 - no response\n", 2)
    _stack(fake)
    res = fake.run("facts", "--no-config", str(tmp_path), str(tmp_path / "c.yml"),
                   "aimms-web", "postgres", "postgres", str(tmp_path), "pgdata")
    f = read(res, "facts")
    assert f["postgres.ready"] == "0"
    assert f["postgres.ready_detail"] == "/var/run/postgresql:5432 - no response"
    assert "postgres.databases" not in f


def test_facts_without_docker_say_why_and_go_on(fake, tmp_path):
    fake.rule(["version"], "Cannot connect to the Docker daemon\n", 1)
    res = fake.run("facts", str(tmp_path), str(tmp_path / "nope.yml"), "p", "postgres",
                   "postgres", str(tmp_path / "nobackups"), "pgdata")
    f = read(res, "facts")
    assert res.returncode == 0
    assert f["docker.ok"] == "0" and f["docker.error"] == "Cannot connect to the Docker daemon"
    assert f["compose.file_exists"] == "0" and f["container.id"] == ""
    assert f["volume.pgdata.exists"] == "0" and f["backup_dir.exists"] == "0"


def test_list_backups_newest_first_with_checksum_and_pin(fake, tmp_path):
    assert read(fake.run("list-backups", str(tmp_path / "none")), "list-backups") == {
        "dir.exists": "0"}
    assert parse_listing({"dir.exists": "0"}, str(tmp_path)) is None
    older, newer = tmp_path / NAME, tmp_path / "aimms_postgres_20260102_020000_x.sql.zst"
    older.write_bytes(b"a" * 10)
    newer.write_bytes(b"b" * 20)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    os.utime(newer, (1_700_000_100, 1_700_000_100))
    (tmp_path / (NAME + ".sha256")).write_text("f" * 64 + "  " + NAME + "\n")
    (tmp_path / (newer.name + ".pin")).write_text("by=me\nreason=keep = this\n")
    (tmp_path / "aimms_postgres_link.sql.gz").symlink_to(older)
    (tmp_path / "aimms_postgres_dir.sql.gz").mkdir()
    f = read(fake.run("list-backups", str(tmp_path)), "list-backups")
    assert f["backups"] == [
        {"name": newer.name, "mtime": 1700000100, "size": 20, "sha256": None,
         "pin": "by=me\nreason=keep = this\n"},
        {"name": NAME, "mtime": 1700000000, "size": 10, "sha256": "f" * 64, "pin": None}]
    listed = parse_listing(f, str(tmp_path))
    assert listed is not None and [b.name for b in listed] == [newer.name, NAME]
    assert listed[0].pin is not None and listed[0].pin.reason == "keep = this"
    assert listed[1].sha256 == "f" * 64 and listed[1].pin is None


def test_status_facts_read_files_log_crontab_and_side_copies(fake, tmp_path):
    _stack(fake)
    fake.rule(["logs", "--tail", "15"], "log line\n")
    side = (b"aimms_ops_old_x".hex() + " 100 -\n" + b"aimms_web".hex() + " 5 -\n"
            + b"aimms_ops_new_y".hex() + " 7 " + b"aimms_ops.replaced=z".hex() + "\n")
    fake.rules.insert(0, [["exec", "cid1", "psql", "pg_database_size"], side, 0])
    script = tmp_path / "backup-postgres.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o700)
    log = tmp_path / "postgres-backup.log"
    lines = [f"2026-01-01T02:00:0{i}Z backup[1] step {i}" for i in range(70)]
    lines += ["2026-01-01T02:00:09Z backup[1] START x", "2026-01-01T02:00:10Z backup[1] ping ok",
              "2026-01-01T02:00:11Z backup[1] RESULT ok " + NAME]
    log.write_text("\n".join(lines) + "\n")
    res = fake.run("status-facts", "aimms-web", "postgres", str(script), str(tmp_path / "c"),
                   str(tmp_path / "v"), str(tmp_path / "rec"), str(log), "postgres",
                   env={"DOCKER_HOST": "unix:///x.sock"})
    assert res.returncode == 0, res.stderr
    f = read(res, "status-facts")
    assert f["script.mode"] == "700" and len(f["script.sha256"]) == 64
    assert f["conf.sha256"] == "" and "conf.mode" not in f and "record" not in f
    assert f["log.results"].splitlines() == lines[-3::2]
    assert f["log.tail"].splitlines() == lines[-60:]
    assert f["log.pings"].splitlines() == [lines[-2]]
    assert f["container.log"] == "log line\n" and "rebuild.state" not in f
    assert f["restore.copies"] == [
        {"name": "aimms_ops_old_x", "size": 100, "setting": None},
        {"name": "aimms_ops_new_y", "size": 7, "setting": "aimms_ops.replaced=z"}]
    assert f["container.exit_code"] == "0" and f["container.error"] == ""
    assert f["python3.version"] == "{}.{}".format(*sys.version_info[:2])
    assert f["env.DOCKER_HOST"] == "unix:///x.sock" and int(f["now.epoch"]) > 0
    assert f["crontab.available"] in ("0", "1") and "compressor.have" in f
    # An unfinished rebuild's state file comes with them, when asked for.
    state = tmp_path / ".rebuild-state"
    state.write_text("2026 begin=stop\n")
    res = fake.run("status-facts", "aimms-web", "postgres", str(script), str(tmp_path / "c"),
                   str(tmp_path / "v"), str(tmp_path / "rec"), str(log), "postgres",
                   "--rebuild-state", str(state))
    assert read(res, "status-facts")["rebuild.state"] == "2026 begin=stop\n"


def test_batch_runs_the_commands_in_one_start(fake, tmp_path):
    """fab status's three commands in one start of the program: each its own event."""
    _stack(fake)
    res = fake.run("batch", "2", "list-backups", str(tmp_path), "3", "list-backups",
                   str(tmp_path / "none"), "x")
    assert res.returncode == 64  # the second's extra word: its own usage error
    res = fake.run("batch", "2", "list-backups", str(tmp_path / "none"), "2", "list-backups",
                   str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert [json.loads(ln)["facts"]["dir.exists"] for ln in res.stdout.splitlines()] == [
        "0", "1"]
    for bad in (["9", "list-backups", "x"], ["x"], ["0", "list-backups"]):
        res = fake.run("batch", *bad)
        assert res.returncode == 64 and b"batch: N COMMAND ARGS" in res.stderr


def test_install_state_and_writing_files(fake, tmp_path):
    _stack(fake)
    script, conf, prog = tmp_path / "s.sh", tmp_path / "s.sh.conf", tmp_path / "p.pyz"
    res = fake.run("install-file", str(script), "700", "1", stdin=b"one\n")
    assert res.returncode == 0 and res.stdout == b"" and script.read_bytes() == b"one\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    res = fake.run("install-file", str(script), "700", "1", stdin=b"two\n")
    kept = read(res, "install-file")["kept"]
    assert Path(kept).read_bytes() == b"one\n" and script.read_bytes() == b"two\n"
    assert fake.run("install-file", str(conf), "600", stdin=b"c\n").stdout == b""
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == []
    backups, log = tmp_path / "b", tmp_path / "logs" / "x.log"
    assert fake.run("ensure-dirs", str(backups), str(log)).returncode == 0
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    res = fake.run("install-state", "--file", "program", str(prog), str(script), str(conf),
                   str(backups), str(log), str(tmp_path / "v.sh"), str(tmp_path / "rec"),
                   "aimms-web", "postgres")
    f = read(res, "install-state")
    assert f["script.mode"] == "700" and f["conf.mode"] == "600" and f["verify.sha256"] == ""
    assert f["program.sha256"] == "" and f["dir.mode"] == "700" and f["log.mode"] == "600"
    assert f["container.id"] == "cid1" and f["container.image"] == "postgres:15"
    assert f["container.name"] == "aimms-web-postgres-1"
    assert set(f["offsite.missing"].split()) <= {"rclone", "age"}
    assert fake.run("ensure-dirs", "/proc/nope", str(log)).returncode == 73


def test_rebuild_record_appends_closes_and_audits(fake, tmp_path):
    state, audit = tmp_path / "d" / "state", tmp_path / "a" / "audit.log"
    assert fake.run("rebuild-record", "append", str(state), "begin=stop", "x=1").returncode == 0
    got = state.read_text().splitlines()
    assert [ln.split(" ", 1)[1] for ln in got] == ["begin=stop", "x=1"]
    assert got[0].split()[0].endswith("Z") and stat.S_IMODE(state.stat().st_mode) == 0o600
    res = fake.run("rebuild-record", "audit", str(audit), "rebuild done",
                   env={"SSH_CLIENT": "10.0.0.9 5555 22"})
    assert res.returncode == 0 and audit.read_text().endswith(" rebuild done from=10.0.0.9\n")
    assert fake.run("rebuild-record", "close", str(state), str(tmp_path / "old")).returncode == 0
    assert not state.exists() and (tmp_path / "old").exists()
    assert fake.run("rebuild-record", "close", str(state), str(tmp_path / "o2")).returncode == 0
    assert fake.run("rebuild-record", "nope", str(state)).returncode == 64


def test_volume_and_rebuild_facts(fake, tmp_path):
    fake.rule(["version", "{{.Server.APIVersion}}"], "1.43\n")
    fake.rule(["version", "{{.Client.APIVersion}}"], "1.41\n")
    fake.rule(["volume", "ls", "-q"], "old1\n")
    fake.rule(["volume", "inspect", "--format", "kept="], "kept=old1\tpgdata\t2026-01-01\n")
    fake.rule(["volume", "ls", "--format"], "vol=pgdata\tlocal\t/m\tx=y\n")
    fake.rule(["ps", "-a", "--no-trunc"], "ctr=pg\trunning\tpgdata\taimms-web\tpostgres\n")
    fake.rule(["system", "df"], "size=pgdata\t10MB\n")
    f = read(fake.run("volume-facts"), "volume-facts")
    assert f["api"] == ["1.43", "1.41"] and f["sizes"] == {"pgdata": "10MB"}
    engine = parse_engine(f)
    assert engine.api == "1.41" and engine.kept == {"old1": ("pgdata", "2026-01-01")}
    assert engine.volumes == {"pgdata": {"driver": "local", "mountpoint": "/m",
                                         "labels": "x=y"}}
    assert engine.containers == [{"name": "pg", "state": "running", "mounts": "pgdata",
                                  "project": "aimms-web", "service": "postgres"}]
    fake.rules = []
    fake.rule(["info"], "/var/lib/docker\n")
    fake.rule(["image", "inspect", "pg:15"])
    fake.rule(["volume", "inspect", "--format", "{{json .}}", "pgdata"], '{"Name":"pgdata"}\n')
    fake.rule(["ps", "-a", "--filter", "volume=pgdata"], "user=pg\taimms-web\tpostgres\n")
    fake.rule(["run", "--rm", "pgdata:/from:ro"], "1234\n5678\n")
    state = tmp_path / "state"
    state.write_text("2026 begin=stop\n")
    f = read(fake.run("rebuild-facts", "pgdata", "pg:15", str(state), "keep"), "rebuild-facts")
    assert f["docker.root"] == "/var/lib/docker" and f["image.present"] == "1"
    assert f["volume.exists"] == "1" and f["volume.json"] == '{"Name":"pgdata"}'
    assert f["volume.users"] == [{"name": "pg", "project": "aimms-web", "service": "postgres"}]
    assert f["volume.size_kb"] == "1234" and f["volume.avail_kb"] == "5678"
    assert f["keep.exists"] == "0" and f["state"] == "2026 begin=stop\n"


def test_wait_postgres_needs_the_same_listening_server_twice(fake):
    fake.rule(["ps", "-q"], "cid1\n")
    fake.rule(["pg_isready"], "accepting\n")
    fake.rule(["exec", "cid1", "psql"], "1|t|2026-01-01 02:00:00+00\n")
    res = fake.run("wait-postgres", "aimms-web", "postgres", "postgres", "10")
    assert res.returncode == 0, res.stderr
    waited = read(res, "wait-postgres")
    assert waited["container"] == "cid1" and waited["seconds"].isdigit()
    fake.rules = []
    fake.rule(["ps", "-q"], "cid1\n")
    fake.rule(["pg_isready"], "accepting\n")
    fake.rule(["exec", "cid1", "psql"], "1|f|2026-01-01 02:00:00+00\n")
    fake.rule(["logs", "--tail", "3"], "initdb: running\n")
    res = fake.run("wait-postgres", "aimms-web", "postgres", "postgres", "0")
    assert res.returncode == 1
    assert res.stderr.decode().splitlines() == [
        "aimms-ops: postgres did not accept connections within 0s: the server is still "
        "initialising (it does not listen yet)", "aimms-ops: log: initdb: running"]


def test_a_host_program_that_cannot_start_is_named():
    """run_program's errors: no python3 (the shell's 127), or one too old (the zipapp's
    69, before it imports anything)."""
    from aimms_ops.host.remote import RunResult, no_program

    def res(rc: int, err: str) -> RunResult:
        return RunResult("python3 x.pyz facts", rc, "", err)

    assert no_program(res(127, "bash: line 1: python3: command not found\n")) == "no python3"
    too_old = subprocess.run(  # the zipapp's own message, from a python that claims 3.6
        [sys.executable, "-c", "import sys, runpy; sys.version_info = (3, 6, 9); "
         f"sys.argv = ['x', 'facts']; runpy.run_path({str(HOST[1])!r})"],
        capture_output=True, text=True, check=False)
    assert too_old.returncode == 69, too_old.stderr
    assert no_program(res(69, too_old.stderr)) == "python3 3.6 is too old"
    assert no_program(res(69, "aimms-ops: something else\n")) == ""
    assert no_program(res(1, "python3: error\n")) == ""

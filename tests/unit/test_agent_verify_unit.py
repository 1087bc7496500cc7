"""The deep verify (``aimms-ops.pyz verify``, through ``verify-backup.sh``) against a
temporary backup dir, with fakes only for what it calls out to: ``docker`` (a fake on the
PATH that records its argv and plays the answers of a scenario, keeping the containers
and volumes it was asked to make) and ``curl`` (the pings). The decompressor, the dump
reader and the locks are the real ones."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aimms_ops.core.lock import LOCK_FILES, Lock
from aimms_ops.dump.beside import new_name
from aimms_ops.host import events as host_events
from aimms_ops.host import shell
from tests.hostprog import SCRIPT_ENV

NAME = "aimms_postgres_20260101_020000.sql.gz"
DUMP = (Path(__file__).parent / "data" / "cluster-dump.sql").read_bytes()
#: The databases of DUMP (template1 aside), as the throwaway lists them after a replay.
RESTORED = ["My DB", "aimms_web", "postgres"]
CHECKS = ["checksum", "disk", "start", "gzip stream", "dump header", "restore",
          "completion marker", "databases", "live restore", "cleanup"]

FAKE_DOCKER = r'''#!PYTHON
"""A fake docker: records argv (calls.jsonl), answers from scenario.json."""
import json, os, sys
d = os.environ["FAKE_DOCKER_DIR"]
argv = sys.argv[1:]
sc = json.load(open(os.path.join(d, "scenario.json")))
objs_path = os.path.join(d, "objects.json")
objs = json.load(open(objs_path)) if os.path.exists(objs_path) else []
data = sys.stdin.buffer.read() if "-i" in argv else b""
with open(os.path.join(d, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps({"argv": argv, "stdin": data.decode("utf-8", "replace")[:2000]}) + "\n")
def answer(out="", rc=0, err=""):
    sys.stdout.write(out); sys.stderr.write(err); sys.exit(rc)
def save():
    json.dump(objs, open(objs_path, "w"))
line = " ".join(argv)
for rule in sc.get("rules", []):
    if all(w in line for w in rule["when"]):
        answer(rule.get("out", ""), rule.get("rc", 0), rule.get("err", ""))
if argv[:1] == ["info"]:
    answer(d + "\n" if "--format" in argv else "")
if argv[:2] == ["ps", "-q"] or argv[:2] == ["ps", "-aq"]:
    answer("prodid\n")
if argv[:2] == ["volume", "create"]:
    objs.append("volume " + argv[-1]); save(); answer(argv[-1] + "\n")
if argv[:2] == ["run", "--detach"]:
    objs.append("container " + argv[argv.index("--name") + 1]); save(); answer("cid\n")
if argv[:2] == ["rm", "-f"]:
    objs[:] = [o for o in objs if o != "container " + argv[-1]]; save(); answer()
if argv[:2] == ["volume", "rm"]:
    objs[:] = [o for o in objs if o != "volume " + argv[-1]]; save(); answer()
if argv[:2] in (["container", "inspect"], ["volume", "inspect"]):
    answer(rc=0 if argv[0] + " " + argv[2] in objs else 1)
if argv[:1] == ["inspect"]:
    fmt, what = argv[2], argv[3]
    if what != "prodid":
        answer("true\n" if "container " + what in objs else "", 0 if objs else 1)
    answer({"{{.Name}}": "/aimms-web_postgres_1\n", "{{.Image}}": "sha256:feed\n",
            "{{.State.Running}}": "true\n"}.get(fmt, "") or sc["inspect"].get(fmt[:20], ""))
if argv[:1] == ["exec"]:
    if "pg_isready" in line or "pg_dump" in line:
        answer(rc=0 if "pg_isready" in line else 1)
    if "pg_database_size" in line:
        answer("1000\n")
    if "-f" in argv:  # the replay
        answer(rc=sc.get("replay_rc", 0), err=sc.get("replay_err", ""))
    sql = data.decode() + line
    if "UNION ALL SELECT 'r '" in sql:  # the survey
        answer("".join("d %s 0 1\n" % h for h in sc["live_hex"]) + "r 706f737467726573\n")
    if "aimms-ops: swapped" in sql:  # the swap, in one session
        answer("ended 0\nended 0\naimms-ops: swapped\n")
    if "datistemplate::int" in sql:
        answer("".join("%s 0 1\n" % h for h in sc["live_hex"]))
    if "pg_roles" in sql:
        answer("706f737467726573\n")
    if "NOT datallowconn" in sql and "-c" in argv:
        answer("")
    if "NOT datistemplate ORDER BY 1" in sql:
        answer("".join(db.encode().hex() + "\n" for db in sc["restored"]))
    if "count(*) FROM ONLY" in sql:
        answer("public.orders\t3\npublic.\"Odd\"\t2\n")
    answer()
answer()
'''

FAKE_CURL = r'''#!PYTHON
import json, os, sys
args = sys.argv[1:]
body = ""
if "--data-binary" in args:
    body = open(args[args.index("--data-binary") + 1][1:]).read()
with open(os.path.join(os.environ["FAKE_DOCKER_DIR"], "pings.jsonl"), "a") as fh:
    fh.write(json.dumps({"args": args, "config": sys.stdin.read(), "body": body}) + "\n")
'''


class Host:
    """A temporary backup dir, log, fake docker and the installed verify-backup.sh."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.backups = tmp / "backups"
        self.backups.mkdir()
        self.log = tmp / "postgres-backup.log"
        self.fake = tmp / "fake"
        self.fake.mkdir()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
            (bin_dir / name).write_text(text.replace("PYTHON", f"{sys.executable} -S", 1))
            (bin_dir / name).chmod(0o755)
        self.script = tmp / "verify-backup.sh"
        self.script.write_text(shell.script_text("verify-backup.sh"))
        self.env = {**SCRIPT_ENV, "FAKE_DOCKER_DIR": str(self.fake), "TMPDIR": str(tmp),
                    "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.scenario: dict = {
            "restored": RESTORED, "rules": [],
            "live_hex": [h for db in ["template1", *RESTORED]
                         for h in (db.encode().hex(), new_name(db.encode()).hex())],
            "inspect": {"{{range .Config.Env}": "POSTGRES_PASSWORD=x\nPGDATA=/var/lib/pg/data\n",
                        "{{range .Mounts}}{{p": "/var/lib/pg\n/other\n",
                        "{{range .Mounts}}{{i": "aimms_postgres_data_prod\n"}}
        self.backup(NAME, DUMP)

    def backup(self, name: str, dump: bytes, *, checksum: bool = True) -> Path:
        path = self.backups / name
        path.write_bytes(gzip.compress(dump))
        if checksum:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            (self.backups / f"{name}.sha256").write_text(f"{digest}  {name}\n")
        return path

    def args(self, *extra: str) -> list[str]:
        return ["--backup-dir", str(self.backups), "--log-file", str(self.log),
                "--project", "aimms-web", "--protect", "aimms_redis_data_prod", *extra]

    def start(self, *extra: str, args: list[str] | None = None) -> subprocess.Popen:
        (self.fake / "scenario.json").write_text(json.dumps(self.scenario))
        return subprocess.Popen(
            ["bash", str(self.script), *(self.args(*extra) if args is None else args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
            stdin=subprocess.DEVNULL)

    def verify(self, *extra: str, args: list[str] | None = None) -> subprocess.CompletedProcess:
        proc = self.start(*extra, args=args)
        out, err = proc.communicate(timeout=60)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        done.pid = proc.pid  # type: ignore[attr-defined]
        return done

    def calls(self) -> list[list[str]]:
        path = self.fake / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(ln)["argv"] for ln in path.read_text().splitlines()]

    def objects(self) -> list[str]:
        path = self.fake / "objects.json"
        return json.loads(path.read_text()) if path.exists() else []

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def report(stdout: str) -> dict[str, list[str]]:
    """The verify's events as ``verify.KEY`` -> its values, in order (a check as
    ``NAME<TAB>STATE<TAB>DETAIL``, a table as ``DB<TAB>TABLE<TAB>ROWS``)."""
    out: dict[str, list[str]] = {}
    for e in host_events.parse(stdout).all:
        kind = e.pop("event")
        if kind == "check":
            out.setdefault("verify.check", []).append(
                "\t".join((e["name"], e["state"], e["detail"])))
        elif kind == "database":
            out.setdefault("verify.database", []).append(e["name"])
        elif kind == "table":
            out.setdefault("verify.table", []).append(
                "\t".join((e["database"], e["table"], str(e["rows"]))))
        elif kind == "verify":
            for key, value in e.items():
                out.setdefault("verify." + key, []).append(str(value))
    return out


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_a_good_backup_is_restored_twice_counted_and_its_throwaway_removed(host):
    proc = host.verify("--report")
    assert proc.returncode == 0, proc.stderr
    r = report(proc.stdout)
    checks = [c.split("\t") for c in r["verify.check"]]
    assert [c[0] for c in checks] == CHECKS
    assert all(c[1] == "OK" for c in checks), checks
    assert r["verify.file"] == [NAME] and r["verify.result"] == ["ok"]
    assert r["verify.database"] == RESTORED
    assert "aimms_web\tpublic.orders\t3" in r["verify.table"]
    [container] = r["verify.container"]
    assert container.startswith("aimms-ops-verify-") and r["verify.volume"] == [container]
    assert r["verify.image"] == ["sha256:feed"]
    # Each replay's progress: how far the decompressor is in the file, ending whole.
    # (pass 1 in the file's bytes; pass 2, knowing the decompressed size, in those).
    replayed = [e for e in host_events.parse(proc.stdout).of("progress")]
    sizes = {"pass 1": (host.backups / NAME).stat().st_size, "pass 2": len(DUMP)}
    assert {e["what"] for e in replayed} == set(sizes)
    assert all(e["stage"] == "replay" and e["total"] == sizes[e["what"]] for e in replayed)
    assert [e["done"] for e in replayed if e["what"] == "pass 2"][-1] == len(DUMP)
    calls = host.calls()
    [run] = [c for c in calls if c[:2] == ["run", "--detach"]]
    assert run[run.index("--network") + 1] == "none"
    assert run[run.index("--volume") + 1] == f"{container}:/var/lib/pg"  # the PGDATA mount
    assert run[-1] == "sha256:feed"
    # Twice through psql -f -, the second time built beside and swapped in.
    replays = [c for c in calls if c[:1] == ["exec"] and c[-2:] == ["-f", "-"]]
    assert len(replays) == 2
    assert any("CREATE DATABASE aimms_ops_new_swap" in json.loads(ln)["stdin"]
               for ln in (host.fake / "calls.jsonl").read_text().splitlines())
    assert ["rm", "-f", "-v", container] in calls and ["volume", "rm", container] in calls
    assert host.objects() == []
    log = host.log_lines()
    assert f"started throwaway container {container}" in "\n".join(log)
    assert any(" restore pass 1 stages: " in ln and ln.endswith(", filter 0, psql 0")
               for ln in log)
    last = log[-1].split(" ", 2)
    assert last[1] == f"verify[{proc.pid}]"  # the script's pid: exec, one process
    assert last[2].startswith(f"RESULT ok {NAME} databases=3 tables=6 rows=15 seconds=")
    assert not [p for p in host.backups.iterdir() if ".owner." in p.name]  # locks let go
    assert not list(host.tmp.glob("aimms-verify.*"))


def test_the_settings_file_beside_the_script_is_read_and_flags_override_it(host):
    conf = host.tmp / "backup-postgres.sh.conf"
    conf.write_text(f"BACKUP_DIR={host.backups}\nLOG_FILE=/nonexistent/x.log\n"
                    "COMPOSE_PROJECT=aimms-web\nexport DOCKER_HOST=unix:///fake.sock\n")
    proc = host.verify(args=["--log-file", str(host.log)])
    assert proc.returncode == 0, proc.stderr
    assert "RESULT ok" in host.log_lines()[-1]
    # --config names the file instead; an unreadable one is a usage error.
    proc = host.verify(args=["--config", str(host.tmp / "nope.conf")])
    assert proc.returncode == 64
    assert proc.stderr == (f"verify-backup.sh: cannot read config file: {host.tmp}/nope.conf "
                           "(No such file or directory)\n")


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument: --bogus"),
    (["--wait", "soon"], "--wait must be a whole number of seconds"),
    (["--file", "x.sql.gz"], "not a backup name: x.sql.gz"),
    (["--backup-dir", ""], "BACKUP_DIR is not set (--backup-dir, or --config the backup "
                           "script's settings file)"),
])
def test_a_usage_error_is_one_line_and_touches_nothing(host, args, message):
    proc = host.verify(*args)
    assert (proc.returncode, proc.stderr) == (64, f"verify-backup.sh: {message}\n")
    assert host.calls() == [] and not host.log.exists()


def test_every_settings_flag_is_taken(host):
    from aimms_ops.core import settings as flags

    extra: list[str] = []
    for f in flags.SETTINGS:
        if f.flag and f.key not in ("BACKUP_DIR", "LOG_FILE", "COMPOSE_PROJECT"):
            extra += [f.flag] if f.switch else [f.flag, "postgres" if "SERVICE" in f.key
                                                  or "SUPERUSER" in f.key else "7"]
    proc = host.verify(*extra, flags.SECRETS_FLAG)
    assert proc.returncode == 0, proc.stderr


def test_a_checksum_mismatch_fails_before_any_container(host):
    (host.backups / f"{NAME}.sha256").write_text(f"{'0' * 64}  {NAME}\n")
    proc = host.verify("--report")
    assert proc.returncode == 1
    r = report(proc.stdout)
    assert r["verify.failed_check"] == ["checksum"] and r["verify.result"] == ["failed"]
    assert proc.stderr.startswith("verify failed: checksum: the file does not match its .sha256")
    assert not [c for c in host.calls() if c[:1] == ["run"]]
    assert host.log_lines()[-1].endswith(f"({NAME})")
    assert "RESULT failed: checksum: " in host.log_lines()[-1]


def test_psqls_first_error_names_the_failed_restore_and_the_throwaway_goes(host):
    host.scenario["replay_rc"] = 3
    host.scenario["replay_err"] = ("psql:<stdin>:12: ERROR:  relation \"x\" exists\n"
                                   "LINE 1: CREATE TABLE x\npsql:<stdin>:13: ERROR: later\n")
    proc = host.verify("--report", "--echo")
    assert proc.returncode == 1
    r = report(proc.stdout)
    assert r["verify.failed_check"] == ["restore"]
    assert r["verify.reason"] == ['psql stopped: psql:<stdin>:12: ERROR:  relation "x" '
                                  'exists\\nLINE 1: CREATE TABLE x']
    assert r["verify.check"][-1] == "cleanup\tOK\tcontainer and volume removed"
    assert host.objects() == []
    assert " RESULT failed: restore: psql stopped: " in proc.stderr  # --echo: the log lines


def test_a_cut_backup_fails_its_stream_check(host):
    path = host.backups / NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (host.backups / f"{NAME}.sha256").write_text(f"{digest}  {NAME}\n")
    proc = host.verify("--report")
    assert proc.returncode == 1
    r = report(proc.stdout)
    assert r["verify.failed_check"] == ["gzip stream"]
    assert r["verify.reason"][0].startswith("the file does not decompress to its end: ")
    assert host.objects() == []


def test_a_dump_without_its_completion_marker_fails_that_check(host):
    marker = b"-- PostgreSQL database cluster dump complete"
    assert marker in DUMP
    host.backup(NAME, DUMP.replace(marker, b"-- cut"))
    proc = host.verify("--report")
    assert proc.returncode == 1
    assert report(proc.stdout)["verify.failed_check"] == ["completion marker"]


def test_latest_is_the_newest_regular_backup_never_a_safety_copy(host):
    from aimms_ops.core.retention import SAFETY_LABELS

    newer = f"aimms_postgres_20260102_020000_{SAFETY_LABELS[0]}.sql.gz"
    host.backup(newer, DUMP)
    os.utime(host.backups / newer, (time.time() + 60, time.time() + 60))
    proc = host.verify("--report", "--file", "latest")
    assert report(proc.stdout)["verify.file"] == [NAME]


def test_a_running_verify_holds_off_another(host):
    with Lock(str(host.backups / LOCK_FILES["verify"]), "verify"):
        proc = host.verify("--report")
    assert proc.returncode == 1
    r = report(proc.stdout)
    assert r["verify.failed_check"] == ["lock"]
    assert r["verify.reason"][0].startswith(
        f"another verify or drill is running (verify pid {os.getpid()}")


def test_a_signal_ends_the_run_and_removes_its_throwaway(host):
    host.scenario["rules"] = [{"when": ["pg_isready"], "rc": 1}]  # never ready
    proc = host.start("--report", "--wait", "60")
    deadline = time.monotonic() + 30
    while not any(c[:2] == ["run", "--detach"] for c in host.calls()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    r = report(out)
    assert r["verify.failed_check"] == ["interrupted"]
    assert r["verify.check"][-1] == "cleanup\tOK\tcontainer and volume removed"
    assert host.objects() == []
    assert "RESULT failed: interrupted: interrupted by a signal" in host.log_lines()[-1]


def test_a_throwaway_that_will_not_go_fails_the_cleanup_check(host, monkeypatch):
    from aimms_ops.agent import trial, verify

    host.scenario["rules"] = [{"when": ["rm -f -v aimms-ops-verify-"], "rc": 1}]
    (host.fake / "scenario.json").write_text(json.dumps(host.scenario))
    for key, value in host.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(trial.time, "sleep", lambda s: None)
    writes: list[tuple[int, str]] = []
    from aimms_ops.agent import job

    monkeypatch.setattr(job, "write_fd", lambda fd, text: writes.append((fd, text)) or True)
    old = os.umask(0o022)
    try:
        rc = verify.main(host.args("--report"))
    finally:
        os.umask(old)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                          else signal.SIG_DFL)
    assert rc == 1
    r = report("".join(t for fd, t in writes if fd == 1))
    assert r["verify.failed_check"] == ["cleanup"]
    assert r["verify.reason"][0].startswith("container aimms-ops-verify-")
    assert "is still there (docker rm -f -v aimms-ops-verify-" in r["verify.reason"][0]
    assert host.objects()[0].startswith("container ")  # the volume went, the container not


def test_the_verify_pings_its_own_url_through_the_scripts_curl(host):
    conf = host.tmp / "settings.conf"
    conf.write_text("PING_URL_VERIFY='https://hc.example/ping/v'\nPING_KIND=healthchecks\n"
                    "PING_TIMEOUT=9\n")
    proc = host.verify("--config", str(conf))
    assert proc.returncode == 0, proc.stderr
    pings = [json.loads(ln) for ln in (host.fake / "pings.jsonl").read_text().splitlines()]
    assert len(pings) == 2
    start, end = pings
    rid = start["config"].split("rid=")[1].split('"')[0]
    assert start["config"] == f'url = "https://hc.example/ping/v/start?rid={rid}"\n'
    assert end["config"] == f'url = "https://hc.example/ping/v/0?rid={rid}"\n'
    assert "-m" in end["args"] and end["args"][end["args"].index("-m") + 1] == "3"
    assert f"RESULT ok {NAME} databases=3" in end["body"]
    assert "https://" not in " ".join(start["args"])  # the URL never on a command line
    log = "\n".join(host.log_lines())
    assert "ping start: ok (healthchecks)" in log and "ping ok: ok (healthchecks)" in log

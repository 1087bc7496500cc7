"""The nightly backup job (``backup-postgres.sh``, the host program's ``backup``) against
a fake ``docker`` on the PATH that records what it is asked and answers as a cluster
holding databases restores set aside: those kept longer than KEEP_REPLACED_DAYS are
dropped by the job, logged, and none of them is dumped. The compressor, the checks,
the locks and retention are the real ones."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

from aimms_ops.dump.beside import KEEP_REPLACED_DAYS, OLD_PREFIX, REPLACED_SETTING
from aimms_ops.host import events as host_events
from aimms_ops.host import shell
from tests.hostprog import FAKE_DOCKER_PRELUDE, HOST, fake_tools

FAKE_DOCKER = FAKE_DOCKER_PRELUDE + r'''if argv[:1] == ["info"]:
    answer("ok\n")
if argv[:2] == ["ps", "-q"]:
    answer("cid\n")
if argv[:1] == ["inspect"]:
    answer("/aimms-web_postgres_1\n")
if argv[:1] != ["exec"]:
    answer(rc=1, err="unexpected")
if "sh" in argv and "-c" in argv:  # the dump
    answer("-- PostgreSQL database cluster dump\n" + "SELECT 1;\n" * 50
           + "-- PostgreSQL database cluster dump complete\n",
           err="aimms-ops: pg_dumpall status 0\n")
sql = data.decode("utf-8", "replace") + " ".join(argv)
if "NOT datallowconn" in sql:
    answer()
if "datallowconn AND" in sql:
    answer("".join("%s\t%s\n" % (h, h) for h in sc["dumped_hex"]))
if "pg_db_role_setting" in sql:
    answer("".join("%s %s\n" % tuple(row) for row in sc["aside"]))
if sc.get("drop_rc") and "DROP DATABASE" in sql:
    answer(rc=sc["drop_rc"], err="ERROR:  permission denied to drop database\n")
answer()
'''


def _aside(original: bytes, days_ago: float) -> tuple[str, str, bytes]:
    """A database set aside ``days_ago``: (hex name, hex setting, name)."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(time.time() - days_ago * 86400))
    name = OLD_PREFIX + stamp.encode() + b"_" + original.hex().encode()[:12]
    setting = f"{REPLACED_SETTING}={original.hex()} {stamp} f t".encode()
    return name.hex(), setting.hex(), name


class Host:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = fake_tools(tmp, {"docker": FAKE_DOCKER})
        self.fake = tmp / "fake"
        self.dir = tmp / "backups"
        self.log = tmp / "logs" / "backup.log"
        (tmp / "backup-postgres.sh").write_text(shell.script_text("backup-postgres.sh"))
        self.scenario: dict = {"dumped_hex": [b"aimms_web".hex(), b"postgres".hex()],
                               "aside": []}

    def backup(self) -> subprocess.CompletedProcess:
        (self.fake / "scenario.json").write_text(json.dumps(self.scenario))
        return subprocess.run(
            ["bash", str(self.tmp / "backup-postgres.sh"), "--backup-dir", str(self.dir),
             "--log-file", str(self.log), "--project", "aimms-web", "--compressor", "gzip"],
            capture_output=True, env=self.env, timeout=60, check=False,
            stdin=subprocess.DEVNULL)

    def calls(self) -> list[dict]:
        path = self.fake / "calls.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

    def dropped(self) -> list[str]:
        return [c["stdin"] for c in self.calls() if "DROP DATABASE" in c["stdin"]]


def test_the_nightly_backup_drops_what_restores_set_aside_longer_than_they_are_kept(tmp_path):
    host = Host(tmp_path)
    old_hex, old_set, old = _aside(b"aimms_web", KEEP_REPLACED_DAYS + 0.5)
    new_hex, new_set, new = _aside(b"postgres", KEEP_REPLACED_DAYS - 0.5)
    host.scenario["aside"] = [(old_hex, old_set), (new_hex, new_set)]
    proc = host.backup()
    assert proc.returncode == 0, proc.stderr
    log = host.log.read_text()
    assert "RESULT ok" in log
    # The old one is dropped and logged; the one kept less long stays.
    assert len(host.dropped()) == 1 and old.decode() in host.dropped()[0], host.dropped()
    assert (f"removed {old.decode()} (aimms_web before a restore of "
            f"{old[len(OLD_PREFIX):len(OLD_PREFIX) + 15].decode()}, kept "
            f"{KEEP_REPLACED_DAYS} days)") in log, log
    assert new.decode() not in log
    # Dropped before the dump, and none of those set aside is ever dumped.
    calls = host.calls()
    dump = next(i for i, c in enumerate(calls) if "-c" in c["argv"] and "sh" in c["argv"])
    drop = next(i for i, c in enumerate(calls) if "DROP DATABASE" in c["stdin"])
    assert drop < dump
    assert f"{OLD_PREFIX.decode()}*" in calls[dump]["argv"]


def test_a_drop_that_fails_is_logged_and_the_backup_goes_on(tmp_path):
    host = Host(tmp_path)
    old_hex, old_set, _old = _aside(b"aimms_web", KEEP_REPLACED_DAYS + 1)
    host.scenario.update(aside=[(old_hex, old_set)], drop_rc=3)
    proc = host.backup()
    assert proc.returncode == 0, proc.stderr
    log = host.log.read_text()
    assert "RESULT ok" in log
    assert (f"warning: cannot drop the databases set aside by restores more than "
            f"{KEEP_REPLACED_DAYS} days ago (fab drop-replaced does): ERROR:  permission "
            "denied") in log, log


def test_nothing_set_aside_drops_nothing(tmp_path):
    host = Host(tmp_path)
    proc = host.backup()
    assert proc.returncode == 0, proc.stderr
    assert host.dropped() == []
    assert "removed" not in host.log.read_text()


def test_the_backup_records_what_it_holds_and_a_restore_check_of_it_only_hashes(tmp_path):
    """The dump reader reads the backup's checked stream beside the check; its facts are
    kept by the file's sha256, and inspect-dump of that file reports them (recorded)
    without decompressing it: a decompressor that fails is never run."""
    host = Host(tmp_path)
    proc = host.backup()
    assert proc.returncode == 0, proc.stderr
    [backup] = sorted(host.dir.glob("aimms_postgres_*.sql.gz"))
    sha = Path(f"{backup}.sha256").read_text().split()[0]
    kept = json.loads((host.dir / ".dump-facts" / f"{sha}.v1.json").read_text())
    assert kept["header"] is True and kept["complete"] is True
    assert kept["bytes"] == len(gzip.decompress(backup.read_bytes()))
    for tool in ("igzip", "pigz", "gzip"):
        fail = tmp_path / "bin" / tool
        fail.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
        fail.chmod(0o755)
    res = subprocess.run([*HOST, "inspect-dump", str(backup)], capture_output=True,
                         env=host.env, timeout=60, check=False)
    facts = host_events.facts(res.stdout.decode(), "inspect-dump", "test")
    assert facts["recorded"] == "1" and facts["stream"] == "ok", facts
    assert facts["sha256"] == facts["sha256_recorded"] == sha
    assert facts["bytes"] == str(kept["bytes"]) and facts["complete"] == "1"
    # --full (the verify's) reads it whole: here the broken decompressor says so.
    res = subprocess.run([*HOST, "inspect-dump", "--full", str(backup)], capture_output=True,
                         env=host.env, timeout=60, check=False)
    facts = host_events.facts(res.stdout.decode(), "inspect-dump", "test")
    assert "recorded" not in facts and facts["stream"] == "bad", facts
    # Bytes that are not the recorded ones are read whole (and the broken tool says so).
    backup.write_bytes(backup.read_bytes() + b"x")
    res = subprocess.run([*HOST, "inspect-dump", str(backup)], capture_output=True,
                         env=host.env, timeout=60, check=False)
    facts = host_events.facts(res.stdout.decode(), "inspect-dump", "test")
    assert "recorded" not in facts and facts["stream"] == "bad", facts
    assert facts["sha256"] != sha


def test_retention_removes_the_facts_of_a_backup_it_removes(tmp_path):
    host = Host(tmp_path)
    assert host.backup().returncode == 0
    folder = host.dir / ".dump-facts"
    [kept] = list(folder.iterdir())
    stale = folder / f"{'0' * 64}.v1.json"
    old = folder / f"{kept.name.split('.')[0]}.v0.json"
    cut = folder / f"{'1' * 64}.v1.json.4711.tmp"
    for path in (stale, old, cut):
        path.write_text("{}")
    time.sleep(1.1)  # a second backup, under another name
    assert host.backup().returncode == 0
    assert {p.name for p in folder.iterdir()} == {
        f"{Path(f'{b}.sha256').read_text().split()[0]}.v1.json"
        for b in host.dir.glob("aimms_postgres_*.sql.gz")} == {kept.name}

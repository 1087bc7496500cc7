"""The host program's offsite command (aimms_ops/agent/offsite*.py), run as the host runs
it (the zipapp, under python3) against a temporary backup dir, with fakes only for what
it calls out to: a fake ``rclone`` (a folder per remote; it records each call's argv and
plays scripted failures) and a fake ``age`` on the PATH."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aimms_ops.core.lock import LOCK_FILES, Lock
from aimms_ops.host import events as host_events
from tests.hostprog import HOST

SECRET = "s3cr3t-" + "k" * 33
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

FAKE_RCLONE = r'''
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"argv": argv, "env": sorted(k for k in os.environ
                                                     if k.startswith("RCLONE_"))}) + "\n")
valued = {"--contimeout", "--timeout", "--low-level-retries", "--retries", "--stats",
          "--format", "--separator", "--include"}
words, opts, i = [], {}, 0
while i < len(argv):
    if argv[i] in valued:
        opts.setdefault(argv[i], []).append(argv[i + 1]); i += 2
    elif argv[i].startswith("-"):
        i += 1
    else:
        words.append(argv[i]); i += 1
cmd, args = words[0], words[1:]
remote, _, path = args[0].partition(":")
if "RCLONE_CONFIG_%s_TYPE" % remote.upper() not in os.environ:
    sys.exit("ERROR : didn't find section in config file")
local = os.path.join(os.environ["FAKE_STORE"], remote, path.lstrip("/"))
s3 = os.environ["RCLONE_CONFIG_%s_TYPE" % remote.upper()] == "s3"
plays = json.loads(os.environ.get("FAKE_RCLONE") or "{}")
play = plays.get("%s:%s" % (cmd, os.path.basename(path).split(".", 1)[-1])) or plays.get(cmd)
if play:
    if play.get("partial") is not None:
        with open(local, "wb") as fh:
            fh.write(sys.stdin.buffer.read()[:play["partial"]])
    sys.stdout.write(play.get("stdout", ""))
    sys.stderr.write(play.get("stderr", ""))
    sys.exit(play.get("status", 0))
if cmd == "lsf":
    if os.path.isfile(local):
        print(os.path.getsize(local)); sys.exit(0)
    bucket = os.path.join(os.environ["FAKE_STORE"], remote, path.split("/")[0])
    if s3 and os.path.isdir(bucket) and not os.path.isdir(local):
        sys.exit(0)  # an empty prefix lists empty
    if not os.path.isdir(local):
        sys.exit("ERROR : : error listing: directory not found")
    for n in sorted(os.listdir(local)):
        print("%d\t%s" % (os.path.getsize(os.path.join(local, n)), n))
elif cmd == "cat":
    if os.path.isfile(local):
        sys.stdout.buffer.write(open(local, "rb").read()); sys.exit(0)
    import fnmatch
    for n in sorted(os.listdir(local)):
        if any(fnmatch.fnmatch(n, p) for p in opts.get("--include", [])):
            sys.stdout.buffer.write(open(os.path.join(local, n), "rb").read())
elif cmd == "rcat":
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, "wb") as fh:
        fh.write(sys.stdin.buffer.read())
elif cmd == "deletefile":
    if not os.path.isfile(local):
        sys.exit("ERROR : object not found")
    os.unlink(local)
elif cmd == "about":
    print(json.dumps({"free": 10 ** 12}))
'''

FAKE_AGE = r'''
import os, sys
if os.environ.get("FAKE_AGE_FAIL"):
    sys.exit("age: error: " + os.environ["FAKE_AGE_FAIL"])
out = sys.stdout.buffer
out.write(b"age-encryption.org/v1\n")
for chunk in iter(lambda: sys.stdin.buffer.read(65536), b""):
    out.write(bytes(b ^ 0x55 for b in chunk))
'''


def _decrypt(data: bytes) -> bytes:
    head = b"age-encryption.org/v1\n"
    assert data.startswith(head)
    return bytes(b ^ 0x55 for b in data[len(head):])


class Host:
    """A backup dir, its settings, the fakes and the two targets' folders."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dir = tmp / "backups"
        self.dir.mkdir()
        self.log = tmp / "backup.log"
        self.store = tmp / "store"
        (self.store / "offsite_s3" / "bucket").mkdir(parents=True)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, body in (("rclone", FAKE_RCLONE), ("age", FAKE_AGE)):
            (self.bin / name).write_text(f"#!{sys.executable}\n{body}")
            (self.bin / name).chmod(0o755)
        self.calls = tmp / "rclone-calls.jsonl"
        creds = tmp / "s3-credentials"
        creds.write_text(f"[default]\naws_access_key_id = AKIA1\nsecret_access_key = {SECRET}\n")
        creds.chmod(0o600)
        key = tmp / "offsite_ed25519"
        key.write_text("key\n")
        self.creds = creds
        self.settings = {
            "OFFSITE_TARGETS": "s3 vault", "OFFSITE_RECIPIENTS": RECIPIENT,
            "OFFSITE_S3_TYPE": "s3", "OFFSITE_S3_RETENTION_DAYS": "7", "OFFSITE_S3_MIN_KEEP": "1",
            "OFFSITE_S3_RETENTION_RULES": "", "OFFSITE_S3_ENDPOINT": "http://127.0.0.1:9",
            "OFFSITE_S3_BUCKET": "bucket", "OFFSITE_S3_PREFIX": "host1",
            "OFFSITE_S3_REGION": "us-east-1", "OFFSITE_S3_CREDENTIALS": str(creds),
            "OFFSITE_VAULT_TYPE": "ssh", "OFFSITE_VAULT_RETENTION_DAYS": "7",
            "OFFSITE_VAULT_MIN_KEEP": "1", "OFFSITE_VAULT_RETENTION_RULES": "",
            "OFFSITE_VAULT_HOST": "backup2", "OFFSITE_VAULT_USER": "vault",
            "OFFSITE_VAULT_PORT": "22", "OFFSITE_VAULT_PATH": "/srv/offsite",
            "OFFSITE_VAULT_KNOWN_HOSTS": "backup2 ssh-ed25519 AAAA",
            "OFFSITE_VAULT_KEY_FILE": str(key)}
        self.conf = tmp / "backup-postgres.sh.offsite"
        self.write_settings()

    def write_settings(self) -> None:
        self.conf.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in self.settings.items()))

    def folder(self, target: str) -> Path:
        return (self.store / "offsite_s3" / "bucket" / "host1" if target == "s3"
                else self.store / "offsite_vault" / "srv" / "offsite")

    def backup(self, days_ago: float = 0, data: bytes | None = None, label: str = "") -> str:
        at = time.time() - days_ago * 86400
        name = time.strftime("aimms_postgres_%Y%m%d_%H%M%S", time.gmtime(at))
        name += (f"_{label}" if label else "") + ".sql.gz"
        body = data if data is not None else os.urandom(3000) + name.encode()
        (self.dir / name).write_bytes(body)
        (self.dir / f"{name}.sha256").write_text(f"{hashlib.sha256(body).hexdigest()}  {name}\n")
        os.utime(self.dir / name, (at, at))
        return name

    def run(self, *args: str, plays: dict | None = None, env: dict | None = None,
            timeout: str = "600") -> subprocess.CompletedProcess:
        full = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
                "FAKE_STORE": str(self.store), "FAKE_LOG": str(self.calls),
                "FAKE_RCLONE": json.dumps(plays or {}), **(env or {})}
        cmd = [*HOST, "offsite", "--backup-dir", str(self.dir), "--log-file", str(self.log),
               "--lock-timeout", timeout, "--offsite-config", str(self.conf), *args]
        return subprocess.run(cmd, capture_output=True, env=full, timeout=60, check=False)

    def push_all(self, **kw) -> subprocess.CompletedProcess:
        return self.run("push-all", "--run-id", "backup[77]", "--report", **kw)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def rclone_calls(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [json.loads(ln)["argv"] for ln in self.calls.read_text().splitlines()]

    def meta(self, target: str, name: str) -> dict[str, str]:
        text = (self.folder(target) / f"{name}.age.meta").read_text()
        return dict(ln.split("=", 1) for ln in text.splitlines())


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


def _out(proc: subprocess.CompletedProcess) -> str:
    """The run's events, a line each: ``offsite.ACTION=TARGET NAME REASON`` and
    ``offsite.result=TARGET ok DETAIL`` or ``offsite.result=TARGET failed: DETAIL``."""
    lines = []
    for e in host_events.parse(proc.stdout.decode()).all:
        if e["event"] == "offsite":
            lines.append(f"offsite.{e['action']}={e['target']} {e['name']} {e['reason']}"
                         .rstrip())
        elif e["event"] == "offsite-result":
            ok = "ok" if e["ok"] else "failed:"
            lines.append(f"offsite.result={e['target']} {ok} {e['detail']}")
    return "\n".join(lines) + "\n"


def test_push_all_pushes_each_good_backup_to_each_target_the_meta_last(host):
    a, b = host.backup(days_ago=1), host.backup()
    proc = host.push_all()
    assert proc.returncode == 0, proc.stderr
    results = [ln for ln in _out(proc).splitlines() if ln.startswith("offsite.result=")]
    assert [r.split(" ")[:2] for r in results] == [["offsite.result=s3", "ok"],
                                                  ["offsite.result=vault", "ok"]]
    assert re.search(r"offsite.result=s3 ok pushed=2 pruned=0 seconds=\d+$", results[0])
    assert sum(" backup[77] RESULT offsite s3 ok pushed=2" in ln for ln in host.log_lines()) == 1
    for target in ("s3", "vault"):
        for name in (a, b):
            obj = (host.folder(target) / f"{name}.age").read_bytes()
            assert _decrypt(obj) == (host.dir / name).read_bytes()
            meta = host.meta(target, name)
            assert meta["plaintext_sha256"] == hashlib.sha256(_decrypt(obj)).hexdigest()
            assert meta["encrypted_sha256"] == hashlib.sha256(obj).hexdigest()
            assert int(meta["encrypted_size"]) == len(obj)
            assert meta["recipients"] == RECIPIENT
    rcats = [c[-1].rsplit("/", 1)[1] for c in host.rclone_calls() if "rcat" in c]
    assert rcats.index(f"{a}.age") < rcats.index(f"{a}.age.meta") < rcats.index(f"{b}.age")
    # Oldest first; without --report nothing on stdout.
    again = host.run("push-all", "--run-id", "backup[78]")
    assert again.returncode == 0 and again.stdout == b""
    assert any("backup[78] RESULT offsite vault ok pushed=0 pruned=0" in ln
               for ln in host.log_lines())


def test_the_store_key_is_only_in_rclones_environment(host):
    host.backup()
    assert host.push_all().returncode == 0
    calls = host.calls.read_text()
    assert SECRET not in calls and "AKIA1" not in calls
    envs = [json.loads(ln)["env"] for ln in calls.splitlines()]
    assert all("RCLONE_CONFIG_OFFSITE_S3_SECRET_ACCESS_KEY" in e for e, c in
               zip(envs, host.rclone_calls(), strict=True) if any("offsite_s3:" in w for w in c))
    assert SECRET not in host.log.read_text()


def test_list_cat_and_mark_verified_keep_their_lines(host):
    name = host.backup()
    assert host.push_all().returncode == 0
    (host.folder("s3") / "aimms_postgres_20200101_000000.sql.gz.age").write_bytes(b"cut")
    proc = host.run("mark-verified", "s3", name)
    assert proc.returncode == 0, proc.stderr
    found = host_events.parse(host.run("list").stdout.decode()).all
    assert [e["event"] for e in found] == ["target", "copy", "partial", "target", "copy"]
    assert found[0] == {"event": "target", "target": "s3", "ok": True, "error": ""}
    copy = found[1]
    assert copy["target"] == "s3" and copy["name"] == name
    assert copy["object_size"] == copy["encrypted_size"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:]+Z", copy["verified_at"])
    assert found[2] == {"event": "partial", "target": "s3",
                        "name": "aimms_postgres_20200101_000000.sql.gz"}
    assert found[3]["target"] == "vault" and found[3]["ok"]
    assert found[4]["verified_at"] == "-"
    cat = host.run("cat", "vault", f"{name}.age")
    assert cat.returncode == 0 and _decrypt(cat.stdout) == (host.dir / name).read_bytes()
    bad = host.run("cat", "vault", "/etc/passwd")
    assert bad.returncode == 64 and b"not an offsite object" in bad.stderr
    other = host.run("list", "--target", "nope")
    assert other.returncode == 1 and b"no offsite target named nope" in other.stderr


def test_a_failed_upload_is_removed_named_and_holds_back_that_targets_retention(host):
    old = host.backup(days_ago=30)
    assert host.run("sync", "--target", "s3").returncode == 0
    new = host.backup()
    why = "ERROR : aimms.age: Failed to copy: InvalidAccessKeyId: no such key\n"
    proc = host.push_all(plays={"rcat:sql.gz.age": {"status": 1, "stderr": why,
                                                    "partial": 100}})
    out = _out(proc)
    assert proc.returncode == 0
    assert f"offsite.result=s3 failed: upload of {new} failed: copy: InvalidAccessKeyId" in out
    assert not (host.folder("s3") / f"{new}.age").exists()
    # s3 keeps the old copy its retention would remove: the run failed.
    assert (host.folder("s3") / f"{old}.age.meta").is_file()
    assert "offsite.remove=s3" not in out
    failed = [ln for ln in host.log_lines() if "RESULT offsite s3 failed: upload of" in ln]
    assert len(failed) == 1
    # Fixed: the next run pushes it, then prunes.
    again = host.run("sync")
    assert again.returncode == 0, again.stderr
    assert f"offsite.push=s3 {new}" in _out(again)
    assert f"offsite.remove=s3 {old} " in _out(again)
    assert not (host.folder("s3") / f"{old}.age").exists()
    assert (host.folder("s3") / f"{new}.age.meta").is_file()


def test_a_backup_that_no_longer_matches_its_checksum_is_not_pushed(host):
    name = host.backup()
    (host.dir / name).write_bytes(b"changed on disk")
    out = _out(host.push_all())
    assert f"offsite.result=s3 failed: {name} does not match its .sha256" in out
    assert "check it with fab verify" in out
    assert not list(host.folder("s3").glob("*")) if host.folder("s3").exists() else True


def test_age_failing_fails_the_push_and_leaves_nothing(host):
    name = host.backup()
    out = _out(host.push_all(env={"FAKE_AGE_FAIL": "bad recipient"}))
    assert f"offsite.result=vault failed: age failed on {name}: age: error: bad recipient" in out
    assert not host.folder("vault").exists() or not list(host.folder("vault").iterdir())


def test_a_copy_whose_plaintext_differs_is_pushed_again(host):
    name = host.backup()
    assert host.run("sync").returncode == 0
    meta = host.folder("s3") / f"{name}.age.meta"
    good = host.meta("s3", name)["plaintext_sha256"]
    meta.write_text(meta.read_text().replace(good, "0" * 64))
    proc = host.run("sync", "--target", "s3")
    assert proc.returncode == 0 and f"offsite.push=s3 {name}" in _out(proc)
    assert sum("differs from the local backup" in ln for ln in host.log_lines()) == 1
    assert host.meta("s3", name)["plaintext_sha256"] == good
    assert "pushed=0" in _out(host.run("sync", "--target", "s3"))


def test_a_partial_upload_is_removed_unless_this_run_pushed_it_whole(host):
    name = host.backup()
    host.folder("s3").mkdir(parents=True)
    (host.folder("s3") / f"{name}.age").write_bytes(b"cut short")
    (host.folder("s3") / "aimms_postgres_20200101_000000.sql.gz.age").write_bytes(b"cut")
    proc = host.run("sync", "--target", "s3")
    assert proc.returncode == 0, proc.stderr
    assert "offsite.remove=s3 aimms_postgres_20200101_000000.sql.gz partial upload" in _out(proc)
    assert f"{name} partial" not in _out(proc)
    assert sorted(p.name for p in host.folder("s3").iterdir()) == [f"{name}.age",
                                                                  f"{name}.age.meta"]


def test_dry_run_says_what_it_would_do_and_does_nothing(host):
    old = host.backup(days_ago=30)
    assert host.run("sync").returncode == 0
    new = host.backup()
    before, logged = sorted(p.name for p in host.folder("vault").iterdir()), host.log_lines()
    out = _out(host.run("sync", "--dry-run", "--target", "vault"))
    assert f"offsite.push=vault {new}" in out and f"offsite.remove=vault {old}" in out
    assert sorted(p.name for p in host.folder("vault").iterdir()) == before
    assert host.log_lines() == logged


@pytest.mark.parametrize("case, message", [
    ("mode", "is mode 644 owned by"),
    ("missing", "not found on"),
    ("empty", "has no access_key_id and secret_access_key"),
])
def test_the_credentials_file_is_checked(host, case, message):
    host.backup()
    if case == "mode":
        host.creds.chmod(0o644)
    elif case == "missing":
        host.creds.unlink()
    else:
        host.creds.write_text("# nothing\n")
    out = _out(host.push_all())
    assert f"offsite.result=s3 failed: credentials file {host.creds} " in out
    assert message in out and "offsite.result=vault ok" in out


def test_a_missing_bucket_is_named_and_a_missing_ssh_folder_is_made(host):
    host.backup()
    host.settings["OFFSITE_S3_BUCKET"] = "nope"
    host.write_settings()
    out = _out(host.push_all())
    assert "offsite.result=s3 failed: bucket nope not found at http://127.0.0.1:9 (create" in out
    assert "offsite.result=vault ok pushed=1" in out


def test_a_full_disk_on_an_ssh_target_is_named(host):
    host.backup()
    plays = {"rcat:sql.gz.age": {"status": 1, "stderr": "ERROR : Failed to copy: Failure\n"},
             "about": {"stdout": json.dumps({"total": 524288, "free": 12})}}
    out = _out(host.push_all(plays=plays))
    assert "the target's disk is full: 12 B free in /srv/offsite; free space there" in out
    assert "offsite.result=s3 failed" in out and "disk is full" not in out.split("vault")[0]


def test_missing_tools_and_settings_are_named(host):
    host.backup()
    empty = host.tmp / "empty"
    empty.mkdir()
    out = _out(host.push_all(env={"PATH": str(empty)}))
    assert "offsite.result=s3 failed: rclone age not installed on" in out
    assert "(install it: apt-get install rclone age)" in out
    proc = host.run("list", env={"PATH": str(empty)})
    assert proc.returncode == 1 and b"offsite failed: rclone age not installed" in proc.stderr
    host.conf.unlink()
    proc = host.push_all()
    assert proc.returncode == 0
    assert "offsite.result=all failed: offsite settings" in _out(proc)
    assert "(run fab install-backups)" in host.log_lines()[-1]
    assert "RESULT offsite all failed" in host.log_lines()[-1]


def test_sync_waits_for_the_backup_lock_and_names_its_holder(host):
    host.backup()
    with Lock(str(host.dir / LOCK_FILES["backup"]), "backup"):
        proc = host.run("sync", timeout="1")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "a backup or retention run is still running after 1s" in err
    assert f"held by backup pid {os.getpid()} since" in err
    assert any(f"waiting up to 1s for a backup or retention run (backup pid {os.getpid()}"
               in ln for ln in host.log_lines())
    assert not host.folder("s3").exists()
    proc = host.run("sync")
    assert proc.returncode == 0 and not list(host.dir.glob("*.owner.*"))

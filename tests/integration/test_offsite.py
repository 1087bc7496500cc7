"""Offsite copies against the sandbox's real targets: its S3 server (`rclone serve s3`)
and its second SSH host, pushed by the sandbox host's own rclone and age. No mocks.

Each test installs the inventory it needs first (sandbox/inventory-offsite.yml, or a
variant of it in tmp_path), and empties what it needs empty, so that it passes after
a killed run left anything behind.

The tests that only read a pushed backup share one (the ``pushed`` fixture, made once
per module on an empty backup dir and empty targets); they come first, and each one
that changes a copy puts it back. The others start from an empty backup dir and empty
targets of their own (``off.fresh()``), so that a push moves only what the test made.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, SANDBOX_OUT, _read_env, fab_error_line
from .faults import wait_until

pyrage = pytest.importorskip("pyrage")

pytestmark = pytest.mark.integration

MARKER = b"-- PostgreSQL database cluster dump complete"


class Offsite:
    def __init__(self, sandbox) -> None:
        self.sb = sandbox
        self.env = _read_env(SANDBOX_OUT / "offsite.env")
        self.inventory = Path(self.env["SANDBOX_OFFSITE_INVENTORY"])
        data = yaml.safe_load(self.inventory.read_text())
        self.host = data["hosts"]["aidset"]
        s3 = self.s3 = next(t for t in self.host["offsite"] if t["type"] == "s3")
        self.s3_dir = Path(self.env["SANDBOX_S3_DATA"]) / s3["bucket"] / s3["prefix"]
        vault = next(t for t in self.host["offsite"] if t["type"] == "ssh")
        self.vault_dir = Path(vault["path"])
        self.backup_dir = self.host["backup_dir"]
        self.log = self.host["log_file"]
        self._current = self.inventory
        #: the inventory the host was last installed with (None: not known)
        self.installed: Path | None = None

    def dir_of(self, target: str) -> Path:
        return self.s3_dir if target == "s3" else self.vault_dir

    def variant(self, tmp_path: Path, change=None, name: str = "inventory.yml",
                **top: object) -> Path:
        """A copy of the offsite inventory with ``change(host_dict)`` and ``top`` applied."""
        data = yaml.safe_load(self.inventory.read_text())
        if change is not None:
            change(data["hosts"]["aidset"])
        data.update(top)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    def fab(self, *args: str, inventory: Path | None = None, **kw):
        return self.sb.fab(*args, inventory=inventory or self.inventory, **kw)

    def install(self, inventory: Path | None = None) -> None:
        self.installed = None
        proc = self.fab("install-backups", inventory=inventory)
        assert proc.returncode == 0, proc.stderr
        self.installed = inventory or self.inventory

    def remove_copies(self, name: str | None = None) -> None:
        """Remove the copies of ``name`` (None: every object) from both targets."""
        removed = 0
        for d in (self.s3_dir, self.vault_dir):
            if d.is_dir():
                for p in d.iterdir():
                    if name is None and p.is_dir():  # a folder: the PITR repository's copy
                        shutil.rmtree(p)
                        removed += 1
                    elif name is None or p.name.startswith(name + "."):
                        p.unlink()
                        removed += 1
        if removed:
            self.settle()

    def clear_targets(self) -> None:
        self.remove_copies()

    def fresh(self) -> None:
        """No backup on the host and nothing on the targets."""
        self.clear_backups()
        self.clear_targets()

    def settle(self) -> None:
        """Wait until the S3 server lists what a test changed on its disk behind its back
        (it keeps a directory's listing for 1 s)."""
        want = sorted(f"{p.stat().st_size};{p.name}" for p in self.s3_dir.iterdir()
                      if p.is_file()) if self.s3_dir.is_dir() else []
        wait_until(lambda: self.s3_listing() == want, timeout=30, every=0.1)

    def s3_listing(self) -> list[str] | None:
        """The objects the S3 server lists under the target's prefix, ``SIZE;NAME``
        (through the venv's rclone, a client of its own); None when it cannot list."""
        s3 = self.s3
        keys = dict((k.strip(), v.strip()) for k, _, v in (
            ln.partition("=") for ln in Path(s3["credentials"]).read_text().splitlines()))
        env = {**os.environ, "RCLONE_CONFIG": "/dev/null", "RCLONE_S3_PROVIDER": "Other",
               "RCLONE_S3_ENDPOINT": s3["endpoint"], "RCLONE_S3_REGION": s3["region"],
               "RCLONE_S3_ACCESS_KEY_ID": keys["access_key_id"],
               "RCLONE_S3_SECRET_ACCESS_KEY": keys["secret_access_key"]}
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "rclone"), "lsf", "--files-only",
                               "--format=sp", f":s3:{s3['bucket']}/{s3['prefix']}"],
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False, stdin=subprocess.DEVNULL)
        return sorted(proc.stdout.split()) if proc.returncode == 0 else None

    def clear_backups(self) -> None:
        self.sb.ssh(f"rm -f {shlex.quote(self.backup_dir)}/aimms_postgres_* "
                    f"{shlex.quote(self.backup_dir)}/.aimms_postgres_*")

    def backup(self, inventory: Path | None = None) -> tuple[str, subprocess.CompletedProcess]:
        proc = self.fab("backup", inventory=inventory)
        assert proc.returncode == 0, proc.stderr
        name = next(w for w in proc.stdout.split() if w.startswith("aimms_postgres_"))
        return name, proc

    def local_bytes(self, name: str) -> bytes:
        return self.sb.ssh(f"cat {shlex.quote(self.backup_dir + '/' + name)}").stdout

    def identity(self):
        text = Path(self.env["SANDBOX_AGE_IDENTITY"]).read_text()
        key = next(ln for ln in text.splitlines() if ln.startswith("AGE-SECRET-KEY-"))
        return pyrage.x25519.Identity.from_str(key)

    def meta(self, target: str, name: str) -> dict[str, str]:
        text = (self.dir_of(target) / f"{name}.age.meta").read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def log_lines(self, since: int) -> list[str]:
        return self.sb.sh(f"tail -c +{since + 1} {shlex.quote(self.log)}").splitlines()

    def log_size(self) -> int:
        out = self.sb.sh(f"stat -c %s {shlex.quote(self.log)} 2>/dev/null || echo 0",
                         check=False).strip()
        return int(out or 0)


@pytest.fixture(scope="module")
def offsite(sandbox) -> Offsite:
    return Offsite(sandbox)


@pytest.fixture
def off(offsite) -> Offsite:
    """The offsite inventory installed on the host (again when a test installed another)."""
    if offsite.installed != offsite.inventory:
        offsite.install()
    offsite._current = offsite.inventory
    return offsite


@dataclass
class Pushed:
    name: str
    proc: subprocess.CompletedProcess  # the backup that pushed it
    local: bytes  # the backup's bytes on the host


@pytest.fixture(scope="module")
def pushed(offsite) -> Pushed:
    """One backup, pushed to both targets: the host's backup dir and the targets hold it
    alone. A test that changes a copy puts it back; the last one removes it from the host."""
    offsite.install()
    offsite.fresh()
    name, proc = offsite.backup()
    return Pushed(name, proc, offsite.local_bytes(name))


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- the tests that share the pushed backup -------------------------------------------


def test_a_backup_leaves_an_encrypted_copy_on_each_target(off, pushed):
    name, proc, local = pushed.name, pushed.proc, pushed.local
    assert "RESULT offsite s3 ok" in proc.stderr and "RESULT offsite vault ok" in proc.stderr
    for target in ("s3", "vault"):
        obj = (off.dir_of(target) / f"{name}.age").read_bytes()
        assert obj.startswith(b"age-encryption.org/v1\n")
        # No plaintext of the dump: not its bytes, not a piece of them.
        assert local[:2] == b"\x1f\x8b"
        for i in range(0, len(local) - 64, max(1, len(local) // 50)):
            assert local[i:i + 64] not in obj
        assert pyrage.decrypt(obj, [off.identity()]) == local
        meta = off.meta(target, name)
        assert meta["plaintext_sha256"] == _sha(local)
        assert meta["encrypted_sha256"] == _sha(obj)
        assert int(meta["encrypted_size"]) == len(obj)


def test_verify_offsite_reads_each_copy_back(off, pushed):
    proc = off.fab("verify", "--offsite")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("completion marker OK") == 2
    assert (off.dir_of("s3") / f"{pushed.name}.age.verified").is_file()


def test_a_restore_with_the_wrong_identity_touches_nothing(off, pushed, tmp_path):
    name = pushed.name
    other = tmp_path / "other.key"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    before = off.sb.dumpall()
    inv = off.variant(tmp_path, download_dir=str(tmp_path / "backups"))
    proc = off.fab("restore", f"--file={name}", "--from=vault", "--yes",
                   f"--identity={other}", inventory=inv)
    assert proc.returncode != 0
    assert "cannot decrypt the copy" in fab_error_line(proc)
    assert off.sb.dumpall() == before
    assert not (tmp_path / "backups" / name).exists()


def test_a_corrupt_object_is_named_by_verify_and_a_restore_from_it_touches_nothing(off, pushed,
                                                                                  tmp_path):
    name = pushed.name
    obj = off.dir_of("s3") / f"{name}.age"
    good = obj.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    off.settle()
    try:
        proc = off.fab("verify", "--offsite=s3")
        assert proc.returncode == 2
        line = fab_error_line(proc)
        assert f"the copy of {name} on s3 is corrupt" in line
        before = off.sb.dumpall()
        inv = off.variant(tmp_path, download_dir=str(tmp_path / "backups"))
        proc = off.fab("restore", f"--file={name}", "--from=s3", "--yes", inventory=inv)
        assert proc.returncode != 0
        assert "is corrupt" in fab_error_line(proc)
        assert off.sb.dumpall() == before
        assert not list((tmp_path / "backups").glob("*"))
    finally:
        obj.write_bytes(good)
        off.settle()


def test_a_copy_whose_plaintext_differs_is_named_and_pushed_again(off, pushed):
    name = pushed.name
    meta = off.dir_of("s3") / f"{name}.age.meta"
    good = off.meta("s3", name)["plaintext_sha256"]
    meta.write_text(meta.read_text().replace(good, "0" * 64))
    off.settle()
    proc = off.fab("verify", "--offsite=s3")
    assert proc.returncode == 2
    assert "differs from the recorded" in fab_error_line(proc)
    since = off.log_size()
    proc = off.fab("offsite-sync", "--target=s3")
    assert proc.returncode == 0, proc.stderr
    lines = off.log_lines(since)
    assert sum("differs from the local backup" in ln for ln in lines) == 1
    assert off.meta("s3", name)["plaintext_sha256"] == good
    assert off.fab("verify", "--offsite=s3").returncode == 0


def test_offsite_sync_twice_changes_nothing(off, pushed):
    off.remove_copies(pushed.name)  # the first sync has something to push
    first = off.fab("offsite-sync", "--json")
    assert first.returncode == 0, first.stderr
    results = {r["target"]: r for r in json.loads(first.stdout)}
    assert set(results) == {"s3", "vault"} and all(r["ok"] for r in results.values())
    assert all(pushed.name in r["pushed"] for r in results.values())
    stamps = {p: p.stat().st_mtime_ns for t in ("s3", "vault") for p in off.dir_of(t).iterdir()}
    assert all(off.dir_of(t) / f"{pushed.name}.age.meta" in stamps for t in ("s3", "vault"))
    second = off.fab("offsite-sync")
    assert second.returncode == 0, second.stderr
    assert "s3: nothing to change" in second.stderr
    assert "vault: nothing to change" in second.stderr
    assert {p: p.stat().st_mtime_ns for t in ("s3", "vault")
            for p in off.dir_of(t).iterdir()} == stamps
    dry = off.fab("offsite-sync", "--dry-run")
    assert dry.returncode == 0 and "nothing to change" in dry.stderr


def test_list_backups_shows_where_the_copies_are_and_those_only_offsite(off, pushed):
    import json

    name = pushed.name
    gone, _ = off.backup()
    try:
        off.sb.ssh(f"rm -f {off.backup_dir}/{gone} {off.backup_dir}/{gone}.sha256")
        proc = off.fab("list-backups")
        assert proc.returncode == 0, proc.stderr
        assert "ONLY OFFSITE" in proc.stdout and "host + offsite" in proc.stdout
        items = json.loads(off.fab("list-backups", "--json").stdout)
        on_host = next(i for i in items if i["name"] == name and i["location"] == "remote")
        assert sorted(on_host["offsite"]) == ["s3", "vault"]
        copies = [i for i in items if i["location"] == "offsite" and i["name"] == gone]
        assert sorted(c["target"] for c in copies) == ["s3", "vault"]
        assert all(c["complete"] for c in copies)
    finally:
        off.sb.ssh(f"rm -f {off.backup_dir}/{gone} {off.backup_dir}/{gone}.sha256")
        off.remove_copies(gone)


def test_rebuild_volume_from_an_offsite_copy_plans_with_the_verified_copy(off, pushed,
                                                                          tmp_path):
    """The last test of the pushed backup: the host's backups are lost."""
    name = pushed.name
    off.clear_backups()
    inv = off.variant(tmp_path, download_dir=str(tmp_path / "backups"))
    proc = off.fab("rebuild-volume", "--file=latest", "--from=vault", "--dry-run", "--json",
                   inventory=inv)
    assert proc.returncode == 0, proc.stderr
    import json

    plan = json.loads(proc.stdout[:proc.stdout.rindex("}") + 1])
    assert plan["backup"]["source"] == str(tmp_path / "backups" / name)
    assert plan["backup"]["location"] == "local"


# --- the tests that make their own backups ---------------------------------------------


def test_restore_from_s3_onto_an_empty_backup_dir_is_exact(off, tmp_path):
    sb = off.sb
    off.fresh()
    before = sb.dumpall()
    off.backup()
    # Production moves on, then the host's backups are lost.
    sb.psql("DELETE FROM orders WHERE id % 2 = 0; CREATE TABLE after_backup (x int);")
    off.clear_backups()
    assert sb.sh(f"ls {off.backup_dir}").strip() == ""
    # The runbook "aidset is gone", step by step (README).
    inv = off.variant(tmp_path, download_dir=str(tmp_path / "backups"))
    for step in (["check"], ["install-backups"]):
        assert off.fab(*step, inventory=inv).returncode == 0
    listing = off.fab("list-backups", inventory=inv)
    assert listing.returncode == 0 and "ONLY OFFSITE" in listing.stdout
    assert "host + offsite" not in listing.stdout
    assert off.fab("verify", "--offsite=s3", inventory=inv).returncode == 0
    proc = off.fab("restore", "--file=latest", "--from=s3",
                   f"--identity={off.env['SANDBOX_AGE_IDENTITY']}", "--yes", inventory=inv)
    assert proc.returncode == 0, proc.stderr
    assert sb.dumpall() == before
    # The host holds the restore's safety copy only: not yet a regular backup.
    status = off.fab("status", inventory=inv)
    assert status.returncode == 2 and "only safety copies (1), no regular backup" in status.stdout
    # The restore's safety backup was pushed too, and is never what latest means: a
    # second restore (say the first was cut short) picks the same copy.
    assert any(p.name.endswith("_pre-restore.sql.gz.age") for p in off.dir_of("s3").iterdir())
    sb.psql("CREATE TABLE after_restore (x int);")
    again = off.fab("restore", "--file=latest", "--from=s3", "--yes", "--no-safety-backup",
                    inventory=inv)
    assert again.returncode == 0, again.stderr
    assert sb.dumpall() == before
    # The copy was decrypted here, into the download folder, verified.
    got = list((tmp_path / "backups").glob("aimms_postgres_*.sql.gz"))
    assert got and (got[0].stat().st_mode & 0o777) == 0o600
    # The runbook's last step: the new host's first regular backup, then all is well.
    assert off.fab("backup", inventory=inv).returncode == 0
    status = off.fab("status", inventory=inv)
    assert status.returncode == 0, status.stdout



def _check_failed_push(off, proc, since: int, target: str, reason: str, name: str) -> None:
    """A failed push: the backup succeeded, is on the host and good; one line in the
    log, in the task's output and in status."""
    assert proc.returncode == 0, proc.stderr
    assert f"RESULT offsite {target} failed:" in proc.stderr
    assert reason in proc.stderr
    listing = off.sb.sh(f"ls {off.backup_dir}")
    assert name in listing and f"{name}.sha256" in listing
    lines = [ln for ln in off.log_lines(since) if f"RESULT offsite {target} failed:" in ln]
    assert len(lines) == 1, lines
    assert any(f"RESULT ok {name}" in ln for ln in off.log_lines(since))
    status = off.fab("status", inventory=off._current)
    assert status.returncode == 2
    assert f"offsite {target}: last push failed" in status.stdout.splitlines()[0]


@pytest.mark.parametrize("fault, reason", [
    ("wrong credentials", "InvalidAccessKeyId"),
    ("missing bucket", "bucket"),
])
def test_a_failed_s3_push_keeps_the_backup_and_the_next_run_catches_up(off, tmp_path, fault,
                                                                        reason):
    off.fresh()
    host_creds = off.sb.sh("echo ~/.config/aimms-ops").strip()

    def change(h):
        s3 = next(t for t in h["offsite"] if t["type"] == "s3")
        if fault == "wrong credentials":
            s3["credentials"] = f"{host_creds}/wrong-credentials"
        else:
            s3["bucket"] = "no-such-bucket"

    off.sb.ssh(f"umask 077; printf 'access_key_id = AKIAWRONGWRONGWRONG1\\n"
               f"secret_access_key = {'x' * 40}\\n' > {host_creds}/wrong-credentials")
    bad = off.variant(tmp_path, change)
    off.install(bad)
    off._current = bad
    since = off.log_size()
    name, proc = off.backup(bad)
    _check_failed_push(off, proc, since, "s3", reason, name)
    # The vault target is not held back by the s3 one.
    assert "RESULT offsite vault ok" in proc.stderr
    assert not (off.dir_of("s3") / f"{name}.age.meta").exists()
    # Fixed: the next run pushes what is missing.
    off.install()
    proc = off.fab("offsite-sync")
    assert proc.returncode == 0, proc.stderr
    assert (off.dir_of("s3") / f"{name}.age.meta").is_file()
    off._current = off.inventory
    assert off.fab("status").returncode == 0


def test_an_ssh_target_with_an_unknown_host_key_is_refused(off, tmp_path):
    off.fresh()
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    other = key.with_suffix(".pub").read_text().split()[:2]

    def change(h):
        vault = next(t for t in h["offsite"] if t["type"] == "ssh")
        vault["known_hosts"] = f"{vault['known_hosts'].split()[0]} {' '.join(other)}"

    bad = off.variant(tmp_path, change)
    off.install(bad)
    off._current = bad
    since = off.log_size()
    name, proc = off.backup(bad)
    _check_failed_push(off, proc, since, "vault", "knownhosts", name)
    assert not any(off.dir_of("vault").iterdir())
    off.install()
    assert off.fab("offsite-sync").returncode == 0
    assert (off.dir_of("vault") / f"{name}.age.meta").is_file()


def test_a_store_stopped_mid_push_fails_cleanly_and_the_next_run_catches_up(off, sandbox):
    off.fresh()
    # A large (fake) backup, so that the push takes long enough to be cut.
    name = time.strftime("aimms_postgres_%Y%m%d_%H%M%S_big.sql.gz", time.gmtime())
    path = f"{off.backup_dir}/{name}"
    off.sb.ssh(f"head -c 400M /dev/urandom > {path} && sha256sum {path} | "
               f"sed 's#  .*/#  #' > {path}.sha256 && chmod 600 {path} {path}.sha256")
    try:
        since = off.log_size()
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "fab"), "offsite-sync", "--target=s3"],
            env={**os.environ, "AIMMS_OPS_INVENTORY": str(off.inventory)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(f"pushing {name}" in ln for ln in off.log_lines(since)):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        pid = subprocess.run(["bash", "-c", "source sandbox/lib.sh && source sandbox/offsite.sh "
                              "&& s3_pid"], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ}).stdout.strip()
        assert pid, "the sandbox's S3 server is not running"
        os.kill(int(pid), 9)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1
        assert "Traceback" not in err
        assert "offsite s3 failed" in err.splitlines()[-1]
        assert not (off.dir_of("s3") / f"{name}.age.meta").exists()
        lines = [ln for ln in off.log_lines(since) if "RESULT offsite s3 failed:" in ln]
        assert len(lines) == 1
        # The store is back: the next run pushes it.
        subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], check=True, cwd=REPO,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        off.__init__(sandbox)
        off.install()
        again = off.fab("offsite-sync", "--target=s3")
        assert again.returncode == 0, again.stderr
        assert (off.dir_of("s3") / f"{name}.age.meta").is_file()
    finally:
        off.sb.ssh(f"rm -f {path} {path}.sha256", check=False)


def test_retention_per_target_never_prunes_on_a_failed_run(off, tmp_path):
    off.clear_targets()
    off.clear_backups()
    # Old backups (by their names), all pushed.
    old = []
    for days in (30, 20, 10):
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(time.time() - days * 86400))
        n = f"aimms_postgres_{stamp}.sql.gz"
        p = f"{off.backup_dir}/{n}"
        off.sb.ssh(f"echo {days} | gzip > {p} && sha256sum {p} | sed 's#  .*/#  #' > "
                   f"{p}.sha256 && chmod 600 {p} {p}.sha256")
        old.append(n)

    def keep_one(h):
        for t in h["offsite"]:
            t["retention_days"] = 7
            t["min_keep"] = 1

    short = off.variant(tmp_path, lambda h: [t.update(retention_days=60, min_keep=5)
                                             for t in h["offsite"]])
    off.install(short)
    assert off.fab("offsite-sync", inventory=short).returncode == 0
    assert all((off.dir_of("s3") / f"{n}.age.meta").is_file() for n in old)
    # A failed push to s3: s3 is not pruned, vault is.
    tight = off.variant(tmp_path, lambda h: (keep_one(h), next(
        t for t in h["offsite"] if t["type"] == "s3").update(bucket="no-such-bucket")))
    off.install(tight)
    name, proc = off.backup(tight)
    assert "RESULT offsite s3 failed" in proc.stderr
    assert all((off.dir_of("s3") / f"{n}.age.meta").is_file() for n in old)
    vault = {p.name for p in off.dir_of("vault").iterdir()}
    assert f"{name}.age.meta" in vault
    assert not any(n + ".age" in vault for n in old)
    # Dry run says what it would remove; the real run removes it, never the newest.
    fixed = tmp_path / "fixed.yml"
    data = yaml.safe_load(tight.read_text())
    next(t for t in data["hosts"]["aidset"]["offsite"] if t["type"] == "s3")["bucket"] = \
        yaml.safe_load(off.inventory.read_text())["hosts"]["aidset"]["offsite"][0]["bucket"]
    fixed.write_text(yaml.safe_dump(data))
    off.install(fixed)
    dry = off.fab("offsite-sync", "--dry-run", inventory=fixed)
    assert dry.returncode == 0 and all(n in dry.stdout for n in old)
    assert all((off.dir_of("s3") / f"{n}.age.meta").is_file() for n in old)
    assert off.fab("offsite-sync", inventory=fixed).returncode == 0
    s3 = {p.name for p in off.dir_of("s3").iterdir()}
    assert f"{name}.age.meta" in s3 and not any(n + ".age" in s3 for n in old)
    off.clear_backups()
    off.install()


HOSTILE = ["$(touch {c})", "`touch {c}`", "x;touch {c}", "a b\ntouch {c}", "../../etc/passwd",
           "/etc/passwd", "", "-rf", "x" * 3000]


@pytest.mark.parametrize("args", [
    ["offsite-sync", "--target={v}"],
    ["offsite-sync", "--target={v}", "--dry-run"],
    ["verify", "--offsite={v}"],
    ["verify", "--offsite", "--file={v}"],
    ["restore", "--from={v}", "--file=latest", "--yes"],
    ["restore", "--from=s3", "--file={v}", "--yes"],
])
def test_hostile_offsite_arguments_are_refused_with_one_line(off, tmp_path, args):
    canary = tmp_path / "canary"
    argvs = [[a.replace("{v}", value.replace("{c}", str(canary))) for a in args]
             for value in HOSTILE]
    # Each value its own command line, all in one process (tests/integration/cli_batch.py).
    for argv, proc in zip(argvs, off.sb.fab_many([(a, off.inventory, None) for a in argvs]),
                          strict=True):
        assert proc.returncode != 0, (argv, proc.stdout)
        fab_error_line(proc)
    # Nothing removes a canary: one look here and on the host covers every value above.
    assert not canary.exists()
    assert off.sb.ssh(f"test ! -e {canary}", check=False).returncode == 0, "a value ran there"


def test_the_store_key_is_never_on_a_command_line_in_the_log_or_the_output(off):
    import threading

    env = _read_env(SANDBOX_OUT / "offsite.env")
    secret = (Path(env["SANDBOX_S3_DATA"]).parent / "s3-auth").read_text().split()[1]
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        own = str(os.getpid())
        while not stop.is_set():
            for p in Path("/proc").iterdir():
                if not p.name.isdigit() or p.name == own:
                    continue
                try:
                    cmd = (p / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if secret in cmd:
                    seen.append(cmd)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        off.fresh()
        _, proc = off.backup()
        sync = off.fab("offsite-sync")
        listing = off.fab("list-backups")
        status = off.fab("status")
    finally:
        stop.set()
        t.join()
    assert not seen, "the S3 secret was on a command line"
    for text in (proc.stdout, proc.stderr, sync.stdout, sync.stderr, listing.stdout,
                 status.stdout, off.sb.sh(f"cat {off.log}"),
                 off.sb.sh(f"cat {off.host['backup_script']}.offsite"),
                 off.sb.sh(f"cat {off.host['backup_script']}.conf"), off.inventory.read_text()):
        assert secret not in text


def test_a_full_disk_on_the_ssh_target_fails_the_push_not_the_backup(off, tmp_path):
    off.fresh()
    user = off.env["SANDBOX_VAULT_USER"]
    full = Path(f"/home/{user}/offsite-full")
    subprocess.run(["umount", str(full)], capture_output=True, check=False)  # a killed run
    full.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=700", "tmpfs", str(full)],
                   check=True)
    try:
        subprocess.run(["chown", f"{user}:{user}", str(full)], check=True)

        def change(h):
            next(t for t in h["offsite"] if t["type"] == "ssh")["path"] = str(full)

        bad = off.variant(tmp_path, change)
        off.install(bad)
        off._current = bad
        since = off.log_size()
        name, proc = off.backup(bad)
        _check_failed_push(off, proc, since, "vault", "the target's disk is full", name)
        assert not list(full.glob("*.meta"))
        assert "RESULT offsite s3 ok" in proc.stderr
    finally:
        subprocess.run(["umount", str(full)], check=False)
        full.rmdir()
        off.install()


def test_the_sandbox_brings_killed_targets_back(off, sandbox):
    def pid(fn: str) -> str:
        return subprocess.run(["bash", "-c", f"source sandbox/lib.sh && source "
                               f"sandbox/offsite.sh && {fn}"], capture_output=True, text=True,
                              cwd=REPO, check=True).stdout.strip()

    for fn in ("s3_pid", "vault_sshd_pid"):
        os.kill(int(pid(fn)), 9)
    time.sleep(0.5)
    subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], check=True, cwd=REPO,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    assert pid("s3_pid") and pid("vault_sshd_pid")
    off.__init__(sandbox)
    off.install()
    assert off.fab("offsite-sync").returncode == 0


def test_offsite_sync_waits_for_the_backup_lock_then_names_its_holder(off, tmp_path):
    from aimms_ops.core.lock import LOCK_FILES, NOTE_INFIX

    inv = off.variant(tmp_path, lambda h: h.update(lock_timeout=2))
    off.install(inv)
    # A holder of the one lock model (core/lock.py): the lock, and its note LOCK.owner.PID.
    lock = f"{off.backup_dir}/{LOCK_FILES['backup']}"
    holder = subprocess.Popen(
        ["ssh", "-F", str(off.sb.ssh_config), "-o", "BatchMode=yes", "aidset",
         f"exec 9>>{lock}; flock 9; echo 'pid 4242 since test' > {lock}{NOTE_INFIX}$$; "
         "echo held $$; exec sleep 300"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    word, pid = [*holder.stdout.readline().split(), "", ""][:2]
    try:
        assert word == "held" and pid.isdigit()
        proc = off.fab("offsite-sync", inventory=inv)
        assert proc.returncode != 0
        line = fab_error_line(proc)
        assert "still running after 2s" in line and "pid 4242" in line
    finally:
        # The lock is held by the sleep on the host: end it there, not only our ssh.
        if pid.isdigit():
            off.sb.ssh(f"kill {pid} 2>/dev/null; rm -f {lock}{NOTE_INFIX}{pid}; true")
        holder.kill()
        holder.wait()
        off.install()


def test_a_backup_before_install_backups_says_so_and_is_kept(off, tmp_path):
    conf = f"{off.host['backup_script']}.offsite"
    off.installed = None  # installed again after this test
    off.sb.ssh(f"rm -f {conf}")
    try:
        since = off.log_size()
        name, proc = off.backup()
        assert "RESULT offsite all failed:" in proc.stderr
        assert "run fab install-backups" in proc.stderr
        assert name in off.sb.sh(f"ls {off.backup_dir}")
        assert sum("RESULT offsite" in ln for ln in off.log_lines(since)) == 1
    finally:
        off.install()

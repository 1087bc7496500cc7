"""Integration: install-backups, backup, list, download, logs and retention on the sandbox."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aimms_ops.host import bundle

from .conftest import FAB, STABLE_TEXT, fab_error_line, md5_sql

pytestmark = pytest.mark.integration

BACKUP_DIR = "postgres-backups"


@pytest.fixture(scope="module")
def installed(sandbox):
    proc = sandbox.fab("install-backups")
    assert proc.returncode == 0, proc.stderr
    return sandbox


def _names(sandbox, pattern: str = "aimms_postgres_*.sql.gz") -> set[str]:
    out = sandbox.sh(f"cd ~/{BACKUP_DIR} && ls -1 {pattern} 2>/dev/null || true")
    return set(out.split())


def _all_files(sandbox) -> set[str]:
    """Every file of the backup dir but the lock files (a run creates them and keeps
    them, as flock wants: they are no backup)."""
    return {n for n in sandbox.sh(f"ls -1A ~/{BACKUP_DIR}").split()
            if not (n.startswith(".") and n.endswith(".lock"))}


def _backup(sandbox, *args: str) -> dict:
    proc = sandbox.fab("backup", *args)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    return next(b for b in listing if b["location"] == "remote")


def test_install_twice_leaves_one_cron_entry_and_changes_nothing(installed):
    again = installed.fab("install-backups")
    assert again.returncode == 0
    assert "nothing to change" in again.stderr
    crontab = installed.sh("crontab -l")
    assert crontab.count("# aimms-ops:backup") == 1
    assert installed.sh("stat -c %a ~/postgres-backups").strip() == "700"
    assert installed.sh("stat -c %a ~/backup-postgres.sh").strip() == "700"
    assert installed.sh("stat -c %a ~/backup-postgres.sh.conf").strip() == "600"


def test_install_replaces_the_hand_made_cron_line_and_keeps_the_old_script(installed):
    sandbox = installed
    sandbox.ssh("printf '0 2 * * * /home/%s/backup-postgres.sh >> /tmp/x.log 2>&1\\n"
                "*/10 * * * * /bin/true\\n' \"$(id -un)\" | crontab - && "
                "echo 'echo old' >> ~/backup-postgres.sh")
    dry = sandbox.fab("install-backups", "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert "/bin/true" in sandbox.sh("crontab -l") and "old" in sandbox.sh(
        "tail -n1 ~/backup-postgres.sh")
    proc = sandbox.fab("install-backups")
    assert proc.returncode == 0, proc.stderr
    assert "previous script kept as" in proc.stderr
    crontab = sandbox.sh("crontab -l").splitlines()
    assert "*/10 * * * * /bin/true" in crontab
    assert [ln for ln in crontab if "backup-postgres.sh" in ln] == [
        ln for ln in crontab if ln.endswith("# aimms-ops:backup")]
    assert len([ln for ln in crontab if "backup-postgres.sh" in ln]) == 1
    assert sandbox.sh("ls ~ | grep -c 'backup-postgres.sh.bak-'").strip() != "0"


def test_installed_script_runs_like_cron_does(installed):
    """The installed script with its settings file, in cron's bare environment."""
    before = _names(installed)
    installed.ssh("env -i HOME=$HOME /bin/sh -c '$HOME/backup-postgres.sh --config "
                  "$HOME/backup-postgres.sh.conf >> $HOME/postgres-backup.log 2>&1'")
    new = _names(installed) - before
    assert len(new) == 1
    assert "RESULT ok " + new.pop() in installed.sh("tail -n 3 ~/postgres-backup.log")


def test_backup_is_verifiable_and_restores_exactly(installed):
    sandbox = installed
    before = _names(sandbox)
    proc = sandbox.fab("backup", "--label", "it-test")
    assert proc.returncode == 0, proc.stderr
    for word in ("aimms_postgres_", "_it-test.sql.gz", "duration"):
        assert word in proc.stdout
    (name,) = _names(sandbox) - before
    assert name.endswith("_it-test.sql.gz")
    sandbox.ssh(f"cd ~/{BACKUP_DIR} && gzip -t {name} && sha256sum -c {name}.sha256")
    assert sandbox.sh(f"stat -c %a ~/{BACKUP_DIR}/{name}").strip() == "600"
    assert not [f for f in _all_files(sandbox) if f.endswith(".tmp")]
    # Restore it into a scratch cluster started inside the container: same data.
    want = sandbox.checksums()
    scratch = (
        "set -e; rm -rf /tmp/scratch; "
        "su postgres -c 'initdb -U postgres -D /tmp/scratch >/dev/null && "
        "pg_ctl -D /tmp/scratch -o \"-p 5499 -k /tmp -c listen_addresses=\" -w start >/dev/null'")
    cid = sandbox.container()
    sandbox.ssh(f"docker exec {cid} bash -c {_q(scratch)}")
    try:
        program = f"{bundle.directory()}/{bundle.PROGRAM}"  # sent by the backup above
        sandbox.ssh(f"gzip -dc ~/{BACKUP_DIR}/{name} | python3 {program} dump filter | "
                    f"docker exec -i {cid} "
                    "psql -X -q -v ON_ERROR_STOP=1 -h /tmp -p 5499 -U postgres -d postgres "
                    ">/dev/null")
        got = sandbox.sh(f"docker exec {cid} psql -X -A -t -h /tmp -p 5499 -U postgres "
                         "-d aimms_web -c 'select count(*) from orders'")
        assert int(got) == int(sandbox.psql("select count(*) from orders"))
        tables = sandbox.tables()
        for t in tables:
            q = f"{STABLE_TEXT}SELECT {md5_sql(t)}"
            scratch_sum = sandbox.sh(f"docker exec {cid} psql -X -q -A -t -h /tmp -p 5499 "
                                     f"-U postgres -d aimms_web -c {_q(q)}").strip()
            assert scratch_sum == want[t], t
    finally:
        sandbox.ssh(f"docker exec {cid} su postgres -c 'pg_ctl -D /tmp/scratch -m immediate "
                    f"stop' >/dev/null; docker exec {cid} rm -rf /tmp/scratch", check=False)


def _q(s: str) -> str:
    return shlex.quote(s)


def test_list_backups_json_shape(installed):
    _backup(installed)
    data = json.loads(installed.fab("list-backups", "--json").stdout)
    remote = [b for b in data if b["location"] == "remote"]
    assert remote, data
    newest = remote[0]
    for key in ("name", "path", "size", "sha256", "created", "location"):
        assert key in newest
    assert newest["path"] == f"{installed.home}/{BACKUP_DIR}/{newest['name']}"
    assert newest["created"].endswith("Z")
    assert [b["created"] for b in remote] == sorted((b["created"] for b in remote),
                                                    reverse=True)
    sha = installed.sh(f"sha256sum {newest['path']}").split()[0]
    assert newest["sha256"] == sha


def test_download_latest_is_identical_and_private(installed, tmp_path):
    b = _backup(installed)
    proc = installed.fab("download", "--file=latest", f"--dest={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / b["name"]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == b["sha256"]
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.glob("*.part"))
    again = installed.fab("download", f"--file={b['name']}", f"--dest={tmp_path}")
    assert again.returncode == 0 and "already here" in again.stderr
    inv = tmp_path / "inv.yml"
    inv.write_text(installed.inventory.read_text().replace(
        "default_host: aidset\n", f"default_host: aidset\ndownload_dir: {tmp_path}\n", 1))
    listing = json.loads(installed.fab("list-backups", "--json", inventory=inv).stdout)
    local_entries = [x for x in listing if x["location"] == "local"]
    assert [x["name"] for x in local_entries] == [b["name"]]
    assert local_entries[0]["sha256"] == b["sha256"]
    assert local_entries[0]["path"] == str(local)


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_download_killed_half_way_resumes_and_verifies(installed, tmp_path, transport):
    """Killed outright (SIGKILL), whichever client carries the bytes: with ``ssh``
    writing the file, it must die with fab, not go on writing beside the rerun."""
    sandbox = installed
    name = "aimms_postgres_20200101_000000_bigfile.sql.gz"
    path = f"~/{BACKUP_DIR}/{name}"
    sandbox.ssh(f"head -c 400000000 /dev/urandom > {path} && cd ~/{BACKUP_DIR} && "
                f"sha256sum {name} > {name}.sha256")
    try:
        want = sandbox.sh(f"cut -d' ' -f1 {path}.sha256").strip()
        env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sandbox.inventory),
               "AIMMS_OPS_TRANSPORT": transport}
        proc = subprocess.Popen([str(FAB), "download", f"--file={name}", f"--dest={tmp_path}"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        part = tmp_path / (name + ".part")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if part.exists() and part.stat().st_size > 50_000_000:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert part.exists(), "the download finished before it could be killed"
        size = part.stat().st_size
        assert 0 < size < 400_000_000
        assert not (tmp_path / name).exists()
        rerun = sandbox.fab("download", f"--file={name}", f"--dest={tmp_path}",
                            env={"AIMMS_OPS_TRANSPORT": transport})
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed at" in rerun.stderr
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == want
        assert not part.exists()
    finally:
        sandbox.ssh(f"rm -f {path} {path}.sha256")


def test_a_corrupt_partial_download_is_discarded_not_published(installed, tmp_path):
    b = _backup(installed)
    part = tmp_path / (b["name"] + ".part")
    part.write_bytes(b"garbage" * 1000)
    proc = installed.fab("download", f"--file={b['name']}", f"--dest={tmp_path}")
    assert proc.returncode != 0
    assert "does not match its sha256" in fab_error_line(proc)
    assert not part.exists() and not (tmp_path / b["name"]).exists()
    rerun = installed.fab("download", f"--file={b['name']}", f"--dest={tmp_path}")
    assert rerun.returncode == 0, rerun.stderr


def test_backup_with_postgres_stopped_fails_and_publishes_nothing(installed):
    sandbox = installed
    before = _all_files(sandbox)
    sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml "
                "stop postgres")
    try:
        proc = sandbox.fab("backup")
        assert proc.returncode != 0
        line = fab_error_line(proc)
        assert "not running" in line
        assert _all_files(sandbox) == before
        assert "RESULT failed: the postgres container" in sandbox.sh(
            "tail -n 1 ~/postgres-backup.log")
    finally:
        sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f "
                    "docker-compose.prod.yml up -d postgres")
        sandbox.wait_ready()


def test_backup_on_a_full_disk_fails_and_publishes_nothing(installed, tmp_path):
    sandbox = installed
    small = f"{sandbox.home}/small-backups"
    subprocess.run(["mkdir", "-p", small], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small], check=True)
    try:
        subprocess.run(["chown", f"{sandbox.user}:", small], check=True)
        inv = tmp_path / "inv.yml"
        inv.write_text(sandbox.inventory.read_text().replace(
            f"{sandbox.home}/postgres-backups", small))
        proc = sandbox.fab("backup", inventory=inv)
        assert proc.returncode != 0
        line = fab_error_line(proc)
        assert "No space left on device" in line or "not enough free space" in line, line
        left = os.listdir(small)
        assert not [f for f in left if f.endswith((".sql.gz", ".tmp", ".sha256"))], left
    finally:
        subprocess.run(["umount", small], check=False)
        subprocess.run(["rmdir", small], check=False)


def test_two_backups_at_once_never_overlap(installed):
    sandbox = installed
    env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sandbox.inventory)}
    before = _names(sandbox)
    procs = [subprocess.Popen([str(FAB), "backup", f"--label=concurrent{i}"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    new = sorted(_names(sandbox) - before)
    assert len(new) == 2
    sandbox.ssh(f"cd ~/{BACKUP_DIR} && gzip -t {' '.join(new)} && "
                f"sha256sum -c {' '.join(n + '.sha256' for n in new)}")
    log = sandbox.sh("tail -n 40 ~/postgres-backup.log")
    # One run waited for the other: never two writers at once.
    assert "waiting up to" in log
    starts = [ln for ln in log.splitlines() if " START " in ln]
    assert len(starts) >= 2


def test_lock_held_too_long_fails_clearly(installed, tmp_path):
    sandbox = installed
    inv = tmp_path / "inv.yml"
    inv.write_text(sandbox.inventory.read_text().replace(
        "  aidset:\n", "  aidset:\n    lock_timeout: 1\n", 1))
    holder = subprocess.Popen(
        ["ssh", "-F", str(sandbox.ssh_config), "aidset",
         f"exec flock ~/{BACKUP_DIR}/.backup.lock sh -c 'echo held $$; exec sleep 300'"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    word, pid = [*holder.stdout.readline().split(), "", ""][:2]  # the lock is held now
    try:
        assert word == "held" and pid.isdigit()
        proc = sandbox.fab("backup", inventory=inv)
        assert proc.returncode != 0
        assert "another backup or retention run is still running" in fab_error_line(proc)
    finally:
        # The sleep on the host holds the lock: end it there, not only our ssh client.
        if pid.isdigit():
            sandbox.ssh(f"kill {pid} 2>/dev/null; true")
        holder.terminate()
        holder.wait()


def test_retention_keeps_the_newest_after_a_run_of_failures(installed):
    sandbox = installed
    d = f"~/{BACKUP_DIR}"
    latest = _backup(sandbox)
    # Start from only old backups: ten copies, 10..19 days old.
    sandbox.ssh(f"mkdir -p ~/keep && mv {d}/aimms_postgres_* ~/keep/")
    try:
        names = []
        for i in range(10):
            n = f"aimms_postgres_202001{10 + i:02d}_020000.sql.gz"
            names.append(n)
            sandbox.ssh(f"cp ~/keep/{latest['name']} {d}/{n} && cd {d} && sha256sum {n} > "
                        f"{n}.sha256 && touch -d '{19 - i} days ago' {n} {n}.sha256")
        # A week of failures: no backup, so no retention.
        sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml "
                    "stop postgres")
        try:
            for _ in range(2):
                assert sandbox.fab("backup").returncode != 0
        finally:
            sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f "
                        "docker-compose.prod.yml up -d postgres")
            sandbox.wait_ready()
        assert _names(sandbox) == set(names)
        dry = sandbox.fab("prune", "--dry-run")
        assert dry.returncode == 0 and "would be removed" in dry.stderr
        assert _names(sandbox) == set(names)
        refused = sandbox.fab("prune")
        assert refused.returncode != 0 and "--yes" in fab_error_line(refused)
        proc = sandbox.fab("prune", "--yes")
        assert proc.returncode == 0, proc.stderr
        kept = _names(sandbox)
        assert kept == set(names[-3:])  # the newest min_keep, though older than 7 days
        assert "newest 1 of 3" in proc.stdout
        assert not [f for f in _all_files(sandbox) if f.endswith(".sha256")
                    and f[:-7] not in kept]
    finally:
        sandbox.ssh(f"rm -f {d}/aimms_postgres_2020* && mv ~/keep/* {d}/ && rmdir ~/keep")


def test_logs_shows_the_tail(installed):
    proc = installed.fab("logs", "--lines=3")
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 3
    bad = installed.fab("logs", "--lines=0")
    assert bad.returncode != 0 and "--lines" in fab_error_line(bad)


@pytest.mark.parametrize("value", [
    "../etc/passwd", "/etc/passwd", "aimms_postgres_20261125_020000.sql.gz; touch /tmp/PWNED",
    "$(touch /tmp/PWNED)", "a b", "", "x" * 300,
])
def test_download_file_argument_is_validated(installed, tmp_path, value):
    canary = Path("/tmp/PWNED")
    canary.unlink(missing_ok=True)
    proc = installed.fab("download", f"--file={value}", f"--dest={tmp_path}")
    assert proc.returncode != 0
    assert "not a backup name" in fab_error_line(proc) or "no backup" in fab_error_line(proc)
    assert not canary.exists()
    assert installed.ssh("test -e /tmp/PWNED", check=False).returncode != 0


@pytest.mark.parametrize("label", ["a/b", "x;touch /tmp/PWNED", "$(id)", "with space", "é"])
def test_backup_label_is_validated(installed, label):
    before = _all_files(installed)
    proc = installed.fab("backup", f"--label={label}")
    assert proc.returncode != 0
    assert "letters, digits, - and _ only" in fab_error_line(proc)
    assert _all_files(installed) == before


def test_backup_with_download(installed, tmp_path):
    inv = tmp_path / "inv.yml"
    dest = tmp_path / "dl"
    inv.write_text(installed.inventory.read_text().replace(
        "default_host: aidset\n", f"default_host: aidset\ndownload_dir: {dest}\n", 1))
    proc = installed.fab("backup", "--download", inventory=inv)
    assert proc.returncode == 0, proc.stderr
    (local,) = dest.glob("aimms_postgres_*.sql.gz")
    want = installed.sh(f"cut -d' ' -f1 ~/{BACKUP_DIR}/{local.name}.sha256").strip()
    assert hashlib.sha256(local.read_bytes()).hexdigest() == want
    assert oct(dest.stat().st_mode & 0o777) == "0o700"


def test_backup_with_thousands_of_old_files(installed):
    """A full backup dir listing must not break the script's pipelines (SIGPIPE)."""
    sandbox = installed
    d = f"~/{BACKUP_DIR}"
    sandbox.ssh(f"mkdir -p ~/many && cd ~/many && for i in $(seq 1000 4999); do "
                f": > aimms_postgres_20190101_00$i.sql.gz; done && "
                f"touch -d '3 days ago' aimms_postgres_2019* && mv aimms_postgres_2019* {d}/")
    try:
        proc = installed.fab("backup", "--label=many")
        assert proc.returncode == 0, proc.stderr
    finally:
        sandbox.ssh(f"rm -f {d}/aimms_postgres_2019* && rmdir ~/many")


def test_logs_follow_shows_the_lines_a_backup_adds_as_it_runs_and_ctrl_c_ends_it(installed):
    """``fab logs --follow``: the end of the log, then each line the host adds (here a
    backup's, made meanwhile), until Ctrl-C, which is how it ends: exit 0, no message."""
    sandbox = installed
    if sandbox.ssh("test -s ~/postgres-backup.log", check=False).returncode != 0:
        _backup(sandbox)  # a line for the follower to show first
    env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sandbox.inventory)}
    env.pop("AIMMS_OPS_DEBUG", None)
    proc = subprocess.Popen([str(FAB), "logs", "--lines=1", "--follow", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        # The log's last line, shown by tail -F on the host: it is following now.
        assert json.loads(proc.stdout.readline())["line"]
        made = sandbox.fab("backup", "--json")
        assert made.returncode == 0, made.stderr
        name = json.loads(made.stdout)["name"]
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while not any(f"RESULT ok {name}" in ln for ln in seen):
            assert time.monotonic() < deadline, f"no RESULT line of {name} followed: {seen}"
            seen.append(json.loads(proc.stdout.readline())["line"])
        assert any("START backup" in ln for ln in seen)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"interrupted" not in err

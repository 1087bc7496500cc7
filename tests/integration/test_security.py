"""Integration: trust and secrecy.

- A changed, revoked or unknown host key stops every task before anything runs on the
  host, whatever the ssh_config says, and known_hosts is left as it was
  (test_connection.py has the basic refusals through `fab check`).
- No password of the stack appears in any command line (sampled with ps, here and on
  the host, while a backup and a restore run), in the log or in the tasks' output.
- Backups, checksums, locks and logs are 0600 and their dirs 0700, on the host and in
  the download folder, whatever the umask.
- No byte of a dump reaches the log on the host or the tasks' output.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from . import faults
from .conftest import FAB, REPO, fab_error_line
from .test_connection import _config_with_known_hosts, _known_hosts_path

pytestmark = pytest.mark.integration

BACKUPS = "postgres-backups"


@pytest.fixture(scope="module")
def installed(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    return sandbox


# --- host keys -------------------------------------------------------------------------

#: Every task that touches the host, with arguments that would make it act.
TASKS = [
    ["backup"], ["download", "--file=latest"], ["restore", "--file=latest", "--yes"],
    ["prune", "--yes"], ["install-backups"], ["list-backups"], ["logs"], ["check"],
    ["rebuild-volume", "--file=latest", "--yes"], ["verify", "--file=latest", "--deep"],
    ["status"], ["doctor"], ["volumes"],
]


def _other_key(tmp_path: Path) -> list[str]:
    keyfile = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)],
                   check=True)
    return keyfile.with_suffix(".pub").read_text().split()


def _host_state(sandbox) -> str:
    """What a task that ran would have changed: the log, the backup dir, the crontab."""
    return sandbox.sh(f"wc -c < ~/postgres-backup.log; ls -1A ~/{BACKUPS}; "
                      "crontab -l 2>/dev/null; ls -1A ~")


def _refused_everywhere(sandbox, tmp_path: Path, known_hosts: str, expect: str,
                        extra_config: str = "") -> None:
    inv = _config_with_known_hosts(sandbox, tmp_path, known_hosts)
    cfg = tmp_path / "ssh_config"
    if extra_config:
        cfg.write_text(cfg.read_text().replace("Host aidset\n", f"Host aidset\n{extra_config}"))
    kh = tmp_path / "known_hosts"
    before = _host_state(sandbox)
    for task in TASKS:
        faults.require_task(sandbox, task[0])  # a renamed task fails here, not skipped
    # Each task its own command line, all in one process (tests/integration/cli_batch.py).
    for task, proc in zip(TASKS, sandbox.fab_many([(t, inv, None) for t in TASKS]),
                          strict=True):
        assert proc.returncode != 0, task
        line = faults.error_line(proc)
        assert expect in line, (task, line)
    assert kh.read_text() == known_hosts, "known_hosts was changed"
    assert _host_state(sandbox) == before, "a task acted on the host"


def test_a_changed_host_key_stops_every_task_before_it_acts(installed, tmp_path):
    name = Path(_known_hosts_path(installed)).read_text().split()[0]
    other = _other_key(tmp_path)
    _refused_everywhere(installed, tmp_path, f"{name} {other[0]} {other[1]}\n", "CHANGED")


def test_an_unknown_host_is_refused_even_if_ssh_config_says_no_checking(installed, tmp_path):
    _refused_everywhere(installed, tmp_path, "", "not a known host",
                        extra_config="    StrictHostKeyChecking no\n")


def test_a_revoked_host_key_is_refused(installed, tmp_path):
    real = Path(_known_hosts_path(installed)).read_text().splitlines()[0]
    name, kind, key = real.split()[:3]
    inv = _config_with_known_hosts(installed, tmp_path,
                                   f"{real}\n@revoked {name} {kind} {key}\n")
    proc = installed.fab("list-backups", inventory=inv)
    assert proc.returncode != 0
    assert "@revoked" in fab_error_line(proc)


def test_a_known_key_for_another_port_does_not_count(installed, tmp_path):
    real = Path(_known_hosts_path(installed)).read_text().splitlines()[0]
    _, kind, key = real.split()[:3]
    inv = _config_with_known_hosts(installed, tmp_path, f"127.0.0.1 {kind} {key}\n")
    proc = installed.fab("list-backups", inventory=inv)
    assert proc.returncode != 0
    assert "not a known host" in fab_error_line(proc)


# --- secrets in command lines, logs and output -------------------------------------------


class Sampler:
    """Collects every command line seen by ps, here and on the host, while it runs."""

    def __init__(self, sandbox) -> None:
        self.local: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.remote = subprocess.Popen(
            ["ssh", "-F", str(sandbox.ssh_config), "aidset",
             "while :; do ps -eo args || exit; echo ---; sleep 0.02; done"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.remote_lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                 check=False).stdout
            self.local.update(out.splitlines())
            self.stop.wait(0.02)

    def _read(self) -> None:
        assert self.remote.stdout is not None
        for line in self.remote.stdout:
            self.remote_lines.append(line.rstrip("\n"))

    def __enter__(self) -> Sampler:
        self.thread.start()
        self.reader.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.remote.terminate()
        self.remote.wait(10)
        self.reader.join(10)

    @property
    def lines(self) -> set[str]:
        return self.local | set(self.remote_lines)


def _secrets(sandbox) -> list[str]:
    env = sandbox.sh("cat ~/aimms-web/.env")
    found = [v.strip() for k, _, v in (ln.partition("=") for ln in env.splitlines())
             if "PASSWORD" in k and v.strip()]
    assert found, "the sandbox's .env holds no password"
    return found


def test_no_password_in_command_lines_logs_or_output(installed, tmp_path):
    secrets = _secrets(installed)
    outputs = []
    with Sampler(installed) as sampler:
        proc = installed.fab("backup", "--label=ps-sample", own_process=True)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
        proc = installed.fab("restore", "--file=latest", "--yes", own_process=True)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
        proc = installed.fab("download", "--file=latest", f"--dest={tmp_path}", own_process=True)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    seen = sampler.lines
    # The sampling did see the work, here and on the host: this test can fail.
    assert any("backup-postgres.sh" in ln for ln in sampler.remote_lines)
    assert any("pg_dumpall" in ln for ln in seen)
    assert any("restore-stream.sh" in ln for ln in seen)
    assert any(str(FAB) in ln and "restore" in ln for ln in sampler.local)
    # Read as bytes: this test looks for secrets in the log, not at its encoding.
    log = installed.ssh("cat ~/postgres-backup.log").stdout.decode("utf-8", "replace")
    for secret in secrets:
        assert not [ln for ln in seen if secret in ln], "a password is in a command line"
        assert secret not in log
        for out in outputs:
            assert secret not in out
    installed.ssh(f"rm -f ~/{BACKUPS}/*_ps-sample.sql.gz*")


def test_the_ping_url_never_reaches_a_command_line(installed, tmp_path):
    """A ping URL is a capability (whoever has it can report for the job): fab sends it on
    the script's stdin, and the host still pings it (the log says the ping was tried)."""
    import yaml

    token = f"ping-token-{uuid.uuid4().hex}"
    with socket.socket() as s:  # a port nothing listens on: each ping fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = yaml.safe_load(installed.inventory.read_text())
    data["hosts"]["aidset"]["ping"] = {"url": f"http://127.0.0.1:{port}/ping/{token}",
                                       "timeout": 3}
    inv = tmp_path / "inventory-ping.yml"
    inv.write_text(yaml.safe_dump(data))
    with Sampler(installed) as sampler:
        backup = installed.fab("backup", "--label=ping-sample", inventory=inv)
        doctor = installed.fab("doctor", "--ping", "--json", inventory=inv)
    assert backup.returncode == 0, backup.stderr
    seen = sampler.lines
    assert any("backup-postgres.sh" in ln for ln in sampler.remote_lines)
    assert any("ping-test" in ln for ln in sampler.remote_lines)
    assert not [ln for ln in seen if token in ln], "the ping URL is in a command line"
    # The URL did reach curl on the host: its error names the port.
    log = installed.sh("tail -n 40 ~/postgres-backup.log")
    assert "ping start: failed" in log and "ping ok: failed" in log
    assert f"port {port}" in log, log
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["test ping (backup)"]["state"] == "CRITICAL"
    assert f"port {port}" in checks["test ping (backup)"]["detail"]
    assert token not in backup.stdout + backup.stderr + doctor.stdout + doctor.stderr
    installed.ssh(f"rm -f ~/{BACKUPS}/*_ping-sample.sql.gz*")


def test_dump_contents_never_reach_the_log_or_the_output(installed, tmp_path):
    marker = f"aimms-ops-marker-{uuid.uuid4().hex}"
    installed.psql(f"CREATE TABLE harden_marker (secret text); "
                   f"INSERT INTO harden_marker VALUES ('{marker}');")
    try:
        outputs = []
        runs = [["backup", "--label=marker"], ["list-backups"], ["logs", "--lines=200"],
                ["download", "--file=latest", f"--dest={tmp_path}"],
                ["restore", "--file=latest", "--yes", "--no-safety-backup"]]
        for args in runs:
            proc = installed.fab(*args)
            assert proc.returncode == 0, (args, proc.stderr)
            outputs.append(proc.stdout + proc.stderr)
        local = next(tmp_path.glob("*_marker.sql.gz"))
        proc = installed.fab("restore", f"--file={local}", "--yes", "--no-safety-backup")
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout + proc.stderr)
        # The marker is in the dump and was restored: it could have leaked.
        assert subprocess.run(f"gzip -dc {local} | grep -c {marker}", shell=True,
                              capture_output=True, text=True, check=False).stdout.strip() == "1"
        assert installed.psql("SELECT secret FROM harden_marker") == marker
        for out in outputs:
            assert marker not in out
        # The log may hold a byte that is not UTF-8 (a psql message naming such a database)
        log = installed.ssh("cat ~/postgres-backup.log").stdout
        assert marker.encode() not in log
    finally:
        installed.psql("DROP TABLE IF EXISTS harden_marker")
        installed.ssh(f"rm -f ~/{BACKUPS}/*_marker.sql.gz*")


# --- modes of files and dirs, on both sides ------------------------------------------------


def _modes(sandbox, folder: str) -> dict[str, str]:
    out = sandbox.sh(f"cd {folder} && stat -c '%n %a' . .[!.]* * 2>/dev/null || true")
    return dict(line.rsplit(" ", 1) for line in out.splitlines() if line.strip())


def _fab_with_umask(sandbox, *args: str, inventory: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIMMS_OPS_INVENTORY": str(inventory)}
    return subprocess.run([str(FAB), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
                          preexec_fn=lambda: os.umask(0o022))


def test_backups_and_their_dirs_are_private_on_both_sides(installed, tmp_path):
    sandbox = installed
    where = f"{sandbox.home}/private-{uuid.uuid4().hex[:6]}"
    text = sandbox.inventory.read_text()
    text = text.replace(f"{sandbox.home}/postgres-backups", f"{where}/backups")
    text = text.replace(f"{sandbox.home}/postgres-backup.log", f"{where}/logs/backup.log")
    inv = tmp_path / "inv.yml"
    inv.write_text(text)
    dest = tmp_path / "downloads" / "nested"
    try:
        for args in (["backup"], ["backup", "--label=second"],
                     ["restore", "--file=latest", "--yes", "--no-safety-backup"],
                     ["download", "--file=latest", f"--dest={dest}"]):
            proc = _fab_with_umask(sandbox, *args, inventory=inv)
            assert proc.returncode == 0, (args, proc.stderr)
        modes = _modes(sandbox, f"{where}/backups")
        assert modes.pop(".") == "700"
        # What each backup holds (its databases' names), kept for its restores.
        assert modes.pop(".dump-facts") == "700"
        facts = _modes(sandbox, f"{where}/backups/.dump-facts")
        assert facts.pop(".") == "700" and set(facts.values()) == {"600"}, facts
        assert {n for n in modes if n.endswith(".sql.gz")} and {".backup.lock",
                                                                ".cluster.lock"} <= set(modes)
        assert set(modes.values()) == {"600"}, modes
        assert sandbox.sh(f"stat -c %a {where}/logs/backup.log").strip() == "600"
        assert oct(dest.stat().st_mode & 0o777) == "0o700"
        files = list(dest.iterdir())
        assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
    finally:
        sandbox.ssh(f"rm -rf {where}")


def test_installed_files_are_private(installed):
    modes = {p: installed.sh(f"stat -c %a {p}").strip() for p in
             ("~/backup-postgres.sh", "~/backup-postgres.sh.conf", f"~/{BACKUPS}",
              "~/postgres-backup.log")}
    assert modes == {"~/backup-postgres.sh": "700", "~/backup-postgres.sh.conf": "600",
                     f"~/{BACKUPS}": "700", "~/postgres-backup.log": "600"}
    conf = installed.sh("cat ~/backup-postgres.sh.conf")
    for secret in _secrets(installed):
        assert secret not in conf
    assert not re.search(r"(?i)password", conf)

"""Integration: the installed command `aimms-ops`, from any directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, fab_error_line

pytestmark = pytest.mark.integration

AIMMS_OPS = REPO / ".venv" / "bin" / "aimms-ops"


def _run(*args: str, cwd: str | Path = "/", env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("AIMMS_OPS_INVENTORY", "AIMMS_OPS_DEBUG")}
    full.update(env or {})
    return subprocess.run([str(AIMMS_OPS), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def test_the_command_is_installed_and_lists_the_tasks_from_anywhere():
    assert AIMMS_OPS.is_file(), "make venv installs the console script"
    proc = _run("-l")
    assert proc.returncode == 0, proc.stderr
    for task in ("backup", "check", "doctor", "install-backups", "rebuild-volume", "restore",
                 "status", "volumes"):
        assert f"  {task} " in proc.stdout, task
    assert _run("--version").stdout.startswith("aimms-ops ")
    helped = _run("--help", "backup")
    assert helped.returncode == 0 and "--label=STRING" in helped.stdout


def test_a_closed_pipe_is_no_traceback():
    proc = subprocess.run(f"{AIMMS_OPS} -l | head -n 1", shell=True, cwd="/",
                          capture_output=True, text=True, check=False)
    assert "Traceback" not in proc.stderr and proc.stdout.strip()


def test_shell_completion():
    script = _run("--print-completion-script", "bash")
    assert script.returncode == 0 and "aimms-ops" in script.stdout
    done = _run("--complete", "--", "aimms-ops", "reb")
    assert "rebuild-volume" in done.stdout.split()


def test_status_and_check_through_the_env_var_name_the_inventory(sandbox):
    env = {"AIMMS_OPS_INVENTORY": str(sandbox.inventory)}
    assert sandbox.fab("install-backups").returncode == 0
    made = _run("backup", env=env)
    assert made.returncode == 0, made.stderr
    status = _run("status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("AIMMS-OPS OK - ")
    check = _run("-H", "aidset", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"(inventory {sandbox.inventory.resolve()})" in " ".join(check.stdout.split())


def test_the_inventory_is_found_here_then_in_the_users_config(sandbox, tmp_path):
    home, here = tmp_path / "home", tmp_path / "here"
    user_inv = home / ".config" / "aimms-ops" / "inventory.yml"
    user_inv.parent.mkdir(parents=True)
    user_inv.write_text(sandbox.inventory.read_text())
    here.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    proc = _run("check", cwd=here, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(inventory {user_inv})" in " ".join(proc.stdout.split())
    (here / "inventory.yml").write_text(sandbox.inventory.read_text())
    proc = _run("check", cwd=here, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(inventory {here / 'inventory.yml'})" in " ".join(proc.stdout.split())
    missing = _run("status", "--json", cwd=tmp_path, env={"HOME": str(tmp_path / "none"),
                                                          "XDG_CONFIG_HOME": ""})
    assert missing.returncode == 3 and "no inventory file" in missing.stdout
    line = fab_error_line(_run("check", cwd=tmp_path, env={"HOME": str(tmp_path / "none"),
                                                           "XDG_CONFIG_HOME": ""}))
    assert "AIMMS_OPS_INVENTORY is not set" in line


def test_an_ignored_inventory_key_is_one_warning_line_on_stderr_once(sandbox, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(sandbox.inventory.read_text().replace(
        "      superuser: postgres\n",
        "      superuser: postgres\n      app_user: aimms_user\n      databases: [aimms_web]\n"))
    proc = _run("list-backups", env={"AIMMS_OPS_INVENTORY": str(inv)})
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == [f"warning: {inv}: hosts.aidset.postgres.{k} is ignored (aimms-ops does "
                        "not use it) and may be removed from the inventory"
                        for k in ("app_user", "databases")], proc.stderr
    assert "warning:" not in _run("list-backups", env={
        "AIMMS_OPS_INVENTORY": str(sandbox.inventory)}).stderr


def test_status_under_a_closed_pipe_keeps_its_exit_code(sandbox):
    """`fab status | head -1` exits with the state's code, not 1 in every state."""
    full = sandbox.fab("status")
    assert full.returncode in (0, 1, 2), full.stdout + full.stderr
    env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sandbox.inventory)}
    for _ in range(3):
        proc = subprocess.run(f"{REPO}/.venv/bin/fab status | head -n 1; "
                              "echo \"rc=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                              cwd=REPO, env=env, capture_output=True, text=True, check=False,
                              timeout=300)
        first, rc = proc.stdout.splitlines()
        assert first.split(" - ")[0] == full.stdout.split(" - ")[0]
        assert rc == f"rc={full.returncode}", proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_a_typo_among_the_hosts_runs_nothing_on_the_others(sandbox):
    before = sandbox.sh("ls -1A ~/postgres-backups")
    proc = sandbox.fab("-H", "aidset,typo", "backup")
    assert proc.returncode == 1
    assert "no host named 'typo'" in fab_error_line(proc)
    assert proc.stdout == ""
    assert sandbox.sh("ls -1A ~/postgres-backups") == before  # no backup was made


def test_dash_s_names_the_ssh_config_that_reaches_the_host(sandbox, tmp_path):
    inv = tmp_path / "inventory.yml"
    inv.write_text("".join(ln for ln in sandbox.inventory.read_text().splitlines(True)
                           if "ssh_config:" not in ln))
    without = sandbox.fab("list-backups", inventory=inv)
    assert without.returncode != 0  # ~/.ssh/config does not know the sandbox's aidset
    proc = sandbox.fab("-S", str(sandbox.ssh_config), "list-backups", inventory=inv)
    assert proc.returncode == 0, proc.stderr
    missing = sandbox.fab("-S", str(tmp_path / "none"), "list-backups")
    assert missing.returncode == 2
    assert fab_error_line(missing).startswith("error: -S ")


def test_status_names_an_unfinished_rebuild_and_the_command_that_finishes_it(sandbox):
    """The state file an interrupted rebuild-volume leaves is read by status (its one SSH
    round trip): CRITICAL, with the command that continues it."""
    assert sandbox.fab("install-backups").returncode == 0
    state = f"{sandbox.home}/postgres-backups/.rebuild-state"
    name = "aimms_postgres_20261124_020001.sql.gz"
    lines = ["run=20261125T100000Z-abc123", "by=ops@laptop", "volume=aimms_postgres_data_prod",
             f"backup={sandbox.home}/postgres-backups/{name}", "begin=stop", "done=stop"]
    text = "".join(f"2026-11-25T10:00:00Z {ln}\n" for ln in lines)
    sandbox.ssh(f"cat > {state}", input=text.encode())
    try:
        proc = sandbox.fab("status", "--json")
    finally:
        sandbox.ssh(f"rm -f {state}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    rebuild = next(c for c in report["checks"] if c["name"] == "rebuild")
    assert rebuild["state"] == "CRITICAL"
    assert "stopped after step stop" in rebuild["detail"]
    assert rebuild["fix"].endswith(f"finish it: fab rebuild-volume --file={name} "
                                   "(it continues where it stopped)")
    assert all(c["name"] != "rebuild" for c in json.loads(sandbox.fab("status", "--json")
                                                          .stdout)["checks"])


def test_unpin_latest_names_the_pinned_backups(sandbox):
    """A pin is released by name: `unpin --file=latest` says which backups are pinned,
    not that latest is no backup name while naming latest as one."""
    assert sandbox.fab("install-backups").returncode == 0
    assert sandbox.fab("backup").returncode == 0
    pinned = sandbox.fab("pin", "--file=latest", "--reason=test")
    assert pinned.returncode == 0, pinned.stderr
    name = pinned.stderr.split()[1]
    try:
        proc = sandbox.fab("unpin", "--file=latest")
        assert proc.returncode == 2
        line = fab_error_line(proc)
        assert line.startswith("error: unpin takes the name of a pinned backup, not latest")
        assert f"pinned on aidset: {name}" in line
    finally:
        assert sandbox.fab("unpin", f"--file={name}").returncode == 0


def test_each_hint_does_what_it_says_when_pasted_on_the_host(sandbox):
    """With postgres stopped on a compose v1 host with a named compose file, the fixes of
    check and status are this host's commands: pasted on the host, they work."""
    compose = "cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml"
    assert sandbox.fab("install-backups").returncode == 0
    sandbox.ssh(f"{compose} stop postgres")
    try:
        assert sandbox.fab("backup").returncode != 0  # the last run fails: no postgres
        check = sandbox.fab("check")
        assert check.returncode != 0 and "CONTAINER" not in check.stdout
        logs = re.search(r"docker logs --tail 50 (\S+)", check.stdout)
        assert logs, check.stdout
        shown = sandbox.ssh(logs.group(0))  # the container's log, by its real name
        assert shown.stdout + shown.stderr
        rows = {c["name"]: c for c in json.loads(sandbox.fab("status", "--json").stdout)
                ["checks"]}
        start = rows["postgres container"]["fix"].removeprefix("start it: ")
        assert start.startswith("docker-compose -f ") and start.endswith(
            " -p aimms-web up -d postgres"), start
        assert rows["last run"]["fix"] == f"start postgres: {start} (see fab doctor)"
        sandbox.ssh(start)  # pasted as it is, from the login directory
        sandbox.wait_ready()
        rows = {c["name"]: c for c in json.loads(sandbox.fab("status", "--json").stdout)
                ["checks"]}
        assert rows["postgres container"]["state"] == "OK"
        assert rows["last run"]["fix"] == ("postgres is running again: make a backup now: "
                                           "fab backup")
    finally:
        sandbox.ssh(f"{compose} up -d postgres")
        sandbox.wait_ready()
    assert sandbox.fab("backup").returncode == 0

"""Fabric's own options, each honoured or refused in one line before any task runs
(issue 24, items 4 and 9): ``-H aidset,typo`` runs nothing, ``-S`` names an ssh_config
that exists, the options aimms-ops does not honour are refused, never ignored."""

from __future__ import annotations

import subprocess

import pytest
from invoke import Config, Context

from aimms_ops.cli import ns
from aimms_ops.cli.coreopts import REFUSED, check_core_options, core_options, ssh_config_override

from ..conftest import FAB, REPO

TASKS = set(ns.task_names)

INVENTORY = """\
default_host: aidset
hosts:
  aidset:
    backup_dir: /b
    backup_script: /s.sh
    log_file: /l.log
    cron_schedule: "0 2 * * *"
    retention_days: 7
    compose: {project_dir: /p, file: c.yml, project: aimms-web, postgres_service: postgres}
    postgres: {superuser: postgres}
    volumes: {postgres: pg, redis: rd}
"""


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    monkeypatch.setenv("AIMMS_OPS_INVENTORY", str(path))
    return path


def test_core_options_stop_at_the_first_task():
    argv = ["fab", "-H", "a,b", "-Sx", "--hide=both", "-R", "restore", "-i", "--file=x"]
    assert core_options(argv, TASKS) == [("-H", "a,b"), ("-S", "x"), ("--hide", "both"),
                                         ("-R", None)]


def _refused(argv: list[str], capsys, code: int = 2) -> str:
    with pytest.raises(SystemExit) as exc:
        check_core_options(argv, TASKS)
    assert exc.value.code == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    return lines[0]


def test_a_typo_among_the_hosts_is_refused_before_any_runs(inventory, capsys):
    check_core_options(["fab", "-H", "aidset", "check"], TASKS)
    line = _refused(["fab", "-H", "aidset,typo", "check"], capsys, code=1)
    assert "no host named 'typo'" in line and "hosts: aidset" in line
    assert "typo" in _refused(["fab", "--hosts=typo,aidset", "check"], capsys, code=1)


def test_hosts_that_are_not_text_are_refused(inventory, capsys):
    assert "not valid UTF-8" in _refused(["fab", "-H", "\udcff", "check"], capsys)


def test_a_missing_ssh_config_is_one_line(tmp_path, capsys):
    line = _refused(["fab", "-S", str(tmp_path / "none"), "check"], capsys)
    assert line.startswith("error: -S ") and "no such file" in line
    real = tmp_path / "ssh_config"
    real.write_text("Host x\n")
    check_core_options(["fab", "-S", str(real), "check"], TASKS)


@pytest.mark.parametrize("option", sorted(REFUSED))
def test_options_aimms_ops_does_not_honour_are_refused(option, capsys):
    argv = ["fab", option] + (["v"] if option in ("-i", "-t", "-T") else []) + ["check"]
    if option in ("--identity", "--connect-timeout", "--command-timeout", "--hide"):
        argv = ["fab", f"{option}=v", "check"]
    line = _refused(argv, capsys)
    assert line.startswith(f"error: fab {option} is not supported by aimms-ops")


def test_help_and_lists_are_never_refused(capsys):
    check_core_options(["fab", "-i", "x", "--help", "check"], TASKS)
    check_core_options(["fab", "-H", "typo", "-l"], TASKS)


def test_the_ssh_config_of_dash_s_is_read():
    from fabric import Config as FabricConfig

    config = FabricConfig(lazy=True)
    config.set_runtime_ssh_path("~/my_ssh_config")
    assert ssh_config_override(Context(config)).endswith("/my_ssh_config")
    assert ssh_config_override(Context(Config())) is None


def test_through_fab_a_missing_ssh_config_is_no_traceback(tmp_path):
    proc = subprocess.run([str(FAB), "-r", str(REPO), "-S", str(tmp_path / "none"), "check"],
                          capture_output=True, text=True, check=False, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: -S ")


def test_each_short_flag_means_one_thing_in_every_task():
    meanings: dict[str, set[str]] = {}
    for name in ns.task_names:
        for arg in ns[name].get_arguments():
            longs = [n for n in arg.names if len(n) > 1]
            for short in (n for n in arg.names if len(n) == 1):
                meanings.setdefault(short, set()).update(longs)
    assert meanings, "no short flag at all"
    assert {s: m for s, m in meanings.items() if len(m) != 1} == {}
    assert "d" not in meanings  # was --database, --dry-run, --deep, --dest or --download
    assert meanings["f"] == {"file"} and meanings["y"] == {"yes"}


def test_sigusr1_prints_where_each_thread_of_a_task_is_and_the_task_goes_on():
    import signal
    import sys
    import time

    code = ("import sys, time\n"
            "from aimms_ops.cli.coreopts import stacks_on_sigusr1\n"
            "stacks_on_sigusr1()\n"
            "print('ready', flush=True)\n"
            "time.sleep(3)\n"
            "print('went on', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "went on\n", (proc.returncode, out, err)
    assert "Current thread" in err and "line 5 in <module>" in err, err

"""Quoting: every value reaches the remote shell as one literal word."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimms_ops.host import shell
from tests.hostprog import SCRIPT_ENV


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                blacklist_categories=("Cs",)), max_size=40),
                min_size=1, max_size=4))
def test_join_round_trips_through_a_real_shell(args):
    line = shell.join(["printf", "%s\\0", *args])
    out = subprocess.run(["bash", "-c", line], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in args]


def test_nul_refused():
    with pytest.raises(ValueError):
        shell.quote("a\x00b")


def test_pipeline_uses_bash_and_pipefail():
    cmd = shell.pipeline(["false"], ["true"])
    proc = subprocess.run(["sh", "-c", cmd], check=False)
    assert proc.returncode == 1


def test_script_text_inlines_the_library():
    text = shell.script_text("verify-backup.sh")
    assert "# @include" not in text
    assert "need_python3()" in text and "AIMMS_OPS_PROGRAM=" in text
    assert text.startswith("#!/usr/bin/env bash")


@pytest.mark.parametrize("name", ["../x.sh", "/etc/passwd", "facts", "a b.sh", "Facts.sh"])
def test_script_names_are_checked(name):
    with pytest.raises(ValueError):
        shell.script_text(name)


def test_the_lock_names_reach_the_scripts_from_the_host_layout():
    from aimms_ops.core.layout import LOCK_FILES, HostLayout

    assert HostLayout("/b", "/l", "/s.sh").cluster_lock == "/b/" + LOCK_FILES["CLUSTER_LOCK"]
    for name in ("backup-postgres.sh", "verify-backup.sh", "offsite-run.sh"):
        text = shell.script_text(name)
        assert "@CLUSTER_LOCK@" not in text and ".cluster.lock\"" not in text, name


def test_every_setting_has_its_flag_in_the_backup_job_and_in_fab(tmp_path):
    """The settings table gives the host program its flags, so a flag fab passes is one the
    backup takes: each flag of the table sets the variable of its setting. (The deep
    verify parses the same table: tests/unit/test_agent_verify_unit.py.)"""
    from aimms_ops.agent import backup, jobsettings
    from aimms_ops.core import settings

    for s in settings.SETTINGS:
        if s.flag:
            argv = [s.flag] if s.switch else [s.flag, "v-" + s.key]
            values, _ = jobsettings.read_settings(argv, "", backup.FLAGS)
            assert values[s.key] == ("1" if s.switch else "v-" + s.key)
    # The backup script refuses a missing setting and any other argument, before it
    # touches anything.
    script = tmp_path / "backup-postgres.sh"
    script.write_text(shell.script_text("backup-postgres.sh"))

    def run(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *a], capture_output=True, text=True,
                              check=False, cwd=tmp_path, env=SCRIPT_ENV)

    got = run("--backup-dir", str(tmp_path))
    assert got.returncode == 64 and "LOG_FILE is not set" in got.stderr, got.stderr
    got = run("--backup-dir", str(tmp_path), "--log-file", str(tmp_path / "l"), "--bogus")
    assert got.returncode == 64 and "unknown argument: --bogus" in got.stderr, got.stderr


def test_read_settings_takes_the_config_flag_else_the_first_file_beside(tmp_path):
    from aimms_ops.agent.jobsettings import UsageError, read_settings

    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    second.write_text("BACKUP_DIR=/second\n")
    assert read_settings([], [str(first), str(second)], {})[0]["BACKUP_DIR"] == "/second"
    first.write_text("BACKUP_DIR=/first\n")
    assert read_settings([], [str(first), str(second)], {})[0]["BACKUP_DIR"] == "/first"
    given = tmp_path / "given.conf"
    given.write_text("BACKUP_DIR=/given\n")
    got = read_settings(["--config", str(given)], [str(first)], {})[0]
    assert got["BACKUP_DIR"] == "/given"
    with pytest.raises(UsageError, match="cannot read config file"):
        read_settings(["--config", str(tmp_path / "nope")], [], {})


@pytest.mark.parametrize("project", ["aimms-web", "AIMMS_Web", "my.project 2", "Ünï-cödé", "a/b$c"])
def test_the_compose_label_is_the_same_on_both_sides(project):
    """The operator's checks and the host program find containers by one label rule."""
    from aimms_ops.agent import cluster
    from aimms_ops.host.compose import project_label

    assert cluster.compose_label is project_label
    assert re.fullmatch(r"[a-z0-9_-]*", project_label(project))

"""Quoting: every value reaches the remote shell as one literal word."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimms_ops import retention, shell


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
    text = shell.script_text("facts.sh")
    assert "# @include" not in text
    assert "resolve_container()" in text
    assert text.startswith("#!/usr/bin/env bash")


@pytest.mark.parametrize("name", ["../x.sh", "/etc/passwd", "facts", "a b.sh", "Facts.sh"])
def test_script_names_are_checked(name):
    with pytest.raises(ValueError):
        shell.script_text(name)


def test_the_backup_name_pattern_reaches_the_scripts_from_its_one_definition():
    """retention.NAME_RE is the one pattern: rendered scripts carry it as an ERE."""
    ere = shell.name_ere()
    for name in ("backup-postgres.sh", "verify-backup.sh", "pin.sh", "offsite-run.sh"):
        text = shell.script_text(name)
        assert "@BACKUP_NAME_ERE@" not in text
        assert f"BACKUP_NAME_RE='{ere}'" in text
    # The ERE accepts exactly what the Python pattern accepts.
    for n in ("aimms_postgres_20260101_020000.sql.gz", "aimms_postgres_20260101_020000_a-b.sql.gz",
              "aimms_postgres_2026_020000.sql.gz", "aimms_postgres_20260101_020000_.sql.gz",
              "aimms_postgres_20260101_020000_" + "x" * 65 + ".sql.gz"):
        assert bool(re.fullmatch(ere, n)) == bool(retention.NAME_RE.fullmatch(n)), n

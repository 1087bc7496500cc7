"""Quoting: every value reaches the remote shell as one literal word."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimms_ops import shell


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

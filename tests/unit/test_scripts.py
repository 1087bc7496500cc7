"""The host scripts as they are sent or installed: rendered, then linted by shellcheck."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from aimms_ops.host import shell

SCRIPTS = sorted(p.name for p in shell.SCRIPTS_DIR.glob("*.sh") if p.name != "lib.sh")


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (sandbox/up.sh installs it)")
@pytest.mark.parametrize("name", SCRIPTS)
def test_rendered_script_is_shellcheck_clean(name, tmp_path):
    path = tmp_path / name
    path.write_text(shell.script_text(name))
    # SC2317: functions of the inlined library that a script does not call look unreachable.
    proc = subprocess.run(["shellcheck", "-e", "SC2317", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_rendered_script_parses_and_has_no_include_left(name):
    text = shell.script_text(name)
    assert "# @include" not in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)

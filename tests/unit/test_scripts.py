"""The host scripts as they are sent or installed: rendered, then linted by shellcheck."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from aimms_ops.host import events as host_events
from aimms_ops.host import shell
from tests.hostprog import HOST

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


def _ping_test(tmp_path, curl_body: str, *timeout: str) -> tuple[dict, list[str]]:
    """Run the host program's ping-test with a ``curl`` on PATH that records its
    arguments, then runs ``curl_body``; its facts and the arguments curl got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n'
                                  f"{curl_body}\n")
    (bin_dir / "curl").chmod(0o755)
    proc = subprocess.run([*HOST, "ping-test", "healthchecks", "-", *timeout],
                          input="http://127.0.0.1:9/p\n", capture_output=True, text=True,
                          check=False, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert (tmp_path / "args").exists(), proc.stderr
    return (host_events.facts(proc.stdout, "ping-test", "test"),
            (tmp_path / "args").read_text().splitlines())


@pytest.mark.parametrize("timeout, per_try, retry_for", [((), "10", "30"), (("6",), "2", "4"),
                                                         (("90",), "10", "60")])
def test_a_ping_is_bounded_by_its_timeout(tmp_path, timeout, per_try, retry_for):
    out, args = _ping_test(tmp_path, "exit 0", *timeout)
    assert out["ok"] == "1" and "error" not in out
    assert args[args.index("-m") + 1] == per_try
    assert args[args.index("--retry-max-time") + 1] == retry_for


def test_a_ping_that_never_answers_is_killed_at_its_timeout(tmp_path):
    out, _ = _ping_test(tmp_path, "exec sleep 60", "3")
    assert out["ok"] == "0" and out["error"] == "no answer within 3s"

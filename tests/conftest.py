"""Fixtures: the sandbox host (real sshd, docker, compose, PostgreSQL) and helpers."""

from __future__ import annotations

import subprocess

import pytest

from .sandbox_client import FAB, REPO, STABLE_TEXT, Sandbox, _read_env, md5_sql

__all__ = ["FAB", "REPO", "STABLE_TEXT", "Sandbox", "_read_env", "fab_error_line", "md5_sql"]


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The sandbox host, brought up by the same code as `make sandbox`."""
    subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO, check=True,
                   stdin=subprocess.DEVNULL, timeout=1800)
    out = REPO / "sandbox"
    return Sandbox(inventory=out / "inventory.yml", ssh_config=out / "ssh_config",
                   env=_read_env(out / "env"))


def fab_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a failed task printed, asserting it printed no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, f"no error printed (rc={proc.returncode}); stdout: {proc.stdout}"
    return lines[-1]

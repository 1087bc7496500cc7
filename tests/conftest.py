"""Fixtures: the sandbox host (real sshd, docker, compose, PostgreSQL) and helpers.

tests/unit/ holds the tests of the pure logic (no sandbox); tests/integration/ those
that run against the sandbox host, each marked ``integration`` (added below, whatever
the file says), so that ``pytest -m "not integration"`` runs the unit tests alone. The
fixtures here reach both folders.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aimms_ops.dump.reader import SECTION_PREFIX, SECTION_SUFFIX

from .sandbox_client import (
    FAB,
    REPO,
    SANDBOX_NAME,
    SANDBOX_OUT,
    STABLE_TEXT,
    Sandbox,
    _read_env,
    md5_sql,
)

# Every sandbox/up.sh a test runs, and everything it starts, is this worker's instance.
os.environ["SANDBOX_NAME"] = SANDBOX_NAME
os.environ["SANDBOX_OUT"] = str(SANDBOX_OUT)

__all__ = ["FAB", "REPO", "SANDBOX_NAME", "SANDBOX_OUT", "STABLE_TEXT", "Sandbox", "_read_env",
           "dump_difference", "fab_error_line", "md5_sql"]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The sandbox host, brought up by the same code as `make sandbox`, without what a
    killed run of test_clusters left in its cluster (``clusters.remove_leftovers``) and
    without the volumes earlier runs' rebuilds kept (removed again at the end)."""
    SANDBOX_OUT.mkdir(exist_ok=True)
    subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO, check=True,
                   stdin=subprocess.DEVNULL, timeout=1800)
    out = SANDBOX_OUT
    sb = Sandbox(inventory=out / "inventory.yml", ssh_config=out / "ssh_config",
                 env=_read_env(out / "env"))
    from .clusters import remove_leftovers  # it imports this module

    left = remove_leftovers(sb)
    if left:
        print(f"sandbox: removed what a killed run left in the cluster: {', '.join(left)}")
    sb.remove_kept_volumes()  # those an earlier run's rebuilds kept
    yield sb
    sb.remove_kept_volumes()
    sb.close_shared_connection()


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ is an integration test, and the tests of one
    integration file run in one worker (their group for ``--dist loadgroup``): they
    share the file's fixtures (a backup, a seeded cluster) and its sandbox instance. A
    unit test has no group: any worker takes it, so that under ``make test`` the unit
    tests (scheduled after the groups, which hold more tests each) fill whatever time one
    worker would otherwise wait for the other's last file."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if INTEGRATION_DIR in path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.xdist_group(path.stem))


def fab_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a failed task printed, asserting it printed no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, f"no error printed (rc={proc.returncode}); stdout: {proc.stdout}"
    return lines[-1]


def dump_difference(got: str, want: str) -> str:
    """What differs between two pg_dumpall texts, database by database: the lines only
    in one of them (a few of each), or that the lines are the same in another order
    (rows in another physical order). Empty when they are equal."""
    out = []
    a, b = _sections(got), _sections(want)
    for name in sorted(set(a) | set(b)):
        if a.get(name) == b.get(name):
            continue
        x, y = Counter(a.get(name, [])), Counter(b.get(name, []))
        only_got, only_want = list((x - y).elements()), list((y - x).elements())
        if not only_got and not only_want:
            out.append(f"{name}: the same lines in another order")
            continue
        out.append(f"{name}: {len(only_got)} lines only after, {len(only_want)} only before; "
                   f"after: {only_got[:3]}; before: {only_want[:3]}")
    return "\n".join(out)


def _sections(dump: str) -> dict[str, list[str]]:
    """The lines of a pg_dumpall text under each ``-- Database "NAME" dump`` title (the
    globals under ``(globals)``)."""
    prefix, suffix = SECTION_PREFIX.decode(), SECTION_SUFFIX.decode()
    sections: dict[str, list[str]] = {"(globals)": []}
    current = sections["(globals)"]
    for line in dump.split("\n"):
        if line.startswith(prefix) and line.endswith(suffix):
            current = sections.setdefault(line[len(prefix):-len(suffix)], [])
        current.append(line)
    return sections

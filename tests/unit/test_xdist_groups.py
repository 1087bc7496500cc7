"""The tests of one integration file run in one worker (``--dist loadgroup``, the groups
of tests/conftest.py): they share the file's module fixtures and its sandbox instance.
pytest 9.2 with pytest-xdist 3.8 stopped grouping without a word
(pytest-dev/pytest-xdist#1386): a file's tests then ran in both workers, each setting up
the file's fixtures, and a test that relied on an earlier one of its file failed. This
runs a small suite the way ``make test`` runs the real one and checks the grouping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = '''
from pathlib import Path
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(Path(str(item.path)).stem))
'''

MODULE = '''
import os, time

def _note(i):
    time.sleep(0.05)
    with open(os.environ["GROUP_LOG"], "a") as fh:
        fh.write("%s %s\\n" % (__name__, os.environ["PYTEST_XDIST_WORKER"]))
'''


def test_the_tests_of_one_file_run_in_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("test_one", "test_two", "test_three"):
        tests = "".join(f"\ndef test_{i}():\n    _note({i})\n" for i in range(6))
        (tmp_path / f"{name}.py").write_text(MODULE + tests)
    log = tmp_path / "log"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
         "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "GROUP_LOG": str(log)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert sorted(workers) == ["test_one", "test_three", "test_two"]
    assert all(len(w) == 1 for w in workers.values()), f"a file's tests in two workers: {workers}"

"""The integration tests: everything here runs against the sandbox host.

The fixtures (``sandbox``) and helpers are tests/conftest.py's, which reaches the unit
tests too; they are named here as well so that a test of this folder imports them
from beside it (``from .conftest import fab_error_line``). Every test of this folder
carries the ``integration`` marker (tests/conftest.py adds it), so that
``pytest -m "not integration"`` runs the unit tests alone.
"""

import shlex
import subprocess

import pytest

from ..conftest import (  # noqa: F401 - named for the tests of this folder
    FAB,
    REPO,
    SANDBOX_OUT,
    STABLE_TEXT,
    Sandbox,
    _read_env,
    dump_difference,
    fab_error_line,
    md5_sql,
)


@pytest.fixture(scope="module", autouse=True)
def empty_backup_dir(sandbox: Sandbox) -> None:
    """Each file starts from an empty backup dir on the host and makes the backups it
    needs: none is left from another file, nor from a run that was killed (a backup's
    part file, an unfinished rebuild's state, a lock's owner note); and from aimms_web as
    the sandbox seeds it."""
    d = shlex.quote(sandbox.backup_dir)
    sandbox.ssh(f"mkdir -p -m 700 {d} && find {d} -mindepth 1 -delete")
    # Nor the tables another file made in aimms_web: each file backs up and restores the
    # seeded data, whatever ran before it on this instance. A file that failed may have
    # left the stack down or its cluster empty: sandbox/up.sh brings both back, so that
    # one failure does not fail the files after it.
    if not sandbox.seeded():
        subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
        sandbox.wait_ready()
    sandbox.drop_extra_tables()


@pytest.fixture(autouse=True)
def no_fab_left_running():
    """A fab a test started in the background and left going (the test failed before it
    waited for it) is interrupted after that test, so that it cannot go on into the next
    test's cluster."""
    yield
    from .faults import end_leftover_runs

    end_leftover_runs()

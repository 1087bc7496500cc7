"""The integration tests: everything here runs against the sandbox host.

The fixtures (``sandbox``) and helpers are tests/conftest.py's, which reaches the unit
tests too; they are named here as well so that a test of this folder imports them
from beside it (``from .conftest import fab_error_line``). Every test of this folder
carries the ``integration`` marker (tests/conftest.py adds it), so that
``pytest -m "not integration"`` runs the unit tests alone.
"""

from ..conftest import (  # noqa: F401 - named for the tests of this folder
    FAB,
    REPO,
    SANDBOX_OUT,
    STABLE_TEXT,
    Sandbox,
    _read_env,
    fab_error_line,
    md5_sql,
)

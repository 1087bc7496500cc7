"""Integration: a whole-cluster restore is exact on a cluster that is not ours.

PostgreSQL's own regression database plus a database of awkward objects (tests/clusters.py)
are backed up with ``fab backup``, damaged, and restored with ``fab restore --file=latest
--yes`` while an application session is open. Proved with pg_dumpall before and after
(normalized as PostgreSQL's own AdjustDump.pm does: clusters.normalize_dump documents each
mask) and with catalog queries for what pg_dumpall does not show.

The regression database is removed again at the end (and at the start, when a killed run
left it): its C functions need ``regress.so``, which only the sandbox's own container has,
so the other tests' trial restores would fail on it.
"""

from __future__ import annotations

import pytest

from . import clusters

pytestmark = pytest.mark.integration

DAMAGE = """
DROP TABLE IF EXISTS public.dba_notes;
ALTER DATABASE postgres SET work_mem = '1MB';
ALTER DATABASE postgres CONNECTION LIMIT 5;
GRANT TEMP ON DATABASE postgres TO PUBLIC;
COMMENT ON DATABASE postgres IS 'damaged';
"""


@pytest.fixture(scope="module")
def real_cluster(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    clusters.ensure_regression_db(sandbox)
    clusters.ensure_awkward_db(sandbox)
    yield sandbox
    clusters.remove_regression_db(sandbox)
    clusters.remove_awkward_db(sandbox)


def test_the_regression_and_awkward_cluster_comes_back_exactly(real_cluster):
    sandbox = real_cluster
    proc = sandbox.fab("backup", timeout=900)
    assert proc.returncode == 0, proc.stderr
    want_dump = clusters.normalized_dumpall(sandbox)
    want_catalog = clusters.catalog_state(sandbox)
    want_rows = clusters.row_counts(sandbox, "regression")
    assert len(want_rows) > 400  # the regression database, not a tidy demo

    clusters.psql(sandbox, DAMAGE, "postgres")
    clusters.psql(sandbox, "DROP TABLE IF EXISTS public.tenk1 CASCADE", "regression")
    clusters.psql(sandbox, "DROP FUNCTION IF EXISTS public.dba_helper() CASCADE", "template1")
    assert clusters.catalog_state(sandbox) != want_catalog

    session = sandbox.app_session()
    try:
        proc = sandbox.fab("restore", "--file=latest", "--yes", "--no-safety-backup",
                           timeout=900)
    finally:
        session.kill()
    assert proc.returncode == 0, proc.stderr
    assert clusters.row_counts(sandbox, "regression") == want_rows
    assert clusters.catalog_state(sandbox) == want_catalog
    assert clusters.normalized_dumpall(sandbox) == want_dump

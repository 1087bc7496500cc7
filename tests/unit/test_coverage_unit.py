"""Unit: the backup's databases against the live cluster's, a killed run in the log, and
the closing statements a backup writes after its completion marker (issue 22, items 4, 7)."""

from __future__ import annotations

from aimms_ops.core.checks import State
from aimms_ops.monitor.coverage import check_coverage, hex_names, missing
from aimms_ops.monitor.runlog import died_run, parse_results, parse_starts
from aimms_ops.monitor.status import check_last_run

from .test_dumpscan_unit import dump, run_filter

LOG = """\
2026-12-01T02:00:00Z backup[10] START backup of project p service postgres
2026-12-01T02:00:01Z backup[10] DATABASES {dbs}
2026-12-01T02:00:09Z backup[10] RESULT ok aimms_postgres_20261201_020001.sql.gz size=1 sha256=x
2026-12-02T02:00:00Z backup[20] START backup of project p service postgres
"""


def _hex(*names: str) -> str:
    return " ".join(n.encode().hex() for n in names)


def test_a_run_s_databases_are_read_from_its_log_line():
    text = LOG.format(dbs=_hex("app", "my db", "postgres"))
    [run] = parse_results(text)
    assert run.databases == ("app", "my db", "postgres") and run.ok


def test_a_start_without_result_and_without_a_live_holder_died():
    text = LOG.format(dbs=_hex("app"))
    runs, starts = parse_results(text), parse_starts(text)
    died = died_run(runs, starts, "backup", set())
    assert died is not None and died.died and died.pid == 20
    assert died.as_dict()["result"] == "died"
    check = check_last_run(runs, died)
    assert check.state is State.CRITICAL and "last backup died" in check.detail
    assert "backup[20]" in check.detail
    # Still running (its pid holds the lock): not dead.
    assert died_run(runs, starts, "backup", {20}) is None
    # A later run's result (one that failed before START, say) is the last run.
    later = text + "2026-12-02T02:10:00Z backup[30] RESULT failed: lock held\n"
    assert died_run(parse_results(later), parse_starts(later), "backup", set()) is None
    # Finished normally: nothing died.
    done = text + "2026-12-02T02:00:05Z backup[20] RESULT ok aimms_postgres_x.sql.gz\n"
    assert died_run(parse_results(done), parse_starts(done), "backup", set()) is None


def test_what_a_backup_lacks_leaves_out_template0_and_the_restore_s_side_copies():
    live = ["app", "template0", "template1", "aimms_ops_old_app", "aimms_ops_new_x", "later"]
    assert missing(live, ["app", "template1"]) == ["later"]
    check = check_coverage("databases", live, ["app", "template1"], "B.sql.gz")
    assert check.state is State.WARNING and "'later'" in check.detail and "B.sql.gz" in check.detail
    ok = check_coverage("databases", live, ["app", "template1", "later"], "B.sql.gz")
    assert ok.state is State.OK
    assert check_coverage("databases", live, None, "B").state is State.OK  # not recorded
    assert check_coverage("databases", None, ["app"], "B").state is State.OK  # not compared
    assert hex_names(_hex("a b", "c")) == ["a b", "c"] and hex_names("zz") is None


CLOSING = ("\n-- aimms-ops: databases that allow no connections\n\\connect template1\n"
           "ALTER DATABASE closed ALLOW_CONNECTIONS false;\n"
           'ALTER DATABASE "zz closed" ALLOW_CONNECTIONS false;\n')
CLUSTER = dump(sections={"closed": "CREATE DATABASE closed;\n\\connect closed\n",
                         "zz closed": 'CREATE DATABASE "zz closed";\n\\connect "zz closed"\n',
                         "app": "CREATE DATABASE app;\n\\connect app\n"}) + CLOSING


def test_the_closing_statements_after_the_marker_are_kept_for_that_database_alone():
    whole, _ = run_filter(CLUSTER)
    assert whole.endswith(CLOSING)
    out, _ = run_filter(CLUSTER, "--only", b"zz closed".hex())
    assert len(out.split("\n")) == len(CLUSTER.split("\n"))
    tail = [ln for ln in out.split("\n")[-5:] if ln.strip()]
    assert tail == ["\\connect template1", 'ALTER DATABASE "zz closed" ALLOW_CONNECTIONS false;']
    app, _ = run_filter(CLUSTER, "--only", b"app".hex())
    assert "ALLOW_CONNECTIONS" not in app

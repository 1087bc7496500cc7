"""The drill's pure parts and the metrics format: the textfile writer read back by the
strict reader, the metrics the backup and the drill write, the rule that compares a
restored cluster with the live one, the inventory's drill: and its cron line, the
report read from the host's events."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aimms_ops.agent import jobmetrics
from aimms_ops.agent.drill_check import compare
from aimms_ops.agent.drill_sources import LogicalHost, LogicalOffsite, pick
from aimms_ops.agent.offsite_targets import Copy, Listing
from aimms_ops.agent.trial import Failed
from aimms_ops.backup.install import cron_entries
from aimms_ops.core import metrics
from aimms_ops.host.events import parse as parse_events
from aimms_ops.inventory.drill import WEEKLY
from aimms_ops.inventory.loader import parse as parse_inventory
from aimms_ops.monitor import drill as dr

# --- the format -------------------------------------------------------------------------


def test_render_is_read_back_exactly():
    ms = [metrics.gauge("a_seconds", 'say "x"\\ and\nmore \\n', 1.5,
                        (("source", 'a"b\\c\\n\n'),)),
          metrics.gauge("b_total", "b", 3), metrics.gauge("c", "unknown", None)]
    text = metrics.render(ms)
    assert text.endswith("\n")
    got = metrics.parse(text)
    assert got["a_seconds"].samples == (((("source", 'a"b\\c\\n\n'),), 1.5),)
    assert got["a_seconds"].help == 'say "x"\\ and\nmore \\n'
    assert metrics.value(got, "b_total") == 3 and got["b_total"].type == "gauge"
    assert got["c"].samples == () and metrics.value(got, "c") is None
    assert "b_total 3\n" in text  # a whole number without a decimal point


@pytest.mark.parametrize("text", [
    "x 1\n",  # no HELP, no TYPE
    "# HELP x a\nx 1\n",  # no TYPE
    "# HELP x a\n# TYPE x gauge\n# TYPE x gauge\nx 1\n",
    "# HELP x a\n# TYPE x summary\nx 1\n",
    "# HELP x a\n# TYPE x gauge\ny 1\n",  # a sample of another metric
    "# HELP x a\n# TYPE x gauge\nx{a=\"1\",} 1\n",
    "# HELP x a\n# TYPE x gauge\nx{a=1} 1\n",
    "# HELP x a\n# TYPE x gauge\nx one\n",
    "# HELP x a\n# TYPE x gauge\nx 1\nx 2\n",  # the same labels twice
    "# HELP x a\n# TYPE x gauge\nx 1",  # no final newline
    "# HELP x a\n# TYPE x gauge\n\nx 1\n",
])
def test_the_reader_is_strict(text):
    with pytest.raises(ValueError):
        metrics.parse(text)


def test_bad_names_are_refused():
    with pytest.raises(ValueError):
        metrics.render([metrics.gauge("1x", "h", 1)])
    with pytest.raises(ValueError):
        metrics.render([metrics.gauge("x", "h", 1, (("__name", "v"),))])


def test_write_replaces_the_file_whole(tmp_path):
    d = tmp_path / "collector"
    path = metrics.write(str(d), "aimms_ops_drill_logical_s3", [metrics.gauge("x", "h", 1)])
    assert path == str(d / "aimms_ops_drill_logical_s3.prom")
    metrics.write(str(d), "aimms_ops_drill_logical_s3", [metrics.gauge("x", "h", 2)])
    assert os.listdir(d) == ["aimms_ops_drill_logical_s3.prom"]  # no temporary file left
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert metrics.value(metrics.read(path), "x") == 2
    assert metrics.read(str(d / "missing.prom")) == {}


# --- the jobs' metrics ------------------------------------------------------------------


def test_a_failed_drill_keeps_the_last_success_and_drops_its_figures(tmp_path):
    figures = {"rto_seconds": 12.5, "rpo_seconds": 3600, "databases": 2}
    assert jobmetrics.drill(str(tmp_path), "s3", True, figures, now=1000) == ""
    path = str(tmp_path / "aimms_ops_drill_logical_s3.prom")
    ok = metrics.read(path)
    assert metrics.value(ok, "aimms_ops_drill_rto_seconds") == 12.5
    assert metrics.value(ok, "aimms_ops_drill_rpo_seconds") == 3600
    assert metrics.value(ok, "aimms_ops_drill_databases_checked") == 2
    assert jobmetrics.drill(str(tmp_path), "s3", False, {}, now=2000) == ""
    bad = metrics.read(path)
    assert metrics.value(bad, "aimms_ops_drill_success") == 0
    assert metrics.value(bad, "aimms_ops_drill_last_run_timestamp_seconds") == 2000
    assert metrics.value(bad, "aimms_ops_drill_last_success_timestamp_seconds") == 1000
    assert metrics.value(bad, "aimms_ops_drill_rto_seconds") is None
    assert jobmetrics.drill("", "s3", True, figures) == ""  # metrics off: nothing written


def test_a_drill_that_cannot_write_its_metrics_says_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    problem = jobmetrics.drill(str(blocker / "sub"), "s3", True, {})
    assert problem.startswith(f"cannot write the metrics in {blocker / 'sub'}")


def test_backup_metrics_come_from_the_newest_regular_backup(tmp_path):
    backups = tmp_path / "b"
    backups.mkdir()
    for name, size, mtime in (("aimms_postgres_20260101_020000.sql.gz", 10, 100),
                              ("aimms_postgres_20260102_020000.sql.gz", 20, 200),
                              ("aimms_postgres_20260103_020000_pre-restore.sql.gz", 99, 300)):
        (backups / name).write_bytes(b"x" * size)
        os.utime(backups / name, (mtime, mtime))
    out = tmp_path / "m"
    assert jobmetrics.backup(str(out), False, 3.25, str(backups), now=500) == ""
    found = metrics.read(str(out / "aimms_ops_backup.prom"))
    assert metrics.value(found, "aimms_ops_backup_last_run_success") == 0
    assert metrics.value(found, "aimms_ops_backup_last_run_timestamp_seconds") == 500
    assert metrics.value(found, "aimms_ops_backup_last_run_duration_seconds") == 3.2
    assert metrics.value(found, "aimms_ops_backup_last_success_timestamp_seconds") == 200
    assert metrics.value(found, "aimms_ops_backup_last_success_size_bytes") == 20
    assert metrics.value(found, "aimms_ops_backup_count") == 2


# --- the rule: restored against live ----------------------------------------------------


class FakeRun:
    def __init__(self) -> None:
        self.checks: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, dict]] = []

    def check(self, name: str, state: str, detail: str) -> None:
        self.checks.append((name, state, detail))

    def event(self, kind: str, **fields) -> None:
        self.events.append((kind, fields))


RESTORED = {"aimms_web": [("public.orders", 100), ("public.old", 5)], "postgres": []}


def test_counts_are_reported_never_judged():
    run = FakeRun()
    live = {"aimms_web": [("public.orders", 130)], "postgres": [], "closed": None}
    restored = {**RESTORED, "closed": []}
    assert compare(run, restored, live, "B") == (3, 2, 105, 130)
    tables = [f for k, f in run.events if k == "table"]
    assert {"database": "aimms_web", "table": "public.orders", "rows": 100,
            "live_rows": 130} in tables
    assert {"database": "aimms_web", "table": "public.old", "rows": 5,
            "live_rows": None} in tables
    detail = dict((n, d) for n, _s, d in run.checks)["live tables"]
    assert "+25 since the backup" in detail and "not counted" in detail and "closed" in detail


def test_a_live_database_missing_from_the_copy_fails():
    with pytest.raises(Failed) as e:
        compare(FakeRun(), RESTORED, {"aimms_web": [], "postgres": [], "newdb": []}, "B")
    assert e.value.check == "live databases" and "newdb" in e.value.reason
    assert "not in B" in e.value.reason


def test_a_live_table_missing_from_the_copy_fails():
    live = {"aimms_web": [("public.orders", 1), ("public.new", 0)], "postgres": []}
    with pytest.raises(Failed) as e:
        compare(FakeRun(), RESTORED, live, "B")
    assert e.value.check == "live tables" and "aimms_web.public.new" in e.value.reason


# --- the sources ------------------------------------------------------------------------


def _copy(name: str, whole: bool = True) -> Copy:
    return Copy(name, "a" * 64, "10", "b" * 64, "20", "", "20" if whole else "7", "-")


def test_the_newest_copy_counts_even_when_incomplete():
    class T:
        def listing(self):
            return Listing({c.name: c for c in (
                _copy("aimms_postgres_20260101_020000.sql.gz"),
                _copy("aimms_postgres_20260103_020000_pre-restore.sql.gz"),
                _copy("aimms_postgres_20260102_020000.sql.gz", whole=False))}, [])

    got = LogicalOffsite("conf", "s3", "id").newest(T())  # type: ignore[arg-type]
    assert got.name == "aimms_postgres_20260102_020000.sql.gz" and not got.whole


def test_pick_the_source(tmp_path):
    conf = tmp_path / "offsite"
    assert isinstance(pick("/b", str(conf), "", ""), LogicalHost)  # no offsite settings
    conf.write_text("OFFSITE_TARGETS='s3 vault'\n")
    src = pick("/b", str(conf), "", "/id")
    assert isinstance(src, LogicalOffsite) and src.name == "s3"
    assert pick("/b", str(conf), "vault", "").name == "vault"
    assert isinstance(pick("/b", str(conf), "host", ""), LogicalHost)
    with pytest.raises(Failed):
        pick("/b", str(tmp_path / "none"), "s3", "")


# --- the inventory, the cron line, the report -------------------------------------------

INVENTORY = """
default_host: h
hosts:
  h:
    backup_dir: /b
    backup_script: /s/backup-postgres.sh
    log_file: /l.log
    cron_schedule: "0 2 * * *"
    retention_days: 7
    compose: {project_dir: /p, file: c.yml, project: p, postgres_service: postgres}
    postgres: {superuser: postgres}
    volumes: {postgres: pv, redis: rv}
"""


def _host(extra: str):
    return parse_inventory(INVENTORY + extra, Path("/inv.yml")).host(None)


def test_drill_weekly_becomes_a_cron_line():
    host = _host("    metrics_dir: /var/lib/node_exporter\n    drill: {schedule: weekly, "
                 "target: host, identity: /home/u/drill.key}\n")
    assert host.drill.schedule == WEEKLY and host.metrics_dir == "/var/lib/node_exporter"
    line = cron_entries(host)["drill"]
    assert line.startswith(WEEKLY + " /s/drill.sh --config /s/backup-postgres.sh.conf "
                           "--target host --identity /home/u/drill.key --protect pv")
    assert line.endswith("# aimms-ops:drill")
    assert "drill" not in cron_entries(_host(""))


@pytest.mark.parametrize("extra, where", [
    ("    drill: {schedule: sometimes}\n", "drill.schedule"),
    ("    drill: {target: s3}\n", "drill.target"),
    ("    drill: {identity: rel/path}\n", "drill.identity"),
    ("    drill: {when: weekly}\n", "drill.when"),
    ("    metrics_dir: relative\n", "metrics_dir"),
])
def test_bad_drill_settings_are_named(extra, where):
    from aimms_ops.core.errors import OpsError

    with pytest.raises(OpsError) as e:
        _host(extra)
    assert f"hosts.h.{where}" in str(e.value)


def test_the_source_and_the_report():
    host = _host("")
    assert dr.source_of(host, None)[0] == "host"
    assert "no offsite target" in dr.source_of(host, None)[1]
    found = parse_events("\n".join([
        '{"event":"drill","source":"s3","type":"logical","what":"x"}',
        '{"event":"check","name":"fetch","state":"CRITICAL","detail":"corrupt"}',
        '{"event":"table","database":"d","table":"t","rows":1,"live_rows":2}',
        '{"event":"drill","result":"failed","failed_check":"fetch","reason":"corrupt"}']))
    r = dr.parse(found, "h", "s3")
    d = r.as_dict()
    assert d["state"] == "CRITICAL" and d["exit_code"] == 2 and d["failed_check"] == "fetch"
    assert r.checks[0].fix.startswith("see the reason")
    assert r.tables[0].live_rows == 2 and d["rto_seconds"] is None

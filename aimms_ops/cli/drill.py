"""``fab drill``: the recovery drill (the logic is :mod:`aimms_ops.monitor.drill`)."""

from __future__ import annotations

from invoke import Exit

from aimms_ops.cli.base import connect, log_note, ops_task
from aimms_ops.core import units
from aimms_ops.core.checks import State
from aimms_ops.output import console as output


@ops_task(help={
    "target": "the offsite target to drill, host, or pitr (the PITR repository) "
              "(default: drill.target, else the first offsite target, else host)",
    "json": "print one JSON object {host, source, file, state, exit_code, rto_seconds, "
            "rpo_seconds, checks, databases, metrics_file, ...}",
    "dry_run": "print the plan (the copy it would take, each step, the command), change "
               "nothing",
})
def drill(c, target=None, json=False, dry_run=False):
    """How long would a recovery take, how much would it lose? Measured: RTO, RPO.

    The newest offsite copy (or the host's newest backup) is fetched onto the
    host and verified, restored into a throwaway container (no network, a
    volume of its own), checked against the live cluster (every database and
    table there, row counts, pg_amcheck) and removed, whatever happens. RTO:
    fetch start to a cluster answering with the data; RPO: the age of what it
    restored. Exit 0 OK, 1 WARNING, 2 CRITICAL (the drill failed), 3 UNKNOWN.
    Scheduled: drill.schedule in the inventory.
    """
    from aimms_ops.monitor import drill as dr

    with connect(c) as remote:
        if dry_run:
            p = dr.plan(remote, target)
            if json:
                output.print_json(p.as_dict())
                return
            output.table(["step", "what it would do"],
                         [["source", f"{p.why}: {p.copy}"],
                          *[s.split(": ", 1) for s in p.steps], ["command", p.command]],
                         title=f"drill on {p.host} (dry run: nothing is done)")
            return
        _source, why = dr.source_of(remote.host, target)
        if not json:
            output.note(f"drill on {remote.name}: {why} ...")
        with output.live() as shown:
            report = dr.drill(remote, target, on_log=None if json else log_note,
                              on_event=shown)
    if json:
        output.print_json(report.as_dict())
    else:
        _show(report)
    if report.state is not State.OK:
        bad = next((ch for ch in report.checks if ch.state is report.state), None)
        what = f"{bad.name}: {bad.detail}" if bad else report.state.name
        verb = "failed" if report.state is State.CRITICAL else "warns"
        raise Exit(f"drill {verb}: {what}", code=int(report.state))


def _show(report) -> None:
    v = report.values
    output.checks_table(report.checks, title=f"drill of {v.get('file', '?')} from "
                        f"{report.source} on {report.host}")
    if report.tables:
        output.table(["database", "table", "restored", "live now", "since"],
                     [[t.database, t.table, _n(t.rows), _n(t.live_rows),
                       f"{t.live_rows - t.rows:+d}" if t.rows is not None
                       and t.live_rows is not None else ""] for t in report.tables],
                     title="rows: restored, and in the live cluster now")
    rto, rpo = report.figure("rto_seconds"), report.figure("rpo_seconds")
    if rto is not None and rpo is not None:
        output.note(f"RTO {units.duration(rto)} (fetch {units.duration(v['fetch_seconds'])}"
                    f", start {units.duration(v['start_seconds'])}, restore "
                    f"{units.duration(v['restore_seconds'])}); RPO {units.duration(rpo)}: "
                    f"{v.get('file')} restored")
    if report.metrics_file:
        output.note(f"metrics: {report.metrics_file}")


def _n(value: int | None) -> str:
    return "" if value is None else str(value)

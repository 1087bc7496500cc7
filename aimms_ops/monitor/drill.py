"""``fab drill``: how long would a recovery take and how much would it lose, measured.

The host does it (``drill.sh``, the host program's ``drill``, which cron runs too): the
newest copy of an offsite target (the inventory's ``drill.target``, else the first
target, else the host's newest backup) fetched onto the host and verified, restored into
a throwaway container, checked against the live cluster, removed. This module picks the
source, builds the command, shows the plan of a dry run and reads the events into a
report: its checks, each table's rows (restored and live), the RTO and the RPO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aimms_ops.backup import listing
from aimms_ops.backup.install import verify_args
from aimms_ops.backup.settings import script_args as settings_args
from aimms_ops.core import metrics, units
from aimms_ops.core.checks import Check, State, worst
from aimms_ops.core.errors import OpsError
from aimms_ops.core.layout import DRILL_SCRIPT
from aimms_ops.core.settings import DRILL_KEYS
from aimms_ops.host import bundle
from aimms_ops.host.events import Event, Events
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.verify import _FIXES, check_of

FIXES = {**_FIXES,
         "fetch": "see the reason: push the copy again (fab offsite-sync), or fix the target",
         "identity": "set drill.identity to an age identity on the host whose public key "
                     "is in offsite_recipients (see the README: the drill)",
         "decrypt": "the identity does not decrypt the copy: use one of offsite_recipients",
         "live databases": "a database created since the backup: the next backup takes it",
         "live tables": "a table created since the backup: the next backup takes it",
         "amcheck": "the restored data is corrupt: restore another copy; see the reason",
         "lock": "wait for the other job, then run fab drill again"}
FIGURES = ("rto_seconds", "rpo_seconds", "fetch_seconds", "start_seconds", "restore_seconds")


def source_of(host: Host, target: str | None) -> tuple[str, str]:
    """The source a drill of ``host`` reads (``--target``, else the inventory's
    drill.target, else its first offsite target, else ``host``), and why, for people."""
    chosen = target or (host.drill.target if host.drill else None)
    if chosen == "host":
        return "host", "the newest backup on the host"
    if chosen == "pitr":
        if host.pitr is None:
            raise OpsError(f"--target=pitr: {host.name} has no pitr: in the inventory",
                           "drill a dump instead: --target=host, or an offsite target",
                           code=2)
        return "pitr", "the PITR repository, to its newest archived WAL"
    if chosen:
        host.offsite.target(chosen)  # an OpsError naming the targets
        return chosen, f"the newest copy on offsite target {chosen}"
    if host.offsite:
        first = host.offsite.targets[0].name
        return first, f"the newest copy on offsite target {first} (the first one)"
    return "host", "the newest backup on the host (no offsite target is configured)"


def script_args(host: Host, source: str) -> list[str]:
    """The drill script's arguments for ``host`` and ``source``."""
    identity = host.drill.identity if host.drill else None
    return settings_args(host, *verify_args(host), "--target", source,
                         *(["--identity", identity] if identity else []), keys=DRILL_KEYS)


def metrics_file(host: Host, source: str) -> str | None:
    if not host.metrics_dir:
        return None
    return f"{host.metrics_dir.rstrip('/')}/" + metrics.file_name(metrics.drill_stem(source))


@dataclass(frozen=True)
class DrillPlan:
    """What ``fab drill`` would do (``--dry-run``): nothing of it is done."""

    host: str
    source: str
    why: str
    copy: str
    steps: list[str]
    command: str

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "dry_run": True, "source": self.source, "why": self.why,
                "copy": self.copy, "steps": self.steps, "command": self.command}


def plan(remote: HostRemote, target: str | None) -> DrillPlan:
    """The plan of a drill (reads the listing only)."""
    from aimms_ops.offsite import copies

    host = remote.host
    source, why = source_of(host, target)
    if source == "host":
        b = listing.pick(listing.list_remote(remote), "latest")
        copy = f"{b.name} ({units.size(b.size)}, {units.age_of(b.created)} old)" \
            if b.created else b.name
        fetch = f"check {b.name} against its .sha256 in {host.backup_dir}"
    else:
        lst = copies.list_copies(remote, source)[0]
        regular = [c for c in lst.copies if not c.safety] if lst.ok else []
        newest = max(regular, key=lambda c: c.name_key) if regular else None
        copy = (f"{newest.name} ({units.size(newest.plaintext_size)}, "
                f"{units.age_of(newest.created) if newest.created else '?'} old"
                f"{'' if newest.complete else ', INCOMPLETE: the drill would fail'})"
                if newest else f"none ({lst.error or 'the target holds no copy'}): the drill "
                "would fail")
        identity = host.drill.identity if host.drill and host.drill.identity else None
        fetch = (f"read its .age from {source} into {host.backup_dir}/.drill.* with rclone "
                 "(size and sha256 against its .meta), decrypt it there with age -d -i "
                 + (identity or "(no drill.identity: the drill would fail)")
                 + " (sha256 against its .meta)")
    out = metrics_file(host, source)
    steps = [
        f"fetch: {fetch}",
        "restore: a throwaway container from the image of the postgres container, "
        "--network none, a volume of its own; the backup replayed into it as fab restore "
        "does; RTO ends when it answers",
        "check: every live database and table present, row counts against the live "
        "cluster's (read-only), pg_amcheck where the image has it",
        "remove: the container, its volume and the fetched copy (also after a failure)",
        f"metrics: {out}" if out else "metrics: none (metrics_dir is not set)",
        "ping: drill_url, from the scheduled run (ping.drill_url)"
        if host.ping and host.ping.drill_url else "ping: none (ping.drill_url is not set)"]
    command = bundle.script_command(DRILL_SCRIPT, [*script_args(host, source), "--report",
                                                   "--echo"])
    return DrillPlan(remote.name, source, why, copy, steps, command)


@dataclass(frozen=True)
class TableRows:
    database: str
    table: str
    rows: int | None
    live_rows: int | None


@dataclass
class DrillReport:
    """What a drill found: checks, tables, figures."""

    host: str
    source: str
    checks: list[Check]
    tables: list[TableRows] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    metrics_file: str | None = None

    @property
    def state(self) -> State:
        return worst(self.checks)

    def figure(self, key: str) -> float | None:
        v = self.values.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    def as_dict(self) -> dict[str, object]:
        v = self.values
        created = v.get("created")
        return {
            "host": self.host, "source": self.source, "type": v.get("type", "logical"),
            "file": v.get("file"), "size": v.get("size"),
            "created": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
            if isinstance(created, int) and created else None,
            "state": self.state.name, "exit_code": int(self.state),
            "failed_check": v.get("failed_check"), "reason": v.get("reason"),
            **{k: v.get(k) for k in FIGURES},
            "checks": [c.as_dict() for c in self.checks],
            "databases": [{"name": db, "tables": [
                {"name": t.table, "rows": t.rows, "live_rows": t.live_rows}
                for t in self.tables if t.database == db]} for db in self.databases],
            "metrics_file": self.metrics_file, "seconds": v.get("seconds"),
        }


def parse(found: Events, host: str, source: str) -> DrillReport:
    """The events of ``drill.sh --report`` (pure)."""
    r = DrillReport(host, source, [])
    for e in found.all:
        kind = e["event"]
        if kind == "check":
            r.checks.append(check_of(e, FIXES))
        elif kind == "database":
            r.databases.append(str(e.get("name", "")))
        elif kind == "table":
            rows, live = e.get("rows"), e.get("live_rows")
            r.tables.append(TableRows(str(e.get("database", "")), str(e.get("table", "")),
                                      rows if isinstance(rows, int) else None,
                                      live if isinstance(live, int) else None))
        elif kind == "drill":
            r.values.update({k: val for k, val in e.items() if k != "event" and val is not None})
    return r


def drill(remote: HostRemote, target: str | None,
          on_log: Callable[[str], None] | None = None,
          on_event: Callable[[Event], None] | None = None) -> DrillReport:
    """Run the drill on the host; its report."""
    host = remote.host
    source, _why = source_of(host, target)
    found = Events(on_event)
    res = remote.run_script(DRILL_SCRIPT, *script_args(host, source), "--report", "--echo",
                            on_stderr=on_log, on_stdout=found.feed)
    r = parse(found, remote.name, source)
    if not r.checks:
        raise OpsError(f"the drill on {remote.name} reported nothing: "
                       f"{res.last_error_line()}", "see fab logs")
    if res.rc != 0 and all(c.state is not State.CRITICAL for c in r.checks):
        r.checks.append(Check("drill", State.CRITICAL, f"the drill on {remote.name} ended "
                              f"without its result (status {res.rc}: killed?)",
                              "run it again: it removes what the killed run left"))
    r.metrics_file = metrics_file(host, source)
    return r

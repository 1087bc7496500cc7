"""``fab status``: are the backups good right now? As checks, a summary line and an exit code.

The facts come from one SSH round trip (:mod:`aimms_ops.monitor.hostfacts`); everything
here is pure functions over those facts, tested with canned text. The exit code and the
first line follow the monitoring plugin convention (Nagios, Icinga): 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN, then ``AIMMS-OPS STATE - what matters``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime

from aimms_ops.backup.install import MARK, cron_entries
from aimms_ops.backup.listing import good_backups
from aimms_ops.core import retention, units
from aimms_ops.core.checks import Check, State, worst
from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.names import BackupFile
from aimms_ops.inventory.connected import HostRemote, start_command
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.compressor import GET_ZSTD, compressor_check
from aimms_ops.monitor.copies import RestoreCopy, check_copies
from aimms_ops.monitor.coverage import check_coverage, live_databases
from aimms_ops.monitor.disk import DiskOutlook, check_disk, disk_from
from aimms_ops.monitor.health import connection_checks
from aimms_ops.monitor.hostfacts import HostFacts, gather
from aimms_ops.monitor.lastverify import check_verify, deciding_verify
from aimms_ops.monitor.rebuilding import check_rebuild, point_to_rebuild
from aimms_ops.monitor.runlog import LoggedPing, LoggedRun, died_run, last_run

PREFIX = "AIMMS-OPS"


DEFAULT_MAX_AGE = "26h"


def parse_max_age(text: str) -> int:
    """``26h``, ``90m``, ``2d`` (or ``1.5d``) as seconds; anything else is an OpsError."""
    seconds = units.parse_duration(text)
    if seconds is None:
        raise OpsError(f"invalid --max-age {shown(text, 40)}: expected a positive number "
                       "followed by m, h or d, like 26h, 90m or 2d", code=3)
    return seconds


def check_ping(pings: list[LoggedPing], host: Host) -> Check | None:
    """The last ping the host's jobs sent to the monitor (when ``ping`` is configured)."""
    if host.ping is None:
        return None
    name = "ping"
    if not pings:
        return Check(name, State.OK, f"no ping sent yet ({host.ping.kind})")
    last = pings[-1]
    when = last.at.strftime("%Y-%m-%d %H:%M UTC")
    if last.ok:
        return Check(name, State.OK, f"last ping ok: {last.kind} {last.event} at {when}")
    return Check(name, State.WARNING, f"last ping failed: {last.kind} {last.event} at {when}: "
                 f"{last.error}", "the monitor did not hear of that run: check the ping URL "
                 "and that the host reaches it (fab doctor --ping)")


def check_newest(backups: list[BackupFile] | None, now: datetime, max_age: int,
                 max_age_text: str, backup_dir: str) -> Check:
    """Age of the newest good backup against ``max_age`` seconds."""
    name = "newest backup"
    if backups is None:
        return Check(name, State.CRITICAL, f"backup dir {backup_dir} does not exist",
                     "run: fab install-backups, then fab backup")
    good = good_backups(backups)
    if not good:
        safety = [b for b in backups if b.safety]
        what = (f"only safety copies ({len(safety)}), no regular backup," if safety
                else "no good backup (with a .sha256)")
        return Check(name, State.CRITICAL, f"{what} in {backup_dir}",
                     "make one: fab backup; then see fab doctor")
    newest = good[0]
    age = (now - newest.created).total_seconds()
    if age > max_age:
        return Check(name, State.CRITICAL,
                     f"newest good backup is {units.age(age)} old (max {max_age_text})",
                     "see fab doctor and fab logs; make one now: fab backup")
    return Check(name, State.OK, f"newest backup {units.age(age)} ago ({units.size(newest.size)}, "
                 f"{newest.name})")


def check_size(backups: list[BackupFile] | None,
               runs: list[LoggedRun] | None = None) -> Check:
    """The newest good backup against the median of up to 5 before it: less than half warns.

    A shrink accepted with ``--allow-shrink`` (its RESULT line says so) is OK.
    """
    good = good_backups(backups)
    name = "backup size"
    if not good:
        return Check(name, State.UNKNOWN, "no good backup to measure")
    if len(good) < 2:
        return Check(name, State.OK,
                     f"{units.size(good[0].size)}; no earlier backup to compare with")
    newest, previous = good[0], [b.size for b in good[1:]]
    dropped_from = retention.size_drop(newest.size, previous)
    allowed = any(r.ok and r.name == newest.name and " shrink allowed: " in r.detail
                  for r in runs or [])
    median = dropped_from or statistics.median(previous[:retention.SIZE_WINDOW])
    if dropped_from is not None and allowed:
        return Check(name, State.OK, f"{units.size(newest.size)}, less than half of the "
                     f"{units.size(median)} before it: accepted (--allow-shrink)")
    if dropped_from is not None:
        return Check(name, State.WARNING,
                     f"newest backup is {units.size(newest.size)}, less than half of the "
                     f"{units.size(median)} before it",
                     "check that no database or table went missing: fab verify --deep")
    return Check(name, State.OK,
                 f"{units.size(newest.size)}, previous ones {units.size(median)} (median)")


def check_last_run(runs: list[LoggedRun], died: LoggedRun | None = None,
                   stack: Stack | None = None) -> Check:
    """The last backup run's result from the log; ``died``: it was killed (runlog.died_run);
    ``stack``: the host's facts and inventory entry, for fixes with its real commands."""
    run = last_run(runs, "backup")
    name = "last run"
    if died is not None:
        return Check(name, State.CRITICAL, f"last backup died: {died.reason}",
                     "see fab logs (and the host's kernel log for the OOM killer); the next "
                     "run cleans up what it left: fab backup")
    if run is None:
        return Check(name, State.WARNING, "no backup run in the log yet",
                     "wait for cron, or run fab backup")
    when = run.at.strftime("%Y-%m-%d %H:%M UTC")
    if run.ok:
        return Check(name, State.OK, f"ok at {when} ({run.name})")
    return Check(name, State.CRITICAL, f"last backup run failed at {when}: {run.reason}",
                 fix_for_failure(run.reason or "", stack))


#: The host's facts and its inventory entry: what a fix needs to name this host's commands.
Stack = tuple[dict[str, str], Host]


def fix_for_failure(reason: str, stack: Stack | None = None) -> str:
    """What to do about a failed backup run, from its reason (the seed's common issues);
    with ``stack``, the commands are this host's and a fix already made is not repeated."""
    r = reason.lower()
    if "is not running" in r or "no container" in r:
        if stack is None:
            return "start postgres: docker compose up -d postgres (see fab doctor)"
        facts, host = stack
        if facts.get("container.state") == "running" and facts.get("postgres.ready") == "1":
            return "postgres is running again: make a backup now: fab backup"
        return f"start postgres: {start_command(facts, host)} (see fab doctor)"
    if "free space" in r or "no space" in r:
        return "free space in the backup dir, or lower retention_days and run fab prune"
    if "docker is not reachable" in r:
        return "start the Docker daemon, or add the login user to the docker group"
    if "restore or rebuild of the cluster" in r:
        return "a restore or rebuild-volume was running: the next backup runs after it"
    if "another backup" in r or "lock" in r:
        return "a backup is still running or hung: see fab logs and the lock owner"
    if "zstd is not installed" in r:
        return GET_ZSTD
    if "pg_dumpall" in r or "dump failed" in r:
        return "see the postgres log: fab doctor"
    return "see fab logs"


def check_cron(crontab: str | None, host: Host) -> list[Check]:
    """Each cron entry this tool owns: present and equal to what the inventory makes."""
    if crontab is None:
        return [Check("cron", State.WARNING, "crontab is not installed on the host",
                      "install cron, then run fab install-backups")]
    lines = [ln.strip() for ln in crontab.splitlines()]
    rows = []
    for name, expected in cron_entries(host).items():
        marked = [ln for ln in lines if ln.endswith(f"{MARK}{name}")]
        if expected in lines:
            rows.append(Check(f"cron {name}", State.OK, expected.split(" >>")[0]))
        elif marked:
            have, want = _schedule(marked[0]), _schedule(expected)
            how = (f"schedule {have}, inventory {want}" if have != want
                   else "its command differs")
            rows.append(Check(f"cron {name}", State.WARNING,
                              f"cron entry '{name}' differs from the inventory ({how})",
                              "run: fab install-backups"))
        else:
            rows.append(Check(f"cron {name}", State.WARNING, f"cron entry '{name}' missing",
                              "run: fab install-backups"))
    return rows


def _schedule(cron_line: str) -> str:
    fields = cron_line.split()
    return fields[0] if cron_line.startswith("@") else " ".join(fields[:5])


_STACK_ROWS = ("docker", "postgres container", "volume ")


def stack_checks(hf: HostFacts, host: Host) -> list[Check]:
    """Docker, the postgres container, the volumes (external) and a backup dir the next
    backup cannot write to, from ``fab check``'s rows (a missing backup dir is the newest
    backup's check)."""
    rows = connection_checks(hf.facts, host, fingerprint=hf.fingerprint)
    unwritable = hf.facts.get("backup_dir.exists") == "1" and \
        hf.facts.get("backup_dir.writable") != "1"
    return [r for r in rows if r.name.startswith(_STACK_ROWS)
            or (r.name == "backup dir" and unwritable)]


@dataclass
class StatusReport:
    host: str
    checks: list[Check]
    max_age: int
    checked_at: datetime
    newest: BackupFile | None = None
    last_backup: LoggedRun | None = None
    last_verify: LoggedRun | None = None
    disk: DiskOutlook | None = None
    perfdata: dict[str, str] = field(default_factory=dict)
    ok_text: str = "all checks passed"
    last_ping: LoggedPing | None = None
    replaced: list[RestoreCopy] = field(default_factory=list)

    @property
    def state(self) -> State:
        return worst(self.checks)

    @property
    def summary(self) -> str:
        return summary_line(self.checks, self.ok_text, self.perfdata)

    def as_dict(self) -> dict[str, object]:
        newest = None
        if self.newest is not None:
            newest = {"name": self.newest.name, "size": self.newest.size,
                      "created": units.iso(self.newest.created), "sha256": self.newest.sha256,
                      "age_seconds": int((self.checked_at - self.newest.created)
                                         .total_seconds())}
        return {
            "host": self.host,
            "state": self.state.name,
            "exit_code": int(self.state),
            "summary": self.summary,
            "checked_at": units.iso(self.checked_at),
            "max_age_seconds": self.max_age,
            "checks": [c.as_dict() for c in self.checks],
            "newest_backup": newest,
            "last_backup_run": self.last_backup.as_dict() if self.last_backup else None,
            "last_verify": self.last_verify.as_dict() if self.last_verify else None,
            "disk": self.disk.as_dict() if self.disk else None,
            "last_ping": self.last_ping.as_dict() if self.last_ping else None,
            "replaced": [c.as_dict() for c in self.replaced],
        }


def summary_line(checks: list[Check], ok_text: str = "all checks passed",
                 perfdata: dict[str, str] | None = None) -> str:
    """``AIMMS-OPS STATE - ...``: the problems, worst first; when all is well, ``ok_text``."""
    state = worst(checks)
    if state is State.OK:
        text = ok_text
    else:
        order = {State.CRITICAL: 0, State.WARNING: 1, State.UNKNOWN: 2}
        bad = sorted((c for c in checks if not c.ok), key=lambda c: order[c.state])
        text = "; ".join(_phrase(c) for c in bad)
    line = f"{PREFIX} {state.name} - {text}"
    if perfdata:
        line += " | " + " ".join(f"{k}={v}" for k, v in perfdata.items())
    return line


def _phrase(c: Check) -> str:
    """A check as a phrase of the summary: its detail, named when it does not say what."""
    first = c.name.split()[0].lower()
    return c.detail if c.detail.lower().startswith(first) else f"{c.name}: {c.detail}"


def unknown_line(message: str) -> str:
    return f"{PREFIX} UNKNOWN - {message}"


def check_databases(hf: HostFacts, runs: list[LoggedRun]) -> Check | None:
    """The newest good backup's databases (its run's DATABASES line) against the live
    cluster's; None when there is no backup or the cluster gave no list (other checks
    say why)."""
    good = good_backups(hf.backups)
    live = live_databases(hf.facts)
    if not good or live is None:
        return None
    run = next((r for r in reversed(runs) if r.kind == "backup" and r.ok
                and r.name == good[0].name), None)
    dbs = list(run.databases) if run is not None and run.databases is not None else None
    return check_coverage("databases", live, dbs, good[0].name)


def judge(hf: HostFacts, host: Host, max_age: int, max_age_text: str) -> StatusReport:
    """The status of ``host`` from its facts (pure)."""
    now = hf.now
    runs = hf.runs
    disk = disk_from(hf)
    died = died_run(runs, hf.starts, "backup", hf.backup_lock_holders)
    checks = [check_newest(hf.backups, now, max_age, max_age_text, host.backup_dir),
              check_size(hf.backups, runs),
              check_last_run(runs, died, (hf.facts, host)),
              *check_cron(hf.crontab, host),
              check_disk(disk, hf.backups, host.backup_dir),
              *stack_checks(hf, host)]
    rebuild = check_rebuild(hf.rebuild_state, host)
    if rebuild is not None:
        checks = [rebuild, *point_to_rebuild(checks, rebuild)]
    databases = check_databases(hf, runs)
    if databases is not None:
        checks.append(databases)
    verify = check_verify(runs, host, now, hf.record, hf.backups)
    if verify is not None:
        checks.append(verify)
    ping = check_ping(hf.pings, host)
    if ping is not None:
        checks.append(ping)
    copies = hf.restore_copies
    kept = check_copies(copies)
    if kept is not None:
        checks.append(kept)
    compressor = compressor_check(hf.extra, host.compression)
    if compressor is not None and compressor.state is State.CRITICAL:
        checks.append(compressor)  # no backup can be made: the next one fails
    good = good_backups(hf.backups)
    newest = good[0] if good else None
    perf: dict[str, str] = {}
    ok_parts = []
    if newest is not None:
        age = (now - newest.created).total_seconds()
        perf["age"] = f"{int(age)}s;;{max_age};0"
        perf["size"] = f"{newest.size}B;;;0"
        ok_parts.append(f"newest backup {units.age(age)} ago ({units.size(newest.size)})")
    ok_parts.append("last run ok")
    if verify is not None and verify.detail.startswith("ok "):
        ok_parts.append(f"deep verify {verify.detail.split(' (')[0]}")
    if disk is not None:
        perf["free"] = f"{disk.free}B;;;0;{disk.total}"
        ok_parts.append(f"{units.size(disk.free)} free")
    pings = hf.pings
    return StatusReport(host.name, checks, max_age, now, newest, died or last_run(runs, "backup"),
                        deciding_verify(runs, hf.backups), disk, perf, "; ".join(ok_parts),
                        last_ping=pings[-1] if pings else None, replaced=copies)


def status(remote: HostRemote, max_age: int, max_age_text: str) -> StatusReport:
    """Gather the facts of the host (one SSH round trip; one more with PITR) and judge them."""
    report = judge(gather(remote), remote.host, max_age, max_age_text)
    if remote.host.pitr is not None:
        from aimms_ops.core.errors import OpsError
        from aimms_ops.pitr import state as pitr_state

        try:
            pitr = pitr_state.check(pitr_state.read(remote), remote.host)
        except OpsError as e:
            pitr = Check("pitr", State.CRITICAL, str(e), "fab doctor")
        report.checks.append(pitr)
    return report

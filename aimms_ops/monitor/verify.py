"""``fab verify``: is a backup restorable? Its checks, and with ``deep`` a real trial restore.

Without ``deep`` the backup is read once on the host, exactly as ``fab restore``
checks a dump before touching anything (:func:`aimms_ops.restore.source.inspect_remote`): recorded
sha256, the compressed stream (``gzip stream``, or ``zstd stream`` for a ``.sql.zst``),
header and completion marker; then its databases against the live cluster's. With
``deep`` the packaged ``verify-backup.sh`` (the script cron runs weekly) restores it
into a throwaway container from the production image, reports databases, tables and
rows, and removes the container and its volume whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aimms_ops.backup import listing
from aimms_ops.backup.install import verify_args
from aimms_ops.backup.settings import script_args as settings_args
from aimms_ops.core import names
from aimms_ops.core.checks import Check, State, worst
from aimms_ops.core.errors import OpsError
from aimms_ops.core.layout import VERIFY_SCRIPT
from aimms_ops.core.settings import VERIFY_KEYS
from aimms_ops.host.events import Event, Events
from aimms_ops.inventory.connected import HostRemote, facts_args
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.coverage import check_coverage, live_databases
from aimms_ops.restore.source import DumpInfo, inspect_remote

CHECK_ORDER = ("checksum", "gzip stream", "dump header", "completion marker")


@dataclass(frozen=True)
class TableCount:
    database: str
    table: str
    rows: int


@dataclass
class VerifyReport:
    """What ``fab verify`` found about one backup."""

    host: str
    file: str
    path: str
    size: int
    sha256: str
    deep: bool
    checks: list[Check]
    databases: list[str] = field(default_factory=list)
    tables: list[TableCount] = field(default_factory=list)
    container: str | None = None
    volume: str | None = None
    image: str | None = None
    seconds: int | None = None
    failed_check: str | None = None

    @property
    def state(self) -> State:
        return worst(self.checks)

    def as_dict(self) -> dict[str, object]:
        dbs = [{"name": db, "tables": [{"name": t.table, "rows": t.rows}
                                       for t in self.tables if t.database == db]
                if self.deep else None}
               for db in self.databases]
        return {
            "host": self.host, "file": self.file, "path": self.path, "size": self.size,
            "sha256": self.sha256, "deep": self.deep, "state": self.state.name,
            "exit_code": int(self.state), "failed_check": self.failed_check,
            "checks": [c.as_dict() for c in self.checks],
            "databases": dbs,
            "throwaway": ({"container": self.container, "volume": self.volume,
                           "image": self.image, "removed": self._removed()}
                          if self.deep else None),
            "seconds": self.seconds,
        }

    def _removed(self) -> bool | None:
        for c in self.checks:
            if c.name == "cleanup":
                return c.ok
        return None if self.container is None else False


def checks_of(dump: DumpInfo) -> list[Check]:
    """The named checks of a dump inspected by ``restore.inspect_*`` (pure)."""
    found: dict[str, Check] = {}
    stream = names.stream_check(dump.format)  # named after the compression
    for problem in dump.problems:
        if problem.startswith("sha256 mismatch"):
            found["checksum"] = Check("checksum", State.CRITICAL, problem,
                                      "the file changed after it was written: use another "
                                      "backup (fab list-backups)")
        elif problem.startswith(("the gzip stream", "the zstd stream", "cannot read")):
            found[stream] = Check(stream, State.CRITICAL, problem,
                                  _FIXES["gzip stream"])
        elif problem.startswith("not a pg_dumpall dump"):
            found["dump header"] = Check("dump header", State.CRITICAL, problem,
                                         "this is not a backup made by pg_dumpall")
        elif problem.startswith("the dump is incomplete"):
            found["completion marker"] = Check("completion marker", State.CRITICAL, problem,
                                               "the dump was cut short: use another backup")
        elif problem.startswith("the file is empty"):
            found["checksum"] = Check("checksum", State.CRITICAL, problem,
                                      "use another backup")
        else:
            found.setdefault("dump", Check("dump", State.CRITICAL, problem))
    if "checksum" not in found:
        if dump.sha256_recorded is None:
            found["checksum"] = Check("checksum", State.WARNING,
                                      "no .sha256 beside the backup: nothing to compare with",
                                      "backups made by fab backup or cron always have one")
        else:
            found["checksum"] = Check("checksum", State.OK,
                                      f"matches its .sha256 ({dump.sha256[:16]}…)")
    stream_bad = stream in found
    header_bad = "dump header" in found
    if stream not in found:
        found[stream] = Check(stream, State.OK, "decompresses to its end")
    for name, ok_detail in (("dump header", "a pg_dumpall cluster dump"),
                            ("completion marker", "present")):
        if name in found:
            continue
        if stream_bad or (name == "completion marker" and header_bad):
            found[name] = Check(name, State.UNKNOWN, "not checked: an earlier check failed")
        else:
            found[name] = Check(name, State.OK, ok_detail)
    ordered = [found.pop(stream if n == "gzip stream" else n) for n in CHECK_ORDER]
    return ordered + list(found.values())


def _first_failed(checks: list[Check]) -> str | None:
    for c in checks:
        if c.state is State.CRITICAL:
            return c.name
    return None


_FIXES = {"checksum": "the file changed after it was written: use another backup",
          "gzip stream": "the file is damaged or cut short: use another backup",
          "zstd stream": "the file is damaged or cut short: use another backup",
          "dump header": "this is not a backup made by pg_dumpall",
          "completion marker": "the dump was cut short: use another backup",
          "restore": "the dump does not replay: see the error; use another backup",
          "databases": "the dump does not restore every database it holds",
          "disk": "free space on the disk of Docker's data root",
          "cleanup": "remove what is named by hand",
          "start": "see the reason, and fab doctor"}


@dataclass
class DeepOutput:
    """What verify-backup.sh --report printed."""

    checks: list[Check] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    tables: list[TableCount] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # file, path, size, sha256, ...


def check_of(e: Event, fixes: dict[str, str]) -> Check:
    """A ``check`` event as a Check, its fix from ``fixes`` when it failed (pure)."""
    state = str(e.get("state", ""))
    st = State[state] if state in State.__members__ else State.UNKNOWN
    name = str(e.get("name", ""))
    return Check(name, st, str(e.get("detail", "")),
                 fixes.get(name, "") if st is State.CRITICAL else "")


def parse_deep(found: Events) -> DeepOutput:
    """The events of verify-backup.sh --report (pure)."""
    out = DeepOutput()
    for e in found.all:
        kind = e["event"]
        if kind == "check":
            out.checks.append(check_of(e, _FIXES))
        elif kind == "database":
            out.databases.append(str(e.get("name", "")))
        elif kind == "table" and isinstance(e.get("rows"), int):
            out.tables.append(TableCount(str(e.get("database", "")), str(e.get("table", "")),
                                         e["rows"]))
        elif kind == "verify":
            out.values.update({k: str(v) for k, v in e.items()
                               if k != "event" and v is not None})
    return out


def script_args(host: Host, file: str) -> list[str]:
    """Every setting of the deep verify script for ``host``, and the file to verify."""
    return settings_args(host, *verify_args(host), "--file", file, keys=VERIFY_KEYS)


def check_file(file: str) -> None:
    """``file`` is ``latest`` or a backup's name (refused in one line before connecting)."""
    if file != "latest":
        names.validate_name(file)


def verify(remote: HostRemote, file: str, deep: bool,
           on_log: Callable[[str], None] | None = None,
           on_event: Callable[[Event], None] | None = None) -> VerifyReport:
    """Verify backup ``file`` (a name or ``latest``) on the host; ``on_event``: each
    event of a deep verify as it comes (a wait for a lock, the replay's progress)."""
    check_file(file)
    b = listing.pick(listing.list_remote(remote), file)
    if not deep:
        dump = inspect_remote(remote, b.path, full=True)
        checks = checks_of(dump)
        if all(c.state is not State.CRITICAL for c in checks):
            facts = remote.program_facts("facts", *facts_args(remote.host, config=False))
            checks.append(check_coverage("databases", live_databases(facts),
                                         list(dump.databases), b.name))
        return VerifyReport(remote.name, b.name, b.path, dump.size, dump.sha256, False,
                            checks, databases=list(dump.databases),
                            failed_check=_first_failed(checks))
    found = Events(on_event)
    res = remote.run_script(VERIFY_SCRIPT, *script_args(remote.host, b.name), "--report",
                            "--echo", on_stderr=on_log, on_stdout=found.feed)
    r = parse_deep(found)
    if not r.checks:
        raise OpsError(f"the verify script on {remote.name} reported nothing: "
                       f"{res.last_error_line()}", "see fab logs")
    checks = r.checks
    if res.rc != 0 and all(c.state is not State.CRITICAL for c in checks):
        checks.append(Check("verify", State.CRITICAL, res.last_error_line()))
    v = r.values
    size = v.get("size", "")
    seconds = v.get("seconds", "")
    return VerifyReport(
        remote.name, v.get("file", b.name), v.get("path", b.path),
        int(size) if size.isdigit() else b.size, v.get("sha256", ""), True, checks,
        databases=r.databases, tables=r.tables, container=v.get("container"),
        volume=v.get("volume"), image=v.get("image"),
        seconds=int(seconds) if seconds.isdigit() else None,
        failed_check=v.get("failed_check") or _first_failed(checks),
    )

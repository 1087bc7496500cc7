"""Running a restore plan: the stream, its failures in one line, the row estimates."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aimms_ops.core.errors import ConnectionLost, OpsError, shown
from aimms_ops.dump.lexer import shown as lexer_shown
from aimms_ops.host import shell
from aimms_ops.host.commands import Command
from aimms_ops.host.events import Event, Events
from aimms_ops.host.remote import Progress, Remote
from aimms_ops.restore.plan import RestorePlan


@dataclass(frozen=True)
class TableRows:
    """Rows of one table of a database (an estimate, or counted)."""

    database: str
    table: str
    rows: int


@dataclass(frozen=True)
class RestoreReport:
    databases: tuple[str, ...]
    tables: tuple[TableRows, ...]
    seconds: float
    bytes_streamed: int
    #: database -> the name the database it replaced is kept under
    aside: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.bytes_streamed / self.seconds if self.seconds else 0.0


#: The exit status of restore-stream.sh when another restore holds the lock.
LOCK_BUSY = 75

#: psql's message for a failed statement (psql's own words on stderr); the lines after it
#: until the next ``psql:`` line belong to it (a name may hold a newline).
_PSQL_ERR = re.compile(r"^psql:<stdin>:(\d+): (ERROR|FATAL|error):\s+(.*)$")
#: The stages of the stream, in the order of its ``stages`` event.
STAGES = ("reading the dump", "decompressing", "filtering", "psql")


@dataclass(frozen=True)
class StreamResult:
    seconds: float
    stderr: str
    found: Events = field(default_factory=Events)

    @property
    def aside(self) -> dict[str, str]:
        """database (as shown) -> the name the one it replaced is kept under."""
        return {shown_name(e.get("database")): str(e.get("kept_as", ""))
                for e in self.found.of("replaced")}


def shown_name(name: object) -> str:
    """A database name the host reported, as the host's messages show it."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else b"?"
    return lexer_shown(raw)


def execute(remote: Remote, plan: RestorePlan, progress: Progress | None = None,
            on_stderr: Callable[[str], None] | None = None,
            on_event: Callable[[Event], None] | None = None) -> RestoreReport:
    """Send the commands of ``plan`` (the stream, the rows, ANALYZE left running); raise on
    a failure.
    ``progress``: advanced by the bytes of the dump read so far; ``on_event``: the
    stream's other events (a wait for the cluster lock)."""
    stream, *after = plan.commands
    result = run_stream(remote, stream, plan.dump.size, progress=progress,
                        on_stderr=on_stderr, on_event=on_event, hint=failure_hint(plan),
                        cut_hint=f"{failure_hint(plan)}; run it again: {rerun_command(plan)}")
    tables: list[TableRows] = []
    for cmd in after:
        if cmd.reads == "estimates":
            tables += read_estimates(remote, cmd, plan.affected)
        else:  # ANALYZE, left running: what it says does not change the restore's outcome
            remote.run(cmd.line, what="ANALYZE")
    return RestoreReport(plan.affected, tuple(tables), result.seconds, plan.dump.size,
                         result.aside)


class _Read:
    """The host's ``progress`` events of a dump it reads itself, as ``advance(n)`` calls
    on a bar of ``size`` bytes (the host may count in decompressed bytes: scaled); every
    other event to ``on_event``."""

    def __init__(self, progress: Progress | None,
                 on_event: Callable[[Event], None] | None, size: int) -> None:
        self.progress = progress
        self.on_event = on_event
        self.size = size
        self.done = 0

    def __call__(self, event: Event) -> None:
        if event["event"] != "progress":
            if self.on_event is not None:
                self.on_event(event)
            return
        done, total = int(event.get("done") or 0), event.get("total")
        if isinstance(total, int) and total > 0 and total != self.size:
            done = done * self.size // total
        self.advance_to(min(done, self.size))

    def advance_to(self, done: int) -> None:
        if self.progress is not None and done > self.done:
            self.progress(done - self.done)
            self.done = done


def run_stream(remote: Remote, cmd: Command, size: int, *, progress: Progress | None,
               on_stderr: Callable[[str], None] | None, hint: str,
               cut_hint: str, on_event: Callable[[Event], None] | None = None,
               ) -> StreamResult:
    """Send restore-stream.sh (``cmd``); its seconds and messages, or an OpsError in one
    line. ``progress`` moves with the bytes sent from here, or with the bytes the host
    has read of a dump on the host (its events).

    ``hint`` goes with a failure, ``cut_hint`` with a connection lost part-way; both give
    way to the host's own word that the live cluster is as it was.
    """
    started = time.monotonic()
    read = _Read(progress, on_event, size)
    found = Events(read)
    try:
        if cmd.stdin_file:
            with open(cmd.stdin_file, "rb") as fh:
                res = remote.stream_to_remote(fh, cmd.line, progress=progress,
                                              on_stderr=on_stderr, on_stdout=found.feed,
                                              what="the restore stream")
        else:
            res = remote.run(cmd.line, on_stderr=on_stderr, on_stdout=found.feed,
                             what=cmd.script)
            if res.ok:
                read.advance_to(size)
    except ConnectionLost as exc:
        # restore-stream.sh stops the restore when its session ends.
        raise ConnectionLost(f"restore on {remote.name} stopped part-way: {exc.message}",
                             cut_hint, code=exc.code) from None
    seconds = time.monotonic() - started
    if res.rc == LOCK_BUSY:
        raise OpsError(f"restore on {remote.name} refused: "
                       f"{explain_failure(res.stderr, found)}",
                       "nothing was restored; run it again once that run has ended",
                       code=75)
    if not res.ok:
        if found.last("undone") is not None:
            hint = ("nothing was changed: the live cluster is as it was (what the restore "
                    "had rebuilt beside it was removed)")
        raise OpsError(f"restore on {remote.name} failed: {explain_failure(res.stderr, found)}",
                       hint)
    return StreamResult(seconds, res.stderr, found)


def failure_hint(plan: RestorePlan) -> str:
    """What a restore that stopped part-way leaves: the live databases as they were (the
    copies are built beside them), maybe a half-built copy the next restore removes."""
    return ("the live databases were not touched (the restore builds beside them); a "
            "half-built copy left behind is removed by the next restore (fab status shows it)")


def rerun_command(plan: RestorePlan) -> str:
    """The exact command that restores the same dump again (never ``latest``)."""
    src = plan.dump.source
    name = src.rsplit("/", 1)[-1] if plan.dump.location == "remote" else src
    args = ["fab", "restore", f"--file={name}"]
    if plan.database is not None:
        args.append(f"--database={plan.database}")
    return shell.join([*args, "--no-safety-backup"])


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def explain_failure(stderr: str, found: Events) -> str:
    """One line from what the restore stream said: psql's whole error (its stderr) with the
    dump's line and database (the filter's ``section`` and ``inserted`` events), else the
    stream's own ``error``, else psql that could not start, else the stages that failed.

    psql's message may span lines (a name with a newline): they are joined, the newlines
    shown as ``\\n``. Its line number counts the filter's inserted blocks, which are
    taken off again; an error inside one is said to be in what aimms-ops inserted.
    """
    lines = stderr.splitlines()
    inserted = [(_number(e.get("after")), _number(e.get("lines")))
                for e in found.of("inserted")]
    for i, line in enumerate(lines):
        m = _PSQL_ERR.match(line.strip())
        if not m:
            continue
        text = m.group(3)
        for more in lines[i + 1:]:
            if more.startswith("psql:"):
                break
            text += "\\n" + more
        n = int(m.group(1))
        shift, inside = 0, None
        for after, count in inserted:
            if n > after + count:
                shift += count
            elif n > after:
                inside = after - shift
        where = _database_at(found, n)
        if inside is not None:
            return (f"psql stopped in what aimms-ops inserted after line {inside} of the "
                    f"dump{where}: {m.group(2)}: {text}")
        return f"psql stopped at line {n - shift} of the dump{where}: {m.group(2)}: {text}"
    error = next(found.of("error"), None)
    if error is not None:
        return str(error.get("text") or "no message")
    for line in lines:
        # psql that could not even start (no such database, no server): its own words.
        if line.startswith(("psql: error: ", "Error response from daemon: ")):
            return line
    stages = found.last("stages")
    if stages is not None and isinstance(stages.get("status"), list):
        codes = [_number(c) for c in stages["status"]]
        failed = [f"{s} exited {c}" for s, c in zip(STAGES, codes, strict=False) if c != 0]
        return ", ".join(failed) or "every stage ended well"
    rest = [ln for ln in lines if ln.strip()]
    return rest[-1] if rest else "no message"


def _database_at(found: Events, n: int) -> str:
    """``, in database 'NAME'`` for line ``n`` of the filter's output, from where the
    filter said each database starts; empty in the globals."""
    name = ""
    for e in found.of("section"):
        if 0 < _number(e.get("line")) <= n and isinstance(e.get("database"), str):
            name = f", in database {shown(e['database'])}"
    return name


def read_estimates(remote: Remote, cmd: Command,
                   databases: tuple[str, ...]) -> list[TableRows]:
    """Send the plan's estimate command: the tables and row estimates of ``databases``
    (none for a database whose psql failed: the restore itself succeeded)."""
    return parse_estimates(remote.run(cmd.line, what="psql").stdout, databases)


def table_rows(stdout: str) -> Iterator[tuple[int | None, tuple[str, int] | None]]:
    """The JSON lines of a row count or estimate (psql's ``json_build_object``), each as
    (I of ``{"database": I}``, None) or (None, (NAME, N) of ``{"table": NAME, "rows":
    N}``); any other line is skipped (pure)."""
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        index, table, rows = row.get("database"), row.get("table"), row.get("rows")
        if isinstance(index, int):
            yield index, None
        elif isinstance(table, str) and isinstance(rows, int):
            yield None, (table, rows)


def parse_estimates(stdout: str, databases: tuple[str, ...]) -> list[TableRows]:
    """JSON lines: ``{"database": I}``, each followed by ``{"table": NAME, "rows": N}``
    lines of that database (:func:`table_rows`)."""
    tables: list[TableRows] = []
    current: str | None = None
    for index, row in table_rows(stdout):
        if index is not None:
            current = databases[index] if 0 <= index < len(databases) else None
        elif current is not None and row is not None:
            tables.append(TableRows(current, *row))
    return tables

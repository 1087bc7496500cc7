"""Restore a pg_dumpall dump, whole cluster or one database, exactly and verified first.

The dump is checked before the database is touched (recorded sha256, gzip stream,
completion marker, database sections). Then it is streamed with no temporary file
anywhere: local file -> one SSH channel -> decompress on the host ->
restore-filter.awk -> ``docker exec -i CONTAINER psql`` with ON_ERROR_STOP. The
filter makes the replay exact on a live cluster: sessions are ended and each
database is dropped and recreated (``WITH (FORCE)``), existing roles are kept and
updated rather than colliding.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import shell
from .backups import NAME_HINT, NAME_RE, SHA_RE
from .compose import facts_args, parse_facts
from .errors import ConnectionLost, OpsError, shown
from .inventory import Host
from .remote import Progress, Remote

HEADER = "-- PostgreSQL database cluster dump"
MARKER = "-- PostgreSQL database cluster dump complete"
#: The lines that matter when scanning a dump: a database section's marker, the start
#: of COPY data and its end (markers inside COPY data are data, not sections).
_SCAN = re.compile(rb"^(?:-- Database \"(.*)\" dump|(COPY .* FROM stdin;)|(\\\.))$", re.MULTILINE)
#: Bytes read from a local dump per step, and the most one decompression step yields.
READ_CHUNK = 1024 * 1024
INFLATE_PIECE = 1024 * 1024
_PSQL_ERR = re.compile(r"^psql:<stdin>:(\d+): (ERROR|FATAL|error):\s+(.*)$")


@dataclass(frozen=True)
class DumpInfo:
    """What a dump file is, found by reading it once, before anything is touched."""

    source: str  # the local path, or the path on the host
    location: str  # "local" or "remote"
    size: int
    format: str  # "gz" or "plain"
    sha256: str
    sha256_recorded: str | None
    databases: tuple[str, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(size: int, sha: str, recorded: str | None, stream_ok: bool, stream_error: str,
           head: list[str], tail: list[str], fmt: str) -> tuple[str, ...]:
    problems = []
    if size == 0:
        problems.append("the file is empty")
    if recorded is not None and recorded != sha:
        problems.append(f"sha256 mismatch: the file is {sha[:16]}…, its .sha256 says "
                        f"{recorded[:16]}…")
    if not stream_ok:
        problems.append(f"the gzip stream is damaged or truncated ({stream_error})"
                        if fmt == "gz" else f"cannot read the file ({stream_error})")
    elif HEADER not in head:
        problems.append("not a pg_dumpall dump: no cluster dump header")
    elif MARKER not in tail:
        problems.append("the dump is incomplete: its completion marker is missing")
    return tuple(problems)


def inspect_local(path: Path, progress: Progress | None = None) -> DumpInfo:
    """Read a local dump once: checksum, decompress, find its databases and marker."""
    if not path.is_file():
        raise OpsError(f"no such file: {path}", "give a local .sql.gz or .sql, or the name of "
                       "a backup on the host (see fab list-backups)")
    fmt = "gz" if path.name.endswith(".gz") else "plain"
    recorded = _recorded_sha(path.with_name(path.name + ".sha256"))
    digest = hashlib.sha256()
    inflater = _Inflater() if fmt == "gz" else None
    head_buf = b""
    tail_buf = b""
    carry = b""
    scanner = _Sections()
    in_copy = False
    stream_ok, stream_error = True, ""
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            size += len(chunk)
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
            if not stream_ok:
                continue
            try:
                pieces = inflater.feed(chunk) if inflater is not None else [chunk]
                for data in pieces:
                    if len(head_buf) < 4096:
                        head_buf += data[:4096]
                    text = carry + data
                    cut = text.rfind(b"\n") + 1
                    in_copy = scanner.scan(text[:cut], in_copy)
                    carry = text[cut:]
                    tail_buf = (tail_buf + data[-4096:])[-4096:]
            except zlib.error as exc:
                stream_ok, stream_error = False, str(exc)
    if stream_ok and inflater is not None and not inflater.eof:
        stream_ok, stream_error = False, "unexpected end of file"
    if carry:
        scanner.scan(carry, in_copy)
    dbs = scanner.databases
    head = head_buf.decode("utf-8", "replace").splitlines()[:3]
    tail = [ln for ln in tail_buf.decode("utf-8", "replace").splitlines() if ln.strip()][-3:]
    sha = digest.hexdigest()
    problems = _check(size, sha, recorded, stream_ok, stream_error, head, tail, fmt)
    return DumpInfo(str(path), "local", size, fmt, sha, recorded, tuple(dict.fromkeys(dbs)),
                    problems)


class _Sections:
    """Finds the database sections of a dump, skipping COPY data."""

    def __init__(self) -> None:
        self.databases: list[str] = []

    def scan(self, text: bytes, in_copy: bool) -> bool:
        """Scan whole lines of ``text``; returns whether it ends inside COPY data."""
        # Plain searches first: nearly every chunk of a large dump is COPY data with
        # none of these, and the anchored regex would cost more than decompressing.
        if in_copy and text.find(b"\\.\n") == -1:
            return True
        if not in_copy and text.find(b'-- Database "') == -1 and text.find(b"COPY ") == -1:
            return False
        for m in _SCAN.finditer(text):
            marker, copy, end = m.groups()
            if in_copy:
                in_copy = end is None
            elif copy is not None:
                in_copy = True
            elif marker is not None:
                self.databases.append(marker.decode("utf-8", "replace"))
        return in_copy


class _Inflater:
    """Decompresses a (possibly multi-member) gzip stream in pieces of bounded size.

    However well the dump compresses, no piece is larger than ``INFLATE_PIECE``: the
    memory of a check does not grow with the file or its compression ratio.
    """

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    @property
    def eof(self) -> bool:
        return self._z.eof

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data:
            out = self._z.decompress(data, INFLATE_PIECE)
            if out:
                yield out
            if self._z.eof:
                data = self._z.unused_data
                if data:  # the next gzip member
                    self._z = zlib.decompressobj(wbits=31)
            else:
                data = self._z.unconsumed_tail
        while not self._z.eof and (out := self._z.decompress(b"", INFLATE_PIECE)):
            yield out


def _recorded_sha(side: Path) -> str | None:
    if not side.is_file():
        return None
    first = side.read_text(errors="replace").split()[:1]
    return first[0] if first and SHA_RE.fullmatch(first[0]) else "unreadable"


def inspect_remote(remote: Remote, path: str) -> DumpInfo:
    """Check a dump that is already on the host, on the host."""
    res = remote.run_script("inspect-dump.sh", path)
    facts = _multi(res.stdout)
    if not res.ok:
        raise OpsError(f"cannot inspect {path} on {remote.name}: {res.last_error_line()}")
    if facts.get("exists") != ["1"]:
        raise OpsError(f"no such backup on {remote.name}: {path}", "see fab list-backups")
    one = {k: v[-1] for k, v in facts.items()}
    recorded = one.get("sha256_recorded") or None
    if recorded is not None and not SHA_RE.fullmatch(recorded):
        recorded = "unreadable"
    size = int(one.get("size", "0"))
    problems = _check(size, one.get("sha256", ""), recorded, one.get("stream") == "ok",
                      "decompression failed", facts.get("head", []), facts.get("tail", []),
                      one.get("format", "gz"))
    return DumpInfo(path, "remote", size, one.get("format", "gz"), one.get("sha256", ""),
                    recorded, tuple(dict.fromkeys(facts.get("db", []))), problems)


def _multi(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


# --- the plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    host: str
    container: str
    dump: DumpInfo
    database: str | None  # None: the whole cluster
    safety_backup: bool
    current_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def affected(self) -> tuple[str, ...]:
        """The databases this restore drops and recreates (template1 is replayed on top)."""
        if self.database:
            return (self.database,)
        return tuple(d for d in self.dump.databases if d != "template1")


def local_dump(file: str) -> Path | None:
    """``file`` as an existing local file, or None (not a path, or no such file).

    Never raises: a name too long for the file system or an unknown ``~user`` is
    simply not a local file.
    """
    try:
        local = Path(file).expanduser()
        return local if local.is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None


def resolve_source(remote: Remote, file: str) -> DumpInfo:
    """``file`` is a local path (.sql.gz or .sql), or the name of a backup on the host."""
    if not file:
        raise OpsError("--file is required", "give a local dump or a backup name, or latest")
    local = local_dump(file)
    if local is not None:
        return inspect_local(local)
    if NAME_RE.fullmatch(file):
        return inspect_remote(remote, f"{remote.host.backup_dir.rstrip('/')}/{file}")
    if "/" in file or file.endswith((".sql", ".sql.gz", ".gz")):
        raise OpsError(f"no such file: {shown(file)}", "give a local .sql.gz or .sql, or the "
                       "name of a backup on the host (see fab list-backups)")
    raise OpsError(f"not a local file nor a backup name: {shown(file)}", NAME_HINT)


def database_sizes(remote: Remote, container: str) -> dict[str, int]:
    sql = ("SELECT datname || '=' || pg_database_size(datname) FROM pg_database "
           "WHERE datallowconn ORDER BY 1")
    res = remote.run(["docker", "exec", container, "psql", "-X", "-A", "-t", "-U",
                      remote.host.postgres.superuser, "-d", "postgres", "-c", sql], what="psql")
    if not res.ok:
        return {}
    return {k: int(v) for k, v in parse_facts(res.stdout).items() if v.isdigit()}


def container_of(remote: Remote) -> str:
    """The running postgres container of the compose service (id and name)."""
    facts = parse_facts(remote.run_script("facts.sh", *facts_args(remote.host)).stdout)
    if facts.get("docker.ok") != "1":
        raise OpsError(f"docker is not reachable on {remote.name}: "
                       f"{facts.get('docker.error') or 'no answer'}",
                       "start the Docker daemon on the host, or see fab check")
    cid = facts.get("container.id", "")
    if not cid or facts.get("container.state") != "running":
        raise OpsError(f"the {remote.host.compose.postgres_service} container of compose "
                       f"project {remote.host.compose.project} is not running on {remote.name}",
                       "start it (docker compose up -d), or see fab check")
    if facts.get("postgres.ready") != "1":
        raise OpsError(f"postgres on {remote.name} does not accept connections: "
                       f"{facts.get('postgres.ready_detail', '')}", "see fab check")
    return facts.get("container.name") or cid


def make_plan(remote: Remote, dump: DumpInfo, database: str | None,
              safety_backup: bool) -> RestorePlan:
    """Refuse a bad dump or an unknown database before anything is touched."""
    if not dump.ok:
        raise OpsError(f"refusing to restore {dump.source}: {'; '.join(dump.problems)}",
                       "nothing was changed; pick another backup (fab list-backups)")
    if database is not None:
        if database == "template1":
            raise OpsError("template1 cannot be restored on its own",
                           "restore the whole cluster instead")
        if database not in dump.databases:
            raise OpsError(f"the dump holds no database {database!r}; it holds: "
                           f"{', '.join(dump.databases)}", "pick one of those with --database")
    container = container_of(remote)
    return RestorePlan(remote.name, container, dump, database, safety_backup,
                       database_sizes(remote, container))


# --- running it ----------------------------------------------------------------------


@dataclass(frozen=True)
class TableRows:
    database: str
    table: str
    rows: int


@dataclass(frozen=True)
class RestoreReport:
    databases: tuple[str, ...]
    tables: tuple[TableRows, ...]
    seconds: float
    bytes_streamed: int

    @property
    def rate(self) -> float:
        return self.bytes_streamed / self.seconds if self.seconds else 0.0


#: The exit status of restore-stream.sh when another restore holds the lock.
LOCK_BUSY = 75


def restore_lock(host: Host) -> str:
    """The lock file on the host that keeps two restores apart."""
    return f"{host.backup_dir.rstrip('/')}/.restore.lock"


def _stream_args(remote: Remote, plan: RestorePlan, source: str) -> list[str]:
    h = remote.host
    return [h.compose.project, h.compose.postgres_service, h.postgres.superuser,
            plan.dump.format, source, plan.database or "", restore_lock(h), str(h.lock_timeout)]


def execute(remote: Remote, plan: RestorePlan, progress: Progress | None = None,
            on_stderr: Callable[[str], None] | None = None) -> RestoreReport:
    """Replay the dump of ``plan`` into the postgres container; raise on any failure."""
    started = time.monotonic()
    try:
        if plan.dump.location == "local":
            cmd = shell.script_command("restore-stream.sh", _stream_args(remote, plan, "-"))
            with open(plan.dump.source, "rb") as fh:
                res = remote.stream_to_remote(fh, cmd, progress=progress, on_stderr=on_stderr,
                                              what="the restore stream")
        else:
            res = remote.run_script("restore-stream.sh",
                                    *_stream_args(remote, plan, plan.dump.source),
                                    on_stderr=on_stderr)
            if progress is not None:
                progress(plan.dump.size)
    except ConnectionLost as exc:
        # restore-stream.sh stops the restore when its session ends.
        raise ConnectionLost(f"restore on {remote.name} stopped part-way: {exc.message}",
                             failure_hint(plan) + "; run the same restore again",
                             code=exc.code) from None
    seconds = time.monotonic() - started
    if res.rc == LOCK_BUSY:
        raise OpsError(f"restore on {remote.name} refused: {explain_failure(res.stderr)}",
                       "nothing was restored; run it again once the other restore has ended",
                       code=75)
    if not res.ok:
        raise OpsError(f"restore on {remote.name} failed: {explain_failure(res.stderr)}",
                       failure_hint(plan))
    return RestoreReport(plan.affected, tuple(table_rows(remote, plan)), seconds,
                         plan.dump.size)


def failure_hint(plan: RestorePlan) -> str:
    """What a restore that stopped part-way leaves, and where the state before it is."""
    if plan.safety_backup:
        return ("the databases being restored may be partly restored; the state before the "
                "restore is in the pre-restore backup (fab list-backups)")
    return "the databases being restored may be partly restored"


def explain_failure(stderr: str) -> str:
    """One line from the restore pipeline's stderr: psql's error with the dump's line."""
    inserted = None
    for line in stderr.splitlines():
        if line.startswith("aimms-ops: inserted line "):
            inserted = int(line.rsplit(" ", 1)[1])
    for line in stderr.splitlines():
        m = _PSQL_ERR.match(line.strip())
        if m:
            n = int(m.group(1))
            if inserted is not None and n > inserted:
                n -= 1
            return f"psql stopped at line {n} of the dump: {m.group(2)}: {m.group(3)}"
    for line in stderr.splitlines():
        if line.startswith("aimms-ops: ") and not line.startswith(("aimms-ops: status",
                                                                   "aimms-ops: inserted")):
            return line[len("aimms-ops: "):]
    status = [ln for ln in stderr.splitlines() if ln.startswith("aimms-ops: status")]
    if status:
        stages = ("reading the dump", "decompressing", "filtering", "psql")
        codes = status[-1].split()[2:]
        failed = [f"{s} exited {c}" for s, c in zip(stages, codes, strict=False) if c != "0"]
        return ", ".join(failed) or status[-1]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def table_rows(remote: Remote, plan: RestorePlan) -> list[TableRows]:
    """Tables and row estimates of the restored databases (after ANALYZE)."""
    out: list[TableRows] = []
    sql = ("ANALYZE; SELECT schemaname || '.' || relname || '=' || n_live_tup "
           "FROM pg_stat_user_tables ORDER BY 1;")
    for db in plan.affected:
        res = remote.run(["docker", "exec", plan.container, "psql", "-X", "-q", "-A", "-t",
                          "-U", remote.host.postgres.superuser, "-d", db, "-c", sql],
                         what="psql")
        if not res.ok:
            continue
        for key, value in parse_facts(res.stdout).items():
            if value.isdigit():
                out.append(TableRows(db, key, int(value)))
    return out

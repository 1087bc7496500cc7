"""Restore a pg_dumpall dump, whole cluster or one database, exactly and verified first.

The dump is checked before the database is touched (recorded sha256, gzip stream,
and, read as psql reads it by the dump scanner: header, databases, roles, completion
marker). Then it is streamed with no temporary file anywhere: local file -> one SSH
channel -> decompress on the host -> the scanner's restore filter -> ``docker exec -i
CONTAINER psql`` with ON_ERROR_STOP. The filter makes the replay exact on a live
cluster: every database of the dump, template1 and postgres included, is dropped
(``WITH (FORCE)``) and recreated with its properties; the roles of the dump are set
exactly as it says (settings, memberships); see aimms_ops.dump.restore_filter.
Where the dump comes from, and what it holds: dumpsource.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aimms_ops.dumpsource import DumpInfo, conninfo, db_hex, db_name
from aimms_ops.errors import ConnectionLost, OpsError, shown
from aimms_ops.host import shell
from aimms_ops.host.compose import facts_args, parse_facts
from aimms_ops.host.remote import Progress, Remote
from aimms_ops.inventory.model import Host

#: psql's message for a failed statement; the lines after it until the next ``psql:``
#: line belong to it (a name may hold a newline).
_PSQL_ERR = re.compile(r"^psql:<stdin>:(\d+): (ERROR|FATAL|error):\s+(.*)$")
_INSERTED = re.compile(r"^aimms-ops: inserted (\d+) lines after line (\d+)$")


# --- the plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    host: str
    container: str
    dump: DumpInfo
    database: str | None  # None: the whole cluster
    safety_backup: bool
    current_sizes: dict[str, int] = field(default_factory=dict)
    #: Roles of the live cluster the dump does not hold: left as they are.
    other_roles: tuple[str, ...] = ()

    @property
    def affected(self) -> tuple[str, ...]:
        """The databases this restore drops and recreates (template1 and postgres too)."""
        if self.database:
            return (self.database,)
        return self.dump.databases

    @property
    def kept_databases(self) -> tuple[str, ...]:
        """Databases of the live cluster that the restore leaves as they are."""
        return tuple(d for d in self.current_sizes if d not in self.affected)


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
    """Refuse a bad dump or a database the dump does not hold before anything is touched."""
    if not dump.ok:
        raise OpsError(f"refusing to restore {dump.source}: {'; '.join(dump.problems)}",
                       "nothing was changed; pick another backup (fab list-backups)")
    if database is not None and database not in dump.databases:
        raise OpsError(f"the dump holds no database {shown(database)}; it holds: "
                       f"{', '.join(shown(d) for d in dump.databases)}",
                       "pick one of those with --database (matched exactly)")
    container = container_of(remote)
    sizes, roles = cluster_facts(remote, container)
    return RestorePlan(remote.name, container, dump, database, safety_backup, sizes,
                       tuple(r for r in roles if r not in dump.roles) if not database else ())


def cluster_facts(remote: Remote, container: str) -> tuple[dict[str, int], list[str]]:
    """The live cluster's databases with their sizes, and its roles (not pg_*)."""
    sql = ("SELECT 'db ' || pg_database_size(oid) || ' ' || encode(convert_to(datname, "
           "'UTF8'), 'hex') FROM pg_database WHERE datallowconn UNION ALL "
           "SELECT 'role 0 ' || encode(convert_to(rolname, 'UTF8'), 'hex') FROM pg_roles "
           "WHERE rolname !~ '^pg_' ORDER BY 1")
    # template1 is there even when postgres is not.
    res = remote.run(["docker", "exec", container, "psql", "-X", "-A", "-t", "-U",
                      remote.host.postgres.superuser, "-d", "template1", "-c", sql],
                     what="psql")
    sizes: dict[str, int] = {}
    roles: list[str] = []
    if not res.ok:
        raise OpsError(f"cannot read the databases of the cluster on {remote.name}: "
                       f"{res.last_error_line()}", "see fab check")
    for line in res.stdout.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            name = db_name(bytes.fromhex(parts[2]))
        except ValueError:
            continue
        if parts[0] == "db":
            sizes[name] = int(parts[1])
        else:
            roles.append(name)
    return sizes, roles


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


def cluster_lock(host: Host) -> str:
    """The host's cluster lock (lib.sh): a restore holds it exclusive."""
    return f"{host.backup_dir.rstrip('/')}/.cluster.lock"


def _stream_args(remote: Remote, plan: RestorePlan, source: str, lock: bool) -> list[str]:
    h = remote.host
    return [h.compose.project, h.compose.postgres_service, h.postgres.superuser,
            plan.dump.format, source, db_hex(plan.database) if plan.database else "",
            cluster_lock(h) if lock else "", str(h.lock_timeout)]


def execute(remote: Remote, plan: RestorePlan, progress: Progress | None = None,
            on_stderr: Callable[[str], None] | None = None, *,
            lock: bool = True) -> RestoreReport:
    """Replay the dump of ``plan`` into the postgres container; raise on any failure.

    ``lock=False`` when the caller already holds the host's cluster lock (rebuild).
    """
    started = time.monotonic()
    try:
        if plan.dump.location == "local":
            cmd = shell.script_command("restore-stream.sh",
                                       _stream_args(remote, plan, "-", lock))
            with open(plan.dump.source, "rb") as fh:
                res = remote.stream_to_remote(fh, cmd, progress=progress, on_stderr=on_stderr,
                                              what="the restore stream")
        else:
            res = remote.run_script("restore-stream.sh",
                                    *_stream_args(remote, plan, plan.dump.source, lock),
                                    on_stderr=on_stderr)
            if progress is not None:
                progress(plan.dump.size)
    except ConnectionLost as exc:
        # restore-stream.sh stops the restore when its session ends.
        raise ConnectionLost(f"restore on {remote.name} stopped part-way: {exc.message}",
                             f"{failure_hint(plan)}; run it again: {rerun_command(plan)}",
                             code=exc.code) from None
    seconds = time.monotonic() - started
    if res.rc == LOCK_BUSY:
        raise OpsError(f"restore on {remote.name} refused: {explain_failure(res.stderr)}",
                       "nothing was restored; run it again once that run has ended",
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
                "restore is in the pre-restore safety copy (fab list-backups)")
    return "the databases being restored may be partly restored"


def rerun_command(plan: RestorePlan) -> str:
    """The exact command that restores the same dump again (never ``latest``)."""
    src = plan.dump.source
    name = src.rsplit("/", 1)[-1] if plan.dump.location == "remote" else src
    args = ["fab", "restore", f"--file={name}"]
    if plan.database is not None:
        args.append(f"--database={plan.database}")
    return shell.join([*args, "--no-safety-backup"])


def explain_failure(stderr: str) -> str:
    """One line from the restore pipeline's stderr: psql's whole error with the dump's line.

    psql's message may span lines (a name with a newline): they are joined, the newlines
    shown as ``\\n``. Its line number counts the filter's inserted blocks, which are
    taken off again; an error inside one is said to be in what aimms-ops inserted.
    """
    lines = stderr.splitlines()
    inserted = [(int(m.group(2)), int(m.group(1))) for m in map(_INSERTED.match, lines) if m]
    for i, line in enumerate(lines):
        m = _PSQL_ERR.match(line.strip())
        if not m:
            continue
        text = m.group(3)
        for more in lines[i + 1:]:
            if more.startswith(("psql:", "aimms-ops: ")):
                break
            text += "\\n" + more
        n = int(m.group(1))
        shift, inside = 0, None
        for after, count in inserted:
            if n > after + count:
                shift += count
            elif n > after:
                inside = after - shift
        if inside is not None:
            return (f"psql stopped in what aimms-ops inserted after line {inside} of the "
                    f"dump: {m.group(2)}: {text}")
        return f"psql stopped at line {n - shift} of the dump: {m.group(2)}: {text}"
    for line in lines:
        if line.startswith("aimms-ops: ") and not line.startswith(
                ("aimms-ops: status", "aimms-ops: inserted", "aimms-ops: properties")):
            return line[len("aimms-ops: "):]
    for line in lines:
        # psql that could not even start (no such database, no server): its own words.
        if line.startswith(("psql: error: ", "Error response from daemon: ")):
            return line
    status = [ln for ln in lines if ln.startswith("aimms-ops: status")]
    if status:
        stages = ("reading the dump", "decompressing", "filtering", "psql")
        codes = status[-1].split()[2:]
        failed = [f"{s} exited {c}" for s, c in zip(stages, codes, strict=False) if c != "0"]
        return ", ".join(failed) or status[-1]
    rest = [ln for ln in lines if ln.strip()]
    return rest[-1] if rest else "no message"


def table_rows(remote: Remote, plan: RestorePlan) -> list[TableRows]:
    """Tables and row estimates of the restored databases (after ANALYZE)."""
    out: list[TableRows] = []
    sql = ("ANALYZE; SELECT schemaname || '.' || relname || '=' || n_live_tup "
           "FROM pg_stat_user_tables ORDER BY 1;")
    for db in plan.affected:
        res = remote.run(["docker", "exec", plan.container, "psql", "-X", "-q", "-A", "-t",
                          "-U", remote.host.postgres.superuser, "-d", conninfo(db), "-c", sql],
                         what="psql")
        if not res.ok:
            continue
        for key, value in parse_facts(res.stdout).items():
            if value.isdigit():
                out.append(TableRows(db, key, int(value)))
    return out

"""The plan of a restore: what the dump holds, what the live cluster holds, and the
exact commands the restore sends (the stream, then the row estimates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aimms_ops.core import printf as core_printf
from aimms_ops.core import units
from aimms_ops.core.errors import OpsError, shown
from aimms_ops.host.commands import Command, in_postgres, script
from aimms_ops.inventory.connected import HostRemote, facts_args, start_command
from aimms_ops.inventory.model import Host
from aimms_ops.restore.source import DumpInfo, conninfo, db_hex, db_name

#: The rows of each table of a restored database: the inserts PostgreSQL's statistics
#: counted while the restore loaded it (what ANALYZE would estimate, but exact).
ESTIMATE_SQL = ("SELECT json_build_object('table', schemaname || '.' || relname, "
                "'rows', n_live_tup) FROM pg_stat_user_tables ORDER BY schemaname, relname;")


@dataclass(frozen=True)
class Session:
    """A session on a database the restore replaces: ended at the swap."""

    database: str
    application: str
    client: str
    user: str


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
    #: What the restore sends, in order: the stream, then the row estimates.
    commands: tuple[Command, ...] = ()
    #: --as: the database is restored under this new name, the live one untouched.
    as_name: str | None = None
    #: Sessions on the databases it replaces: ended at the swap.
    sessions: tuple[Session, ...] = ()
    #: Bytes free where the cluster keeps its data (None: not known).
    free: int | None = None

    @property
    def affected(self) -> tuple[str, ...]:
        """The databases this restore rebuilds and swaps in (template1 and postgres too)."""
        if self.as_name:
            return (self.as_name,)
        if self.database:
            return (self.database,)
        return self.dump.databases

    @property
    def replaced(self) -> tuple[str, ...]:
        """The live databases the swap replaces (kept aside)."""
        return tuple(d for d in self.affected if d in self.current_sizes)

    @property
    def needed(self) -> int:
        """Bytes the rebuilt copies take beside the live ones, about: as much as the
        databases they replace, a tenth more, and 64 MiB."""
        return int(sum(self.current_sizes[d] for d in self.replaced) * 1.1) + 64 * 1024 ** 2

    @property
    def kept_databases(self) -> tuple[str, ...]:
        """Databases of the live cluster that the restore leaves as they are."""
        return tuple(d for d in self.current_sizes if d not in self.affected)


def cluster_lock(host: Host) -> str:
    """The host's cluster lock (lib.sh): a restore holds it exclusive."""
    return host.layout.cluster_lock


def stream_command(host: Host, dump: DumpInfo, database: str | None, *,
                   lock: bool, as_name: str | None = None) -> Command:
    """restore-stream.sh for ``dump``: a local file is streamed to its stdin.

    ``lock=False`` when the caller holds the host's cluster lock already (rebuild: the
    cluster is new and empty, so what the swap replaces is dropped, not kept aside).
    """
    local = dump.location == "local"
    # A dump on the host: its progress is counted in decompressed bytes, against these.
    raw = ["--raw-size", str(dump.raw_size)] if not local and dump.raw_size else []
    # The dump's own properties of template1 and postgres: the live ones need not be read.
    if {"template1", "postgres"} <= set(dump.properties):
        raw.append("--props-in-dump")
    args = [*raw, host.compose.project, host.compose.postgres_service, host.postgres.superuser,
            dump.format, "-" if local else dump.source, db_hex(database) if database else "",
            cluster_lock(host) if lock else "", str(host.lock_timeout),
            "keep" if lock else "drop", db_hex(as_name) if as_name else ""]
    return script("restore-stream.sh", args, stdin_file=dump.source if local else "",
                  reads="restore")


#: Runs ESTIMATE_SQL in each database given ($1 the SQL, $2 the role, then conninfos as
#: printf formats), in one ``docker exec``: ``{"database": I}`` before the lines of the I-th.
_ESTIMATE_EACH = ('sql=$1 u=$2; shift 2; i=0; for f; do c=$(printf "$f"); '
                  'echo "{\\"database\\":$i}"; '
                  'psql -X -q -A -t -U "$u" -d "$c" -c "$sql"; i=$((i + 1)); done')


#: ANALYZE of each database (printf formats), one after the other, left running in the
#: container: the planner's statistics come within seconds, and the restore is not held.
_ANALYZE_EACH = ('u=$1; shift; for f; do c=$(printf "$f"); '
                 'psql -X -q -U "$u" -d "$c" -c ANALYZE; done')


def printf_format(text: str) -> str:
    """``text`` (its bytes: surrogateescape) as a printf format that prints it, in ASCII
    (``core.printf``)."""
    return core_printf.printf_format(text.encode("utf-8", "surrogateescape"))


def estimate_commands(host: Host, databases: tuple[str, ...]) -> tuple[Command, ...]:
    """The tables and rows of each database (one command), then ANALYZE of each, left
    running in the container (``docker exec -d``)."""
    names = [printf_format(conninfo(db)) for db in databases]
    return (in_postgres(host.compose.project, host.compose.postgres_service,
                        ["sh", "-c", _ESTIMATE_EACH, "sh", ESTIMATE_SQL,
                         host.postgres.superuser, *names],
                        reads="estimates", about=", ".join(databases)),
            in_postgres(host.compose.project, host.compose.postgres_service,
                        ["sh", "-c", _ANALYZE_EACH, "sh", host.postgres.superuser, *names],
                        reads="analyze", about=", ".join(databases), detach=True))


def restore_commands(host: Host, dump: DumpInfo, database: str | None, *,
                     lock: bool, as_name: str | None = None) -> tuple[Command, ...]:
    """Everything a restore sends, in order."""
    affected = (as_name,) if as_name else (database,) if database else dump.databases
    return (stream_command(host, dump, database, lock=lock, as_name=as_name),
            *estimate_commands(host, affected))


def container_of(remote: HostRemote) -> str:
    """The running postgres container of the compose service (id and name)."""
    facts = remote.program_facts("facts", *facts_args(remote.host, config=False))
    if facts.get("docker.ok") != "1":
        raise OpsError(f"docker is not reachable on {remote.name}: "
                       f"{facts.get('docker.error') or 'no answer'}",
                       "start the Docker daemon on the host, or see fab check")
    cid = facts.get("container.id", "")
    if not cid or facts.get("container.state") != "running":
        raise OpsError(f"the {remote.host.compose.postgres_service} container of compose "
                       f"project {remote.host.compose.project} is not running on {remote.name}",
                       f"start it: {start_command(facts, remote.host)}; or see fab check")
    if facts.get("postgres.ready") != "1":
        raise OpsError(f"postgres on {remote.name} does not accept connections: "
                       f"{facts.get('postgres.ready_detail', '')}", "see fab check")
    return facts.get("container.name") or cid


@dataclass(frozen=True)
class LiveCluster:
    """What the restore plan needs of the live cluster: none of it depends on the dump."""

    container: str
    sizes: dict[str, int]  # database -> bytes
    roles: tuple[str, ...]  # not pg_*
    sessions: tuple[Session, ...] = ()
    free: int | None = None


def live_cluster(remote: HostRemote) -> LiveCluster:
    """The running container, its databases with their sizes, and its roles."""
    container = container_of(remote)
    return cluster_facts(remote, container)


def make_plan(remote: HostRemote, dump: DumpInfo, database: str | None,
              safety_backup: bool,
              live: Callable[[], LiveCluster] | None = None,
              as_name: str | None = None) -> RestorePlan:
    """Refuse a bad dump or a database the dump does not hold before anything is touched.

    ``live`` gives the live cluster when the caller started reading it already (beside
    the check of the dump); else it is read now. Either way, the dump's own problems
    are reported first.
    """
    if not dump.ok:
        raise OpsError(f"refusing to restore {dump.source}: {'; '.join(dump.problems)}",
                       "nothing was changed; pick another backup (fab list-backups)")
    if database is not None and database not in dump.databases:
        raise OpsError(f"the dump holds no database {shown(database)}; it holds: "
                       f"{', '.join(shown(d) for d in dump.databases)}",
                       "pick one of those with --database (matched exactly)")
    if as_name is not None:
        check_as_name(as_name, database)
    cluster = live() if live is not None else live_cluster(remote)
    if as_name is not None and as_name in cluster.sizes:
        raise OpsError(f"database {shown(as_name)} exists already on {remote.name}",
                       "--as restores beside production under a new name: pick a name "
                       "the cluster does not have")
    affected = (as_name,) if as_name else (database,) if database else dump.databases
    plan = RestorePlan(
        remote.name, cluster.container, dump, database, safety_backup, cluster.sizes,
        tuple(r for r in cluster.roles if r not in dump.roles) if not database else (),
        restore_commands(remote.host, dump, database, lock=True, as_name=as_name),
        as_name, tuple(s for s in cluster.sessions if s.database in affected), cluster.free)
    if plan.free is not None and plan.free < plan.needed:
        raise OpsError(
            f"not enough disk on {remote.name} to rebuild beside the live databases: "
            f"{units.size(plan.free)} free, about {units.size(plan.needed)} needed",
            "nothing was changed; free space on the host (fab drop-replaced removes "
            "databases earlier restores set aside), or restore one database with --database")
    return plan


def check_as_name(as_name: str, database: str | None) -> None:
    """--as: with --database, a name PostgreSQL takes, not one of aimms-ops' own."""
    if database is None:
        raise OpsError("--as needs --database", "e.g. fab restore --file=latest "
                       "--database=aimms_web --as=aimms_web_restored")
    raw = as_name.encode()
    if not raw or len(raw) > 63 or "\x00" in as_name:
        raise OpsError(f"--as={shown(as_name)}: a database name is 1 to 63 bytes",
                       "pick a shorter name")
    if as_name.startswith(("aimms_ops_new_", "aimms_ops_old_")):
        raise OpsError(f"--as={shown(as_name)}: names starting aimms_ops_new_ or "
                       "aimms_ops_old_ are the restore's own", "pick another name")


#: The live cluster in one docker exec: databases with sizes (not the restore's own),
#: roles, the sessions of other clients, and the free space where the data lives.
_FACTS_SQL = (
    "SELECT 'db', pg_database_size(oid)::text, encode(textsend(datname), 'hex') "
    "FROM pg_database WHERE datname <> 'template0' AND datname !~ '^aimms_ops_(new|old)_' "
    "UNION ALL SELECT 'role', '0', encode(textsend(rolname), 'hex') FROM pg_roles "
    "WHERE rolname !~ '^pg_' UNION ALL "
    "SELECT 'session', encode(textsend(coalesce(application_name, '')), 'hex'), "
    "encode(textsend(datname), 'hex') || ' ' || "
    "encode(textsend(coalesce(host(client_addr), 'local')), 'hex') || ' ' || "
    "encode(textsend(coalesce(usename, '')), 'hex') FROM pg_stat_activity "
    "WHERE datname IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    " ORDER BY 1, 3")
_FACTS_SH = ('psql -X -A -t -F " " -U "$1" -d template1 -c "$2" || exit 1; '
             'echo "free $(df -Pk "${PGDATA:-/var/lib/postgresql/data}" 2>/dev/null '
             '| awk \'NR == 2 {print $4}\')"')


def cluster_facts(remote: HostRemote, container: str) -> LiveCluster:
    """The live cluster's databases with their sizes, its roles (not pg_*), the sessions
    on its databases and the bytes free where it keeps its data."""
    # template1 is there even when postgres is not.
    res = remote.run(["docker", "exec", container, "sh", "-c", _FACTS_SH, "sh",
                      remote.host.postgres.superuser, _FACTS_SQL], what="psql")
    if not res.ok:
        raise OpsError(f"cannot read the databases of the cluster on {remote.name}: "
                       f"{res.last_error_line()}", "see fab check")
    return parse_cluster_facts(container, res.stdout)


def _name(hexed: str) -> str | None:
    try:
        return db_name(bytes.fromhex(hexed))
    except ValueError:
        return None


def parse_cluster_facts(container: str, stdout: str) -> LiveCluster:
    sizes: dict[str, int] = {}
    roles: list[str] = []
    sessions: list[Session] = []
    free: int | None = None
    for line in stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "free" and len(parts) == 2 and parts[1].isdigit():
            free = int(parts[1]) * 1024  # df -P: 1024-byte blocks
        elif parts[0] == "db" and len(parts) == 3 and parts[1].isdigit():
            name = _name(parts[2])
            if name is not None:
                sizes[name] = int(parts[1])
        elif parts[0] == "role" and len(parts) == 3:
            name = _name(parts[2])
            if name is not None:
                roles.append(name)
        elif parts[0] == "session" and len(parts) == 5:
            app, db, client, user = (_name(p) for p in parts[1:])
            if db is not None:
                sessions.append(Session(db, app or "", client or "", user or ""))
    return LiveCluster(container, sizes, tuple(roles), tuple(sessions), free)

"""The plan of a restore: what the dump holds, what the live cluster holds, and the
exact commands the restore sends (the stream, then the row estimates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aimms_ops.errors import OpsError, shown
from aimms_ops.host.commands import Command, in_postgres, script
from aimms_ops.host.compose import facts_args, parse_facts
from aimms_ops.host.remote import Remote
from aimms_ops.inventory.model import Host
from aimms_ops.restore.source import DumpInfo, conninfo, db_hex, db_name

#: Row estimates of a restored database, after ANALYZE.
ESTIMATE_SQL = ("ANALYZE; SELECT schemaname || '.' || relname || '=' || n_live_tup "
                "FROM pg_stat_user_tables ORDER BY 1;")


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


def cluster_lock(host: Host) -> str:
    """The host's cluster lock (lib.sh): a restore holds it exclusive."""
    return host.layout.cluster_lock


def stream_command(host: Host, dump: DumpInfo, database: str | None, *,
                   lock: bool) -> Command:
    """restore-stream.sh for ``dump``: a local file is streamed to its stdin.

    ``lock=False`` when the caller holds the host's cluster lock already (rebuild).
    """
    local = dump.location == "local"
    args = [host.compose.project, host.compose.postgres_service, host.postgres.superuser,
            dump.format, "-" if local else dump.source, db_hex(database) if database else "",
            cluster_lock(host) if lock else "", str(host.lock_timeout)]
    return script("restore-stream.sh", args, stdin_file=dump.source if local else "",
                  reads="restore")


#: Runs ESTIMATE_SQL in each database given ($1 the SQL, $2 the role, then conninfos),
#: in one ``docker exec``: ``database=I`` before the lines of the I-th database.
_ESTIMATE_EACH = ('sql=$1 u=$2; shift 2; i=0; for c; do echo "database=$i"; '
                  'psql -X -q -A -t -U "$u" -d "$c" -c "$sql"; i=$((i + 1)); done')


def estimate_commands(host: Host, databases: tuple[str, ...]) -> tuple[Command, ...]:
    """ANALYZE, then the tables and row estimates, of each database: one command."""
    return (in_postgres(host.compose.project, host.compose.postgres_service,
                        ["sh", "-c", _ESTIMATE_EACH, "sh", ESTIMATE_SQL,
                         host.postgres.superuser, *(conninfo(db) for db in databases)],
                        reads="estimates", about=", ".join(databases)),)


def restore_commands(host: Host, dump: DumpInfo, database: str | None, *,
                     lock: bool) -> tuple[Command, ...]:
    """Everything a restore sends, in order."""
    affected = (database,) if database else dump.databases
    return (stream_command(host, dump, database, lock=lock),
            *estimate_commands(host, affected))


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


@dataclass(frozen=True)
class LiveCluster:
    """What the restore plan needs of the live cluster: none of it depends on the dump."""

    container: str
    sizes: dict[str, int]  # database -> bytes
    roles: tuple[str, ...]  # not pg_*


def live_cluster(remote: Remote) -> LiveCluster:
    """The running container, its databases with their sizes, and its roles."""
    container = container_of(remote)
    sizes, roles = cluster_facts(remote, container)
    return LiveCluster(container, sizes, tuple(roles))


def make_plan(remote: Remote, dump: DumpInfo, database: str | None,
              safety_backup: bool,
              live: Callable[[], LiveCluster] | None = None) -> RestorePlan:
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
    cluster = live() if live is not None else live_cluster(remote)
    return RestorePlan(remote.name, cluster.container, dump, database, safety_backup,
                       cluster.sizes, tuple(r for r in cluster.roles if r not in dump.roles)
                       if not database else (),
                       restore_commands(remote.host, dump, database, lock=True))


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

"""The exact commands of every step of rebuild-volume, built from argument lists (pure).

Each :class:`~aimms_ops.commands.Command` is the line the run sends; ``reads`` says
how the executor reads its output. The postgres container is recreated by the run, so
the commands that use it find it on the host when they run (postgres-exec.sh,
the host program's wait-postgres, restore-stream.sh): no command is completed at run time.
"""

from __future__ import annotations

from aimms_ops.core.errors import InternalError
from aimms_ops.core.layout import KEPT_LABEL, VOLUME_COPY_SH
from aimms_ops.host.commands import Command, in_dir, in_postgres, plain, program
from aimms_ops.inventory.model import Host
from aimms_ops.rebuild.facts import RebuildFacts, VolumeSpec
from aimms_ops.restore import restore_commands
from aimms_ops.restore.source import DumpInfo, conninfo

#: How long the new cluster may take to accept connections after the start.
WAIT_TIMEOUT = 180

COPY_SH = VOLUME_COPY_SH
# Count the regular files and their bytes on both sides of the copy. OFMT: mawk (the
# postgres image's awk) prints a sum above 2^31 as 3e+09 otherwise.
COUNT_SH = ('for d in /from /to; do find "$d" -type f -exec stat -c %s {} + | '
            'awk -v d="$d" -v OFMT=%.0f "{ n++; s += \\$1 } END { print d, n + 0, s + 0 }"; '
            'done')
#: ``{"table": "schema.table", "rows": N}`` for every table of a database, N its exact
#: row count.
COUNT_SQL = ("SELECT json_build_object('table', n.nspname || '.' || c.relname, 'rows', "
             "(xpath('/row/n/text()', "
             "query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), "
             "false, true, '')))[1]::text::bigint) "
             "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' "
             "AND n.nspname !~ '^pg_' ORDER BY n.nspname || '.' || c.relname")
LIST_SQL = "SELECT datname FROM pg_database ORDER BY 1"

# Sessions of another restore (psql as the superuser): an interrupted run's restore of
# a backup on the host goes on after the connection dropped.
BUSY_SQL = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND usename = current_user AND application_name = 'psql' "
            "AND pid <> pg_backend_pid()")


def compose(host: Host, compose_cmd: tuple[str, ...], *args: str) -> Command:
    """A compose command in the project's directory."""
    return in_dir(host.compose.project_dir,
                  [*compose_cmd, "-f", host.compose.file_path, "-p", host.compose.project,
                   *args])


def step_commands(host: Host, facts: RebuildFacts, dump: DumpInfo, *, keep: str | None,
                  run_id: str, spec: VolumeSpec | None) -> dict[str, tuple[Command, ...]]:
    """The commands of every step, exactly as they are sent (pure)."""
    vol = host.volumes.postgres
    image = facts.image
    su = host.postgres.superuser
    project, service = host.compose.project, host.compose.postgres_service
    if keep in (vol, host.volumes.redis):
        raise InternalError(f"refusing the plan: the copy of the old data would go into "
                            f"{keep}; nothing was changed")

    # Named after the run: a copy still running after an interrupted run makes the
    # next attempt fail on the name instead of copying at the same time.
    def throwaway(what: str) -> list[str]:
        return ["docker", "run", "--rm", "--name", f"aimms-ops-{what}-{run_id}", "--network",
                "none", "--user", "0:0", "--entrypoint", "sh"]

    def psql(*args: str, reads: str, about: str = "") -> Command:
        return in_postgres(project, service, ["psql", "-X", "-A", "-t", *args],
                           reads=reads, about=about)

    labels: list[str] = []
    for k, v in sorted((spec.labels if spec else {}).items()):
        labels += ["--label", f"{k}={v}"]
    keep_cmds: tuple[Command, ...] = ()
    if keep:
        keep_cmds = (
            plain(["docker", "volume", "create", "--label", f"{KEPT_LABEL}={vol}",
                   "--label", f"org.aimms-ops.rebuild-run={run_id}", keep]),
            plain([*throwaway("copy"), "-v", f"{vol}:/from:ro", "-v", f"{keep}:/to", image,
                   "-c", COPY_SH]),
            plain([*throwaway("check"), "-v", f"{vol}:/from:ro", "-v", f"{keep}:/to:ro",
                   image, "-c", COUNT_SH], reads="copy"),
        )
    return {
        "stop": (compose(host, facts.compose_cmd, "down"),),
        "keep": keep_cmds,
        "rm": (plain(["docker", "volume", "rm", vol], reads="volume-rm"),),
        "create": (plain(["docker", "volume", "create", *labels, vol]),),
        "start": (compose(host, facts.compose_cmd, "up", "-d"),),
        "wait": (program(["wait-postgres", project, service, su, str(WAIT_TIMEOUT)],
                         reads="wait"),),
        # This run holds the cluster lock already (run.locked): the stream takes none.
        "restore": (psql("-U", su, "-d", "postgres", "-c", BUSY_SQL, reads="idle"),
                    *restore_commands(host, dump, None, lock=False)),
        "verify": (psql("-U", su, "-d", "postgres", "-c", LIST_SQL, reads="databases"),
                   *(psql("-q", "-v", "ON_ERROR_STOP=1", "-U", su, "-d", conninfo(db),
                          "-c", COUNT_SQL, reads="counts", about=db)
                     for db in dump.databases)),
    }


def get_back_commands(host: Host, compose_cmd: tuple[str, ...], image: str,
                      keep: str) -> tuple[str, ...]:
    """How to look at, restore, and finally delete the kept old data (shell lines)."""
    vol = host.volumes.postgres
    return (
        "# look at the old data (read-only):",
        plain(["docker", "run", "--rm", "-it", "--network", "none", "--user", "0:0",
               "--entrypoint", "sh", "-v", f"{keep}:/old:ro", image]).line,
        "# put it back in place of the rebuilt database (which is then lost: "
        "fab backup first):",
        compose(host, compose_cmd, "down").line,
        plain(["docker", "volume", "rm", vol]).line,
        plain(["docker", "volume", "create", vol]).line,
        plain(["docker", "run", "--rm", "--network", "none", "--user", "0:0",
               "--entrypoint", "cp", "-v", f"{keep}:/from:ro", "-v", f"{vol}:/to", image,
               "-a", "/from/.", "/to/"]).line,
        compose(host, compose_cmd, "up", "-d").line,
        "# delete it once it is no longer needed:",
        plain(["docker", "volume", "rm", keep]).line,
    )

"""Restore a pg_dumpall dump, whole cluster or one database, exactly and verified first.

The dump is checked before the database is touched (recorded sha256, gzip stream,
and, read as psql reads it by the dump scanner: header, databases, roles, completion
marker). Then it is streamed with no temporary file anywhere: local file -> one SSH
channel -> decompress on the host -> the scanner's restore filter -> ``docker exec -i
CONTAINER psql`` with ON_ERROR_STOP. The filter makes the replay exact on a live
cluster: every database of the dump, template1 and postgres included, is dropped
(``WITH (FORCE)``) and recreated with its properties; the roles of the dump are set
exactly as it says (settings, memberships); see aimms_ops.dump.restore_filter.
Where the dump comes from, and what it holds: source.py. The plan (plan.py) holds
the exact commands the restore sends; execute.py sends those and reads their output.
"""

from aimms_ops.restore.execute import (
    LOCK_BUSY,
    RestoreReport,
    TableRows,
    execute,
    explain_failure,
    failure_hint,
    parse_estimates,
    read_estimates,
    rerun_command,
    run_stream,
)
from aimms_ops.restore.plan import (
    LiveCluster,
    RestorePlan,
    cluster_facts,
    cluster_lock,
    container_of,
    estimate_commands,
    live_cluster,
    make_plan,
    restore_commands,
    stream_command,
)

__all__ = [
    "LOCK_BUSY", "LiveCluster", "RestorePlan", "RestoreReport", "TableRows", "cluster_facts",
    "cluster_lock", "container_of", "estimate_commands", "execute", "explain_failure",
    "failure_hint", "live_cluster", "make_plan", "parse_estimates", "read_estimates",
    "rerun_command", "restore_commands", "run_stream", "stream_command",
]

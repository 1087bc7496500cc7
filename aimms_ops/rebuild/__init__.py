"""The emergency rebuild of the postgres volume, as one safe and resumable run.

The hand procedure (compose down, ``docker volume rm``, create, up, ``sleep 10``,
restore) becomes a :class:`RebuildPlan`: preflight facts are gathered (facts), then a
pure builder (plan, preflight, commands) either refuses (before anything is stopped)
or returns named steps, each with the exact commands it sends. The plan is printed
(``--dry-run`` stops there), confirmed, then executed step by step (run), each step
recorded on the host in a state file (state), so a run cut short is continued by the
next one from where it stopped and never deletes the volume a second time. The old
volume's data is copied into a new volume first; the Redis volume is never named by
any step.
"""

from aimms_ops.host.commands import Command
from aimms_ops.rebuild.commands import (
    BUSY_SQL,
    COPY_SH,
    COUNT_SH,
    COUNT_SQL,
    WAIT_TIMEOUT,
    get_back_commands,
    step_commands,
)
from aimms_ops.rebuild.facts import (
    RebuildFacts,
    VolumeSpec,
    VolumeUser,
    add_volume_facts,
    config_services,
    parse_stack_facts,
    service_image,
)
from aimms_ops.rebuild.plan import (
    STEP_TITLES,
    RebuildPlan,
    Step,
    build_plan,
    gather,
    prepare,
    refuse_redis,
)
from aimms_ops.rebuild.preflight import DISK_MARGIN_KB
from aimms_ops.rebuild.run import (
    RebuildReport,
    StepResult,
    TableCount,
    error_line,
    execute,
    locked,
    parse_counts,
)
from aimms_ops.rebuild.state import (
    AUDIT_FILE,
    DONE_SUFFIX,
    STATE_FILE,
    STEPS,
    RunState,
    audit_line,
    backup_name,
    header_lines,
    keep_name,
    new_run_id,
    operator,
    parse_state,
    read_state,
    recorded_backup_name,
)

__all__ = [
    "AUDIT_FILE", "BUSY_SQL", "COPY_SH", "COUNT_SH", "COUNT_SQL", "DISK_MARGIN_KB",
    "DONE_SUFFIX", "STATE_FILE", "STEPS", "STEP_TITLES", "WAIT_TIMEOUT", "Command",
    "RebuildFacts", "RebuildPlan", "RebuildReport", "RunState", "Step", "StepResult",
    "TableCount", "VolumeSpec", "VolumeUser", "add_volume_facts", "audit_line",
    "backup_name", "build_plan", "config_services", "error_line", "execute", "gather",
    "get_back_commands", "header_lines", "keep_name", "locked", "new_run_id", "operator",
    "parse_counts", "parse_stack_facts", "parse_state", "prepare",
    "read_state", "recorded_backup_name", "refuse_redis", "service_image", "step_commands",
]

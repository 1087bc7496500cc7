"""An unfinished ``fab rebuild-volume`` in ``fab status``: CRITICAL, with the command that
finishes it (the rebuild's state file, :mod:`aimms_ops.rebuild.state`, is on the host until
the run ends)."""

from __future__ import annotations

from aimms_ops.core.checks import Check, State
from aimms_ops.host import shell
from aimms_ops.inventory.model import Host
from aimms_ops.rebuild.state import RunState, backup_name, parse_state

NAME = "rebuild"


def finish_command(state: RunState, host: Host) -> str:
    """The command that continues the unfinished run where it stopped: the same backup."""
    name = backup_name(state.backup, host)
    return shell.join(["fab", "rebuild-volume", f"--file={name or state.backup}"])


def check_rebuild(state_text: str, host: Host) -> Check | None:
    """CRITICAL when the host records an unfinished rebuild of its postgres volume; None
    when there is none (pure)."""
    state = parse_state(state_text)
    if state is None:
        return None
    volume = state.volume or host.volumes.postgres
    gone = (f"the old volume is deleted{f', its data kept in {state.keep}' if state.keep else ''}"
            if state.volume_deleted else f"the volume {volume} was not deleted yet")
    return Check(NAME, State.CRITICAL,
                 f"rebuild of {volume} unfinished: {state.describe()}; {gone}",
                 f"unless it is running now, finish it: {finish_command(state, host)} "
                 "(it continues where it stopped)")


def point_to_rebuild(checks: list[Check], rebuild: Check) -> list[Check]:
    """The stack's failing rows while a rebuild is unfinished: their fix is to finish it
    (starting the container or creating the volume by hand would get in its way)."""
    fix = rebuild.fix.replace("unless it is running now, finish it", "finish the rebuild")
    return [Check(c.name, c.state, c.detail, fix)
            if not c.ok and c.name.startswith(("postgres container", "volume ", "postgres "))
            else c for c in checks]

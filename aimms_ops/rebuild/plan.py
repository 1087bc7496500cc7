"""rebuild-volume's plan: the steps in order, each with the exact commands it sends.

:func:`build_plan` is pure: from the facts of the host it refuses (nothing has been
stopped) or returns the steps, each to run, done by an interrupted run, or skipped.
What ``--dry-run`` prints and ``--dry-run --json`` emits is this plan; the run
(run.py) sends exactly its commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from aimms_ops.core.errors import InternalError
from aimms_ops.host.commands import Command
from aimms_ops.inventory.connected import HostRemote, facts_args
from aimms_ops.inventory.model import Host
from aimms_ops.rebuild.commands import get_back_commands, step_commands
from aimms_ops.rebuild.facts import (
    RebuildFacts,
    VolumeSpec,
    add_volume_facts,
    parse_stack_facts,
    service_image,
)
from aimms_ops.rebuild.preflight import (
    check_backup,
    check_stack,
    check_volume,
    recorded_run,
    refuse,
)
from aimms_ops.rebuild.state import AUDIT_FILE, STATE_FILE, STEPS, RunState, keep_name, new_run_id
from aimms_ops.restore.source import DumpInfo

STEP_TITLES = {
    "stop": "stop the stack (compose down, volumes kept)",
    "keep": "copy the old volume's data into a new volume",
    "rm": "delete the postgres volume",
    "create": "create the postgres volume again (empty)",
    "start": "start the stack (a new cluster is initialised)",
    "wait": "wait until postgres really accepts connections",
    "restore": "restore the backup, whole cluster",
    "verify": "check the databases of the dump and count the rows",
}
#: The steps whose failure leaves the old volume in place: the stack is started again.
KEEPS_OLD_VOLUME = ("stop", "keep", "rm")


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    commands: tuple[Command, ...]
    action: str  # "run", "done" (by an earlier run) or "skip"
    note: str = ""
    #: A failure of this step leaves the old volume in place.
    keeps_old_volume: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"step": self.name, "title": self.title, "action": self.action,
                "note": self.note, "commands": [c.as_dict() for c in self.commands]}


@dataclass(frozen=True)
class RebuildPlan:
    host: str
    run_id: str
    volume: str
    redis_volume: str
    keep: str | None
    image: str
    services: tuple[str, ...]
    dump: DumpInfo
    steps: tuple[Step, ...]
    checks: tuple[tuple[str, str], ...]
    state_file: str
    audit_file: str
    volume_spec: VolumeSpec | None
    resumed: RunState | None = None
    set_aside: RunState | None = None
    state_present: bool = False
    get_back: tuple[str, ...] = ()

    @property
    def to_run(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action == "run")

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host, "run": self.run_id, "volume": self.volume, "keep": self.keep,
            "image": self.image, "services": list(self.services),
            "backup": {"source": self.dump.source, "location": self.dump.location,
                       "size": self.dump.size, "sha256": self.dump.sha256,
                       "databases": list(self.dump.databases)},
            "checks": [{"check": k, "detail": v} for k, v in self.checks],
            "steps": [s.as_dict() for s in self.steps],
            "state_file": self.state_file, "audit_file": self.audit_file,
            "continues": self.resumed.run if self.resumed else None,
            "sets_aside": self.set_aside.run if self.set_aside else None,
            "get_back": list(self.get_back),
        }


def refuse_redis(steps: tuple[Step, ...], redis_volume: str) -> None:
    """Refuse a plan in which any step names the Redis volume."""
    for step in steps:
        for cmd in step.commands:
            for word in cmd.argv:
                if word == redis_volume or word.startswith(redis_volume + ":"):
                    raise InternalError(f"refusing the plan: step {step.name} names the "
                                        f"Redis volume {redis_volume}; nothing was changed")


def build_plan(host: Host, facts: RebuildFacts, dump: DumpInfo, *, keep_old: bool,
               new_run: bool, now: datetime, run_id: str) -> RebuildPlan:
    """Check everything that can be checked before the stack is stopped, then plan.

    Pure: refuses with an OpsError (nothing has been touched yet), or returns the
    steps with the exact commands each runs and whether it runs, was done by an
    interrupted run (then continued), or is skipped.
    """
    vol, redis = host.volumes.postgres, host.volumes.redis
    if vol == redis:
        raise refuse(f"the inventory names {vol} as both the postgres and the Redis volume",
                     "fix volumes: in the inventory")
    checks = [check_backup(dump)]
    services, stack_checks = check_stack(host, facts)
    checks += stack_checks
    resumed, set_aside = recorded_run(host, facts, dump, new_run)
    if resumed is not None:
        checks.append(("unfinished run", f"continues {resumed.describe()}"))
        keep, spec, run_id, done = (resumed.keep or None, resumed.volume_spec or
                                    facts.volume_spec, resumed.run, resumed.done)
    else:
        keep, spec, done = keep_name(vol, now) if keep_old else None, facts.volume_spec, {}

    # The old volume is looked at only while it is still to be copied and deleted.
    volume_pending = "rm" not in done and not (resumed is not None and resumed.volume_deleted)
    if volume_pending and facts.volume_exists:
        checks += check_volume(host, facts, spec, services, resumed is None,
                               keep if "keep" not in done else None)

    cmds = step_commands(host, facts, dump, keep=keep, run_id=run_id, spec=spec)
    steps = []
    for name in STEPS:
        action, note = _step_action(name, done, keep=keep, volume=vol,
                                    volume_pending=volume_pending,
                                    volume_exists=facts.volume_exists)
        steps.append(Step(name, STEP_TITLES[name], cmds[name], action, note,
                          keeps_old_volume=name in KEEPS_OLD_VOLUME))
    refuse_redis(tuple(steps), redis)
    return RebuildPlan(
        host=host.name, run_id=run_id, volume=vol, redis_volume=redis, keep=keep,
        image=facts.image, services=services, dump=dump, steps=tuple(steps),
        checks=tuple(checks), state_file=str(PurePosixPath(host.backup_dir) / STATE_FILE),
        audit_file=str(PurePosixPath(host.log_file).parent / AUDIT_FILE),
        volume_spec=spec, resumed=resumed, set_aside=set_aside,
        state_present=facts.state_text is not None,
        get_back=get_back_commands(host, facts.compose_cmd, facts.image, keep) if keep else (),
    )



def _step_action(name: str, done: dict[str, str], *, keep: str | None, volume: str,
                 volume_pending: bool, volume_exists: bool) -> tuple[str, str]:
    """("run" | "done" | "skip", why) for one step of a new or continued run (pure)."""
    if name == "stop" and (volume_pending or "create" not in done):
        # Always while the volume is still to be replaced, even when done before.
        return "run", ("again: the stack must be down while the volume is replaced"
                       if name in done else "")
    if name in done:
        return "done", f"done at {done[name].split()[0]}"
    if name == "keep":
        if keep is None:
            return "skip", "--no-keep-old: the old data is not kept"
        if not volume_pending:
            return "skip", "the volume was deleted already"
        if not volume_exists:
            return "skip", f"{volume} does not exist: nothing to keep"
    if name == "rm":
        if not volume_pending:
            return "done", "the volume was deleted by the interrupted run"
        if not volume_exists:
            return "skip", f"{volume} does not exist"
    return "run", ""


def gather(remote: HostRemote, now: datetime) -> RebuildFacts:
    """Run the host program's facts and rebuild-facts (read-only)."""
    host = remote.host
    facts = parse_stack_facts(remote.program_facts("facts", *facts_args(host)))
    image = service_image(facts.config_yaml, host.compose.postgres_service) or \
        facts.container_image
    found = remote.program_facts("rebuild-facts", host.volumes.postgres, image,
                                 str(PurePosixPath(host.backup_dir) / STATE_FILE),
                                 keep_name(host.volumes.postgres, now))
    return add_volume_facts(facts, image, found)


def prepare(remote: HostRemote, dump: DumpInfo, *, keep_old: bool = True, new_run: bool = False,
            now: datetime | None = None) -> RebuildPlan:
    """Gather the facts of the host and build the plan (or refuse)."""
    now = now or datetime.now(UTC)
    facts = gather(remote, now)
    return build_plan(remote.host, facts, dump, keep_old=keep_old, new_run=new_run, now=now,
                      run_id=new_run_id(now))

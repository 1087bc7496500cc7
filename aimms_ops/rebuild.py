"""The emergency rebuild of the postgres volume, as one safe and resumable run.

The hand procedure (compose down, ``docker volume rm``, create, up, ``sleep 10``,
restore) becomes a :class:`RebuildPlan`: preflight facts are gathered, then a pure
builder either refuses (before anything is stopped) or returns named steps, each with
the exact commands it will send. The plan is printed (``--dry-run`` stops there),
confirmed, then executed step by step, each step recorded on the host in a state
file, so a run cut short is continued by the next one from where it stopped and
never deletes the volume a second time. The old volume's data is copied into a new
volume first; the Redis volume is never named by any step.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import re
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

import yaml

from aimms_ops import restore, units
from aimms_ops.dumpsource import DumpInfo, conninfo
from aimms_ops.errors import InternalError, OpsError
from aimms_ops.host import shell
from aimms_ops.host.compose import (
    compose_services_using,
    compose_volumes,
    decode_config,
    facts_args,
    parse_facts,
)
from aimms_ops.host.remote import Progress, Remote
from aimms_ops.inventory.model import Host

STEPS = ("stop", "keep", "rm", "create", "start", "wait", "restore", "verify")
STATE_FILE = ".rebuild-state"
DONE_SUFFIX = ".done"
AUDIT_FILE = "rebuild-audit.log"
#: How long the new cluster may take to accept connections after the start.
WAIT_TIMEOUT = 180
#: Free space asked for beyond the volume's size when its data is kept.
DISK_MARGIN_KB = 64 * 1024
PLACEHOLDER = "<postgres container>"

# Run in a throwaway container: empty the kept volume (a retried copy starts clean),
# then copy every file with owners, modes and times.
COPY_SH = "find /to -mindepth 1 -delete && cp -a /from/. /to/"
# Count the regular files and their bytes on both sides of the copy.
COUNT_SH = ('for d in /from /to; do find "$d" -type f -exec stat -c %s {} + | '
            'awk -v d="$d" "{ n++; s += \\$1 } END { print d, n + 0, s + 0 }"; done')
COUNT_SQL = r"""SELECT format('SELECT %L || ''='' || count(*) FROM %I.%I',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
ORDER BY 1
\gexec
"""

# Sessions of another restore (psql as the superuser): an interrupted run's restore of
# a backup on the host goes on after the connection dropped.
BUSY_SQL = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND usename = current_user AND application_name = 'psql' "
            "AND pid <> pg_backend_pid()")

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


# --- facts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSpec:
    """How a docker volume was created: what ``docker volume create`` needs again."""

    driver: str
    options: dict[str, str]
    labels: dict[str, str]

    @classmethod
    def from_json(cls, text: str) -> VolumeSpec | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return cls(driver=str(data.get("Driver") or "local"),
                   options={str(k): str(v) for k, v in (data.get("Options") or {}).items()},
                   labels={str(k): str(v) for k, v in (data.get("Labels") or {}).items()})

    def to_json(self) -> str:
        return json.dumps({"Driver": self.driver, "Options": self.options,
                           "Labels": self.labels}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class VolumeUser:
    container: str
    project: str
    service: str


@dataclass(frozen=True)
class RebuildFacts:
    """What the preflight found on the host (facts.sh plus rebuild-facts.sh)."""

    docker_ok: bool = True
    docker_error: str = ""
    compose_cmd: tuple[str, ...] = ()
    compose_file_exists: bool = False
    config_ok: bool = False
    config_error: str = ""
    config_yaml: str = ""
    container_image: str = ""
    docker_root: str = ""
    image: str = ""
    image_present: bool = False
    volume_exists: bool = False
    volume_spec: VolumeSpec | None = None
    volume_users: tuple[VolumeUser, ...] = ()
    size_kb: int | None = None
    avail_kb: int | None = None
    measure_error: str = ""
    keep_exists: bool = False
    state_text: str | None = None


def parse_stack_facts(facts: dict[str, str]) -> RebuildFacts:
    """The part of facts.sh's output the rebuild needs (pure)."""
    return RebuildFacts(
        docker_ok=facts.get("docker.ok") == "1",
        docker_error=facts.get("docker.error", ""),
        compose_cmd=tuple(facts.get("compose.cmd", "").split()),
        compose_file_exists=facts.get("compose.file_exists") == "1",
        config_ok=facts.get("compose.config_ok") == "1",
        config_error=facts.get("compose.config_error", ""),
        config_yaml=decode_config(facts),
        container_image=facts.get("container.image", ""),
    )


def add_volume_facts(base: RebuildFacts, image: str, text: str) -> RebuildFacts:
    """``base`` completed with the output of rebuild-facts.sh (pure)."""
    one: dict[str, str] = {}
    users = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "volume.user":
            name, _, rest = value.partition("\t")
            project, _, service = rest.partition("\t")
            users.append(VolumeUser(name, project, service))
        else:
            one[key] = value

    def kb(key: str) -> int | None:
        v = one.get(key, "")
        return int(v) if v.isdigit() else None

    state_text = None
    if one.get("state.exists") == "1":
        try:
            state_text = base64.b64decode(one.get("state.b64", "")).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            state_text = ""
    return replace(
        base, image=image, docker_root=one.get("docker.root", ""),
        image_present=one.get("image.present") == "1",
        volume_exists=one.get("volume.exists") == "1",
        volume_spec=VolumeSpec.from_json(one["volume.json"]) if "volume.json" in one else None,
        volume_users=tuple(users), size_kb=kb("volume.size_kb"), avail_kb=kb("volume.avail_kb"),
        measure_error=one.get("volume.measure_error", ""),
        keep_exists=one.get("keep.exists") == "1", state_text=state_text,
    )


def service_image(config_yaml: str, service: str) -> str:
    """The image of ``service`` in a normalized compose config, or ''."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return ""
    svc = ((data.get("services") or {}) if isinstance(data, dict) else {}).get(service) or {}
    return str(svc.get("image") or "") if isinstance(svc, dict) else ""


def config_services(config_yaml: str) -> tuple[str, ...]:
    """The services of a normalized compose config, in file order."""
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return ()
    services = data.get("services") if isinstance(data, dict) else None
    return tuple(str(s) for s in services) if isinstance(services, dict) else ()


def project_label(project: str) -> str:
    """The compose project label of containers (as compose v1 and v2 write it)."""
    return re.sub(r"[^a-z0-9_-]", "", project.lower())


# --- the state of a run, recorded on the host ----------------------------------------


@dataclass(frozen=True)
class RunState:
    """A run as its state file records it (``TIMESTAMP KEY=VALUE`` lines)."""

    run: str
    started: str = ""
    by: str = ""
    volume: str = ""
    volume_spec: VolumeSpec | None = None
    backup: str = ""
    backup_sha256: str = ""
    keep: str = ""
    begun: dict[str, str] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def last_step(self) -> str | None:
        """The last step recorded as done, or None."""
        done = [s for s in STEPS if s in self.done]
        return done[-1] if done else None

    @property
    def volume_deleted(self) -> bool:
        """True once the old volume is gone: from here on it is never deleted again."""
        return "rm" in self.done or any(s in self.begun for s in STEPS[STEPS.index("create"):])

    def describe(self) -> str:
        where = f"after step {self.last_step}" if self.last_step else "before its first step"
        failed = "".join(f"; {step} failed: {why.partition(' ')[2]}"
                         for step, why in self.failed.items())
        return (f"run {self.run} (started {self.started or '?'} by {self.by or '?'}, "
                f"stopped {where}{failed})")


def parse_state(text: str | None) -> RunState | None:
    """Parse a state file; None when there is none or it names no run (pure)."""
    if not text:
        return None
    one: dict[str, str] = {}
    stamps: dict[str, str] = {}
    begun: dict[str, str] = {}
    done: dict[str, str] = {}
    failed: dict[str, str] = {}
    for line in text.splitlines():
        ts, _, rest = line.partition(" ")
        key, sep, value = rest.partition("=")
        if not sep:
            continue
        if key in ("begin", "done", "failed"):
            step, _, detail = value.partition(" ")
            target = {"begin": begun, "done": done, "failed": failed}[key]
            target[step] = f"{ts} {detail}".strip()
            if key == "begin":
                failed.pop(step, None)
        else:
            one[key] = value
            stamps.setdefault(key, ts)
    if not one.get("run"):
        return None
    spec = VolumeSpec.from_json(one["volume_spec"]) if one.get("volume_spec") else None
    return RunState(run=one["run"], started=stamps.get("run", ""), by=one.get("by", ""),
                    volume=one.get("volume", ""), volume_spec=spec,
                    backup=one.get("backup", ""), backup_sha256=one.get("backup_sha256", ""),
                    keep=one.get("keep", ""), begun=begun, done=done, failed=failed)


def header_lines(plan: RebuildPlan, by: str) -> list[str]:
    """The first lines of a new run's state file."""
    spec = plan.volume_spec or VolumeSpec("local", {}, {})
    return [f"run={plan.run_id}", f"by={by}", f"host={plan.host}", f"volume={plan.volume}",
            f"volume_spec={spec.to_json()}", f"backup={plan.dump.source}",
            f"backup_location={plan.dump.location}", f"backup_sha256={plan.dump.sha256}",
            f"keep={plan.keep or ''}"]


# --- the plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command of a step: ``shown`` is printed; ``line`` is sent as it is.

    ``line`` is empty for commands the step runs through another module (the restore)
    or that need the container found at run time. ``argv`` holds its words.
    """

    shown: str
    argv: tuple[str, ...] = ()
    line: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    commands: tuple[Command, ...]
    action: str  # "run", "done" (by an earlier run) or "skip"
    note: str = ""


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
            "steps": [{"step": s.name, "title": s.title, "action": s.action, "note": s.note,
                       "commands": [c.shown for c in s.commands]} for s in self.steps],
            "state_file": self.state_file, "audit_file": self.audit_file,
            "continues": self.resumed.run if self.resumed else None,
            "sets_aside": self.set_aside.run if self.set_aside else None,
            "get_back": list(self.get_back),
        }


def _plain(argv: list[str]) -> Command:
    line = shell.join(argv)
    return Command(line, tuple(argv), line)


def _compose(host: Host, compose_cmd: tuple[str, ...], *args: str) -> Command:
    argv = [*compose_cmd, "-f", host.compose.file_path, "-p", host.compose.project, *args]
    line = f"{shell.join(['cd', host.compose.project_dir])} && {shell.join(argv)}"
    return Command(line, ("cd", host.compose.project_dir, *argv), line)


def _script(name: str, args: list[str]) -> Command:
    return Command(f"{shell.join([name, *args])}   # aimms-ops script, run with bash",
                   (name, *args), shell.script_command(name, args))


def _in_container(argv: list[str], note: str = "") -> Command:
    """A command that runs in the postgres container, found once the stack is up."""
    shown = " ".join(PLACEHOLDER if a == PLACEHOLDER else shell.quote(a) for a in argv)
    return Command(shown + (f"   # {note}" if note else ""), tuple(argv))


def keep_name(volume: str, now: datetime) -> str:
    """The name of the volume that keeps the old data: ``<volume>_before_rebuild_<UTC>``."""
    return f"{volume}_before_rebuild_{now.astimezone(UTC):%Y%m%d_%H%M%S}"


def new_run_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def step_commands(host: Host, facts: RebuildFacts, dump: DumpInfo, *, keep: str | None,
                  run_id: str, spec: VolumeSpec | None) -> dict[str, tuple[Command, ...]]:
    """The commands of every step, built from argument lists (pure)."""
    vol = host.volumes.postgres
    image = facts.image
    su = host.postgres.superuser
    if keep in (vol, host.volumes.redis):
        raise InternalError(f"refusing the plan: the copy of the old data would go into "
                            f"{keep}; nothing was changed")
    # Named after the run: a copy still running after an interrupted run makes the
    # next attempt fail on the name instead of copying at the same time.
    def throwaway(what: str) -> list[str]:
        return ["docker", "run", "--rm", "--name", f"aimms-ops-{what}-{run_id}", "--network",
                "none", "--user", "0:0", "--entrypoint", "sh"]

    labels: list[str] = []
    for k, v in sorted((spec.labels if spec else {}).items()):
        labels += ["--label", f"{k}={v}"]
    cmds: dict[str, tuple[Command, ...]] = {
        "stop": (_compose(host, facts.compose_cmd, "down"),),
        "keep": (),
        "rm": (_plain(["docker", "volume", "rm", vol]),),
        "create": (_plain(["docker", "volume", "create", *labels, vol]),),
        "start": (_compose(host, facts.compose_cmd, "up", "-d"),),
        "wait": (_script("wait-postgres.sh", [host.compose.project,
                                              host.compose.postgres_service, su,
                                              str(WAIT_TIMEOUT)]),),
    }
    if keep:
        cmds["keep"] = (
            _plain(["docker", "volume", "create", "--label", f"org.aimms-ops.kept-from={vol}",
                    "--label", f"org.aimms-ops.rebuild-run={run_id}", keep]),
            _plain([*throwaway("copy"), "-v", f"{vol}:/from:ro", "-v", f"{keep}:/to", image,
                    "-c", COPY_SH]),
            _plain([*throwaway("check"), "-v", f"{vol}:/from:ro", "-v", f"{keep}:/to:ro",
                    image, "-c", COUNT_SH]),
        )
    stream = [host.compose.project, host.compose.postgres_service, su, dump.format]
    if dump.location == "local":
        shown = (f"{shell.join(['restore-stream.sh', *stream, '-'])} < "
                 f"{shell.quote(dump.source)}   # aimms-ops script; the dump streamed over SSH")
        rargv = ("restore-stream.sh", *stream, "-")
    else:
        rargv = ("restore-stream.sh", *stream, dump.source)
        shown = f"{shell.join(rargv)}   # aimms-ops script, run with bash"
    psql = ["docker", "exec", PLACEHOLDER, "psql", "-X", "-A", "-t", "-U", su]
    cmds["restore"] = (_in_container([*psql, "-d", "postgres", "-c", BUSY_SQL],
                                     "no other restore may be running"),
                       Command(shown, rargv))
    verify = [_in_container([*psql, "-d", "postgres", "-c",
                             "SELECT datname FROM pg_database ORDER BY 1"])]
    for db in dump.databases:
        verify.append(_in_container(
            ["docker", "exec", "-i", PLACEHOLDER, "psql", "-X", "-q", "-A", "-t", "-v",
             "ON_ERROR_STOP=1", "-U", su, "-d", conninfo(db)],
            "SQL on stdin: count(*) of every table"))
    cmds["verify"] = tuple(verify)
    return cmds


def refuse_redis(steps: tuple[Step, ...], redis_volume: str) -> None:
    """Refuse a plan in which any step names the Redis volume."""
    for step in steps:
        for cmd in step.commands:
            for word in cmd.argv:
                if word == redis_volume or word.startswith(redis_volume + ":"):
                    raise InternalError(f"refusing the plan: step {step.name} names the "
                                        f"Redis volume {redis_volume}; nothing was changed")


def get_back_commands(host: Host, compose_cmd: tuple[str, ...], image: str,
                      keep: str) -> tuple[str, ...]:
    """How to look at, restore, and finally delete the kept old data (shell lines)."""
    vol = host.volumes.postgres
    return (
        "# look at the old data (read-only):",
        shell.join(["docker", "run", "--rm", "-it", "--network", "none", "--user", "0:0",
                    "--entrypoint", "sh", "-v", f"{keep}:/old:ro", image]),
        "# put it back in place of the rebuilt database (which is then lost: "
        "fab backup first):",
        _compose(host, compose_cmd, "down").line,
        shell.join(["docker", "volume", "rm", vol]),
        shell.join(["docker", "volume", "create", vol]),
        shell.join(["docker", "run", "--rm", "--network", "none", "--user", "0:0",
                    "--entrypoint", "cp", "-v", f"{keep}:/from:ro", "-v", f"{vol}:/to", image,
                    "-a", "/from/.", "/to/"]),
        _compose(host, compose_cmd, "up", "-d").line,
        "# delete it once it is no longer needed:",
        shell.join(["docker", "volume", "rm", keep]),
    )


def _refuse(message: str, hint: str = "nothing was stopped or changed") -> OpsError:
    return OpsError(f"refusing to rebuild: {message}", hint)


def build_plan(host: Host, facts: RebuildFacts, dump: DumpInfo, *, keep_old: bool,
               new_run: bool, now: datetime, run_id: str) -> RebuildPlan:
    """Check everything that can be checked before the stack is stopped, then plan.

    Pure: refuses with an OpsError (nothing has been touched yet), or returns the
    steps with the exact commands each runs and whether it runs, was done by an
    interrupted run (then continued), or is skipped.
    """
    vol, redis = host.volumes.postgres, host.volumes.redis
    if vol == redis:
        raise _refuse(f"the inventory names {vol} as both the postgres and the Redis volume",
                      "fix volumes: in the inventory")
    checks = [_check_backup(dump)]
    services, stack_checks = _check_stack(host, facts)
    checks += stack_checks
    resumed, set_aside = _recorded_run(host, facts, dump, new_run)
    if resumed is not None:
        checks.append(("unfinished run", f"continues {resumed.describe()}"))
        keep, spec, run_id, done = (resumed.keep or None, resumed.volume_spec or
                                    facts.volume_spec, resumed.run, resumed.done)
    else:
        keep, spec, done = keep_name(vol, now) if keep_old else None, facts.volume_spec, {}

    # The old volume is looked at only while it is still to be copied and deleted.
    volume_pending = "rm" not in done and not (resumed is not None and resumed.volume_deleted)
    if volume_pending and facts.volume_exists:
        checks += _check_volume(host, facts, spec, services, resumed is None,
                                keep if "keep" not in done else None)

    cmds = step_commands(host, facts, dump, keep=keep, run_id=run_id, spec=spec)
    steps = []
    for name in STEPS:
        action, note = _step_action(name, done, keep=keep, volume=vol,
                                    volume_pending=volume_pending,
                                    volume_exists=facts.volume_exists)
        steps.append(Step(name, STEP_TITLES[name], cmds[name], action, note))
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


def _check_backup(dump: DumpInfo) -> tuple[str, str]:
    if not dump.ok:
        raise _refuse(f"the backup {dump.source} is not usable: {'; '.join(dump.problems)}",
                      "nothing was stopped or changed; pick another backup (fab list-backups)")
    sha = "sha256 matches its .sha256" if dump.sha256_recorded else "no .sha256 beside it"
    return ("backup", f"{dump.source} ({dump.location}, {dump.size} bytes): {sha}, stream "
                      f"and completion marker OK; databases: {', '.join(dump.databases)}")


def _check_stack(host: Host, facts: RebuildFacts,
                 ) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Docker, the compose file, the service, the volume declared external, the image."""
    vol, svc, path = host.volumes.postgres, host.compose.postgres_service, host.compose.file_path
    if not facts.docker_ok:
        raise _refuse(f"docker does not answer on {host.name}: {facts.docker_error}")
    if not facts.compose_cmd:
        raise _refuse(f"neither docker compose nor docker-compose is installed on {host.name}")
    if not facts.compose_file_exists:
        raise _refuse(f"the compose file {path} does not exist on {host.name}",
                      "nothing was stopped or changed; fix compose: in the inventory")
    if not facts.config_ok:
        raise _refuse(f"{' '.join(facts.compose_cmd)} config fails on {path}: "
                      f"{facts.config_error}")
    services = config_services(facts.config_yaml)
    if svc not in services:
        raise _refuse(f"the compose file {path} has no service {svc} (services: "
                      f"{', '.join(services) or 'none'})", "nothing was stopped or changed; "
                      "fix compose.postgres_service in the inventory")
    decl = compose_volumes(facts.config_yaml).get(vol)
    if decl is None:
        raise _refuse(f"the compose file {path} declares no volume named {vol}",
                      "nothing was stopped or changed; fix volumes.postgres in the inventory")
    if not decl.external:
        raise _refuse(f"the volume {vol} is not declared external in {path}: compose would "
                      "manage it itself", "nothing was stopped or changed; declare it "
                      "external: true (as in production) first")
    if svc not in compose_services_using(facts.config_yaml, decl.key):
        raise _refuse(f"the service {svc} does not mount the volume {vol} ({decl.key} in "
                      "the compose file)")
    if not facts.image:
        raise _refuse(f"cannot tell the image of the {svc} service (no image: in the compose "
                      "file and no container)")
    if not facts.image_present:
        raise _refuse(f"the image {facts.image} is not on {host.name}: the throwaway "
                      "containers of the copy need it")
    return services, [("compose", f"{' '.join(facts.compose_cmd)} -f {path}: services "
                                  f"{', '.join(services)}; {vol} is external and mounted by "
                                  f"{svc}; image {facts.image}")]


def _recorded_run(host: Host, facts: RebuildFacts, dump: DumpInfo, new_run: bool,
                  ) -> tuple[RunState | None, RunState | None]:
    """(the run to continue, the run set aside by --new-run) from the host's state file."""
    recorded = parse_state(facts.state_text)
    vol = host.volumes.postgres
    if recorded is None:
        return None, None
    if new_run:
        return None, recorded
    if recorded.volume and recorded.volume != vol:
        raise _refuse(f"an unfinished rebuild of another volume ({recorded.volume}) is "
                      f"recorded: {recorded.describe()}", "nothing was changed; finish it "
                      "with the inventory it was started with, or add --new-run to set it aside")
    if recorded.backup_sha256 != dump.sha256:
        name = backup_name(recorded.backup, host) or shell.quote(recorded.backup)
        raise _refuse(
            f"an unfinished rebuild of {vol} is recorded: {recorded.describe()}, with the "
            f"backup {recorded.backup} (sha256 {recorded.backup_sha256[:12]}…), not "
            f"{dump.source} (sha256 {dump.sha256[:12]}…)",
            f"nothing was changed; run again with --file={name} to finish it, or add "
            "--new-run to set it aside and start over with this backup")
    return recorded, None


def _check_volume(host: Host, facts: RebuildFacts, spec: VolumeSpec | None,
                  services: tuple[str, ...], fresh: bool,
                  keep: str | None) -> list[tuple[str, str]]:
    """The volume can be deleted and recreated, and there is room to keep its data."""
    vol = host.volumes.postgres
    if spec is None or spec.driver != "local" or spec.options:
        what = f"driver {spec.driver}, options {spec.options}" if spec else "unreadable"
        raise _refuse(f"the volume {vol} is not a plain local volume ({what}); rebuild-volume "
                      "only deletes and recreates plain local volumes")
    label = project_label(host.compose.project)
    strangers = [u.container for u in facts.volume_users
                 if u.project != label or u.service not in services]
    if strangers:
        raise _refuse(f"the volume {vol} is also used by {', '.join(strangers)}, which compose "
                      "down would not stop (it could not be deleted)",
                      "nothing was stopped or changed; remove those containers first")
    checks = [("volume", f"{vol}: plain local volume, used only by the stack")]
    if keep is None:
        return checks
    if facts.keep_exists and fresh:
        raise _refuse(f"a volume named {keep} exists already", "run again in a second")
    if facts.size_kb is None or facts.avail_kb is None:
        raise _refuse(f"cannot measure the volume {vol} and the free space beside it: "
                      f"{facts.measure_error or 'no answer'}")
    need = facts.size_kb + facts.size_kb // 20 + DISK_MARGIN_KB
    where = facts.docker_root or "docker's data root"
    held, free, needed = (units.size(kb * 1024) for kb in (facts.size_kb, facts.avail_kb, need))
    if facts.avail_kb < need:
        raise _refuse(f"not enough disk to keep the old data: {vol} holds {held}, "
                      f"the copy needs {needed} free under {where}, {free} "
                      "are free", "nothing was stopped or changed; free some space, or pass "
                      "--no-keep-old to rebuild without keeping the old data")
    return [*checks, ("disk", f"{vol} holds {held}; {free} free "
                              f"under {where} (the copy needs {needed})")]


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


def backup_name(path: str, host: Host) -> str | None:
    """The backup name of ``path`` when it lies in the host's backup dir, else None."""
    p = PurePosixPath(path)
    return p.name if str(p.parent) == str(PurePosixPath(host.backup_dir)) else None


# --- gathering the facts -------------------------------------------------------------


def read_state(remote: Remote) -> RunState | None:
    """The unfinished run recorded on the host, if any."""
    path = str(PurePosixPath(remote.host.backup_dir) / STATE_FILE)
    res = remote.run(["cat", "--", path], what="cat")
    return parse_state(res.stdout) if res.ok else None


def recorded_backup_name(remote: Remote) -> str | None:
    """The backup name of the unfinished run when its backup lies in the backup dir."""
    state = read_state(remote)
    if state is None or state.volume != remote.host.volumes.postgres:
        return None
    return backup_name(state.backup, remote.host)


def gather(remote: Remote, now: datetime) -> RebuildFacts:
    """Run facts.sh and rebuild-facts.sh on the host (read-only)."""
    host = remote.host
    facts = parse_stack_facts(parse_facts(
        remote.run_script("facts.sh", *facts_args(host)).stdout))
    image = service_image(facts.config_yaml, host.compose.postgres_service) or \
        facts.container_image
    res = remote.run_script("rebuild-facts.sh", host.volumes.postgres, image,
                            str(PurePosixPath(host.backup_dir) / STATE_FILE),
                            keep_name(host.volumes.postgres, now))
    return add_volume_facts(facts, image, res.stdout)


def prepare(remote: Remote, dump: DumpInfo, *, keep_old: bool = True, new_run: bool = False,
            now: datetime | None = None) -> RebuildPlan:
    """Gather the facts of the host and build the plan (or refuse)."""
    now = now or datetime.now(UTC)
    facts = gather(remote, now)
    return build_plan(remote.host, facts, dump, keep_old=keep_old, new_run=new_run, now=now,
                      run_id=new_run_id(now))


def operator() -> str:
    """Who runs this: local user and host name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@contextmanager
def locked(remote: Remote) -> Iterator[None]:
    """Hold the host's cluster lock (exclusive) for the block: nothing else touches it."""
    owner = f"rebuild-volume by {operator()} pid {os.getpid()}"
    cmd = shell.script_command("rebuild-lock.sh", [remote.host.backup_dir, owner])
    with remote.hold(cmd, ready="locked=1", what="the rebuild lock") as failed:
        if failed is not None:
            facts = parse_facts(failed.stdout)
            holder = facts.get("holder") or "unknown"
            if facts.get("busy") == "rebuild":
                raise OpsError(f"another rebuild-volume is running on {remote.name} "
                               f"({holder})", "wait for it to end; nothing was changed")
            if facts.get("busy") == "backup":
                raise OpsError(f"a backup is running on {remote.name} ({holder})",
                               "wait for it to end (fab logs), then run again; nothing was "
                               "changed")
            if facts.get("busy") in ("restore", "verify"):
                raise OpsError(f"a {facts['busy']} is running on {remote.name} ({holder})",
                               "wait for it to end, then run again; nothing was changed")
            raise OpsError(f"cannot take the rebuild lock on {remote.name}: "
                           f"{failed.last_error_line()}")
        yield


# --- running it ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    name: str
    action: str  # "ran", "done before", "skipped"
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class TableCount:
    database: str
    table: str
    rows: int


@dataclass(frozen=True)
class RebuildReport:
    plan: RebuildPlan
    steps: tuple[StepResult, ...]
    databases: tuple[str, ...]
    tables: tuple[TableCount, ...]
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.plan.host, "run": self.plan.run_id, "result": "ok",
            "volume": self.plan.volume, "kept": self.plan.keep,
            "backup": self.plan.dump.source, "seconds": round(self.seconds, 1),
            "steps": [{"step": s.name, "result": s.action, "seconds": round(s.seconds, 1),
                       "detail": s.detail} for s in self.steps],
            "databases": list(self.databases),
            "tables": [asdict(t) for t in self.tables],
            "get_back": list(self.plan.get_back),
        }


def audit_line(fields: dict[str, object]) -> str:
    """``rebuild-volume key=value ...``; None values left out, others quoted as needed (pure)."""
    parts = ["rebuild-volume"]
    for k, v in fields.items():
        if v is None:
            continue
        text = str(v)
        if not re.fullmatch(r"[A-Za-z0-9_./:@+,-]+", text):
            text = shlex.quote(text)
        parts.append(f"{k}={text}")
    return " ".join(parts)


class _Record:
    """Appends to the state file and the audit log on the host."""

    def __init__(self, remote: Remote, plan: RebuildPlan) -> None:
        self.remote = remote
        self.plan = plan

    def append(self, *lines: str) -> None:
        res = self.remote.run_script("rebuild-record.sh", "append", self.plan.state_file, *lines)
        if not res.ok:
            raise OpsError(f"cannot write the rebuild state {self.plan.state_file} on "
                           f"{self.remote.name}: {res.last_error_line()}")

    def close(self, dest: str) -> None:
        self.remote.run_script("rebuild-record.sh", "close", self.plan.state_file, dest)

    def audit(self, line: str) -> bool:
        try:
            res = self.remote.run_script("rebuild-record.sh", "audit", self.plan.audit_file, line)
        except OpsError:
            return False
        return res.ok


StepEvent = Callable[[Step, str, float, str], None]


def execute(remote: Remote, plan: RebuildPlan, *,
            on_step: StepEvent | None = None,
            restore_progress: Callable[[int], AbstractContextManager[Progress]] | None = None,
            ) -> RebuildReport:
    """Run the plan's steps in order, recording each on the host before and after.

    ``on_step(step, event, seconds, detail)`` is told "start", "ran", "done before" and
    "skipped".
    """
    rec = _Record(remote, plan)
    by = operator()
    started = time.monotonic()
    results: list[StepResult] = []
    tables: tuple[TableCount, ...] = ()
    databases: tuple[str, ...] = ()
    where = "the start"  # the step running, for the records of a failure

    def tell(step: Step, event: str, seconds: float = 0.0, detail: str = "") -> None:
        if on_step is not None:
            on_step(step, event, seconds, detail)

    def audit(result: str, **extra: object) -> None:
        rec.audit(audit_line({
            "run": plan.run_id, "result": result, "host": plan.host, "volume": plan.volume,
            "backup": plan.dump.source, "sha256": plan.dump.sha256[:16], "kept": plan.keep,
            "by": by, "continued": "yes" if plan.resumed else None,
            "seconds": round(time.monotonic() - started, 1), **extra}))

    try:
        if plan.resumed is None and plan.state_present:
            aside = plan.set_aside.run if plan.set_aside else "unreadable"
            rec.close(f"{plan.state_file}.abandoned-{aside}")
        if plan.resumed is None:
            rec.append(*header_lines(plan, by))
        else:
            rec.append(f"resumed_by={by}")
        for step in plan.steps:
            where = step.name
            if step.action != "run":
                event = "done before" if step.action == "done" else "skipped"
                results.append(StepResult(step.name, event, 0.0, step.note))
                tell(step, event, 0.0, step.note)
                continue
            tell(step, "start")
            rec.append(f"begin={step.name}")
            t0 = time.monotonic()
            detail = ""
            if step.name == "restore":
                detail = _restore(remote, plan, restore_progress)
            elif step.name == "verify":
                databases, tables = _verify(remote, plan)
                detail = f"{len(databases)} databases, {len(tables)} tables counted"
            else:
                detail = _run_commands(remote, plan, step)
            seconds = time.monotonic() - t0
            rec.append(f"done={step.name} seconds={seconds:.1f}")
            results.append(StepResult(step.name, "ran", seconds, detail))
            tell(step, "ran", seconds, detail)
        where = "the end"
        rec.append("finished=ok")
        rec.close(plan.state_file + DONE_SUFFIX)
        audit("ok", steps=",".join(r.name for r in results if r.action == "ran"))
    except KeyboardInterrupt:
        audit("interrupted", at=where)
        raise
    except OpsError as exc:
        try:
            rec.append(f"failed={where} {exc.message}")
        except OpsError:
            pass
        audit("failed", at=where, reason=exc.message)
        hint = _failure_hint(plan, where)
        if where in ("stop", "keep", "rm"):
            # The old volume is still there: do not leave the stack down for nothing.
            hint = f"{_start_again(remote, plan)}; {hint}"
        raise OpsError(f"{where} failed: {exc.message}", hint, exc.code) from None
    return RebuildReport(plan, tuple(results), databases, tables,
                         time.monotonic() - started)


def _failure_hint(plan: RebuildPlan, step: str) -> str:
    if step in ("stop", "keep", "rm"):
        back = f"the volume {plan.volume} was not deleted; "
    elif step in STEPS:
        back = f"the old volume is gone{f' (its data is in {plan.keep})' if plan.keep else ''}; "
    else:
        back = ""
    return (f"{back}fix the cause, then run the same command again: it continues where it "
            f"stopped (state in {plan.state_file})")


def _start_again(remote: Remote, plan: RebuildPlan) -> str:
    """Start the stack on its old volume after a failure before the volume was deleted."""
    for cmd in plan.step("start").commands:
        try:
            res = remote.run(cmd.line, what="compose up")
        except OpsError as exc:
            return f"the stack could not be started again: {exc.message}"
        if not res.ok:
            return f"the stack could not be started again: {res.last_error_line()}"
    return "the stack was started again on the old volume"


def _run_commands(remote: Remote, plan: RebuildPlan, step: Step) -> str:
    detail = ""
    for cmd in step.commands:
        res = remote.run(cmd.line, what=f"step {step.name}")
        if step.name == "rm" and not res.ok and "no such volume" in res.stderr.lower():
            # Deleted by the interrupted run just before it could record it.
            return f"{plan.volume} was already deleted"
        if not res.ok:
            shown = cmd.shown.split("   #")[0]
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise OpsError(f"{shown}: {error_line(res.stderr) or res.last_error_line()}")
        if step.name == "wait":
            facts = parse_facts(res.stdout)
            detail = f"container {facts.get('container', '?')[:12]}"
    if step.name == "keep":
        detail = _check_copy(res.stdout, plan)
    return detail


def error_line(stderr: str) -> str:
    """The line of docker's (or compose's) stderr that says what went wrong (pure)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"^(See|Run) '.*--help'", ln)]
    for ln in reversed(lines):
        if re.search(r"error|Error|ERROR|denied|not found|No such", ln):
            return ln
    return lines[-1] if lines else ""


def _check_copy(stdout: str, plan: RebuildPlan) -> str:
    """Compare the file counts and bytes of both sides of the copy."""
    sides = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            sides[parts[0]] = (int(parts[1]), int(parts[2]))
    src, dst = sides.get("/from"), sides.get("/to")
    if src is None or dst is None or src != dst:
        raise OpsError(f"the copy in {plan.keep} does not match {plan.volume}: "
                       f"{src} files/bytes vs {dst}")
    return f"{src[0]} files, {src[1]} bytes copied into {plan.keep}"


def _restore(remote: Remote, plan: RebuildPlan,
             progress: Callable[[int], AbstractContextManager[Progress]] | None) -> str:
    rplan = restore.make_plan(remote, plan.dump, None, safety_backup=False)
    res = remote.run(["docker", "exec", rplan.container, "psql", "-X", "-A", "-t", "-U",
                      remote.host.postgres.superuser, "-d", "postgres", "-c", BUSY_SQL],
                     what="psql")
    if not res.ok:
        raise OpsError(f"cannot look for other sessions: {res.last_error_line()}")
    if res.stdout.strip() not in ("", "0"):
        raise OpsError("another restore is still running in the cluster (a psql session of "
                       f"{remote.host.postgres.superuser}), probably the interrupted run's: "
                       "wait for it to end")
    ctx = progress(plan.dump.size) if progress is not None else nullcontext(None)
    with ctx as advance:
        # This run holds the cluster lock already (locked()).
        report = restore.execute(remote, rplan, progress=advance, lock=False)
    return f"{', '.join(report.databases)} restored in {units.duration(report.seconds)}"


def parse_counts(text: str) -> list[tuple[str, int]]:
    """``schema.table=N`` lines (a name may hold '=') into pairs (pure)."""
    out = []
    for line in text.splitlines():
        name, sep, value = line.rpartition("=")
        if sep and name and value.strip().isdigit():
            out.append((name, int(value)))
    return out


def _verify(remote: Remote, plan: RebuildPlan,
            ) -> tuple[tuple[str, ...], tuple[TableCount, ...]]:
    su = remote.host.postgres.superuser
    cid = restore.container_of(remote)
    res = remote.run(["docker", "exec", cid, "psql", "-X", "-A", "-t", "-U", su, "-d",
                      "postgres", "-c", "SELECT datname FROM pg_database ORDER BY 1"],
                     what="psql")
    if not res.ok:
        raise OpsError(f"cannot list the databases: {res.last_error_line()}")
    present = {ln.strip() for ln in res.stdout.splitlines() if ln.strip()}
    missing = [d for d in plan.dump.databases if d not in present]
    if missing:
        raise OpsError(f"databases of the dump missing after the restore: {', '.join(missing)}")
    counts = []
    for db in plan.dump.databases:
        res = remote.run(["docker", "exec", "-i", cid, "psql", "-X", "-q", "-A", "-t", "-v",
                          "ON_ERROR_STOP=1", "-U", su, "-d", conninfo(db)],
                         stdin=COUNT_SQL.encode(), what="psql")
        if not res.ok:
            raise OpsError(f"cannot count the rows of {db}: {res.last_error_line()}")
        counts += [TableCount(db, t, n) for t, n in parse_counts(res.stdout)]
    return plan.dump.databases, tuple(counts)

"""Turning PITR on (``fab install-backups`` with ``pitr:``) and off (``fab pitr-off``):
the plan, each step said, and the one command of the host program that carries it out.

Turning it on restarts postgres once (the container is recreated on the derived image),
so it needs the operator's consent; everything else is additive. Turning it off resets
the archive settings and restarts postgres on the compose file alone; the repository
and its passphrase are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aimms_ops.core import pitr
from aimms_ops.core.errors import OpsError
from aimms_ops.host.commands import Command, program
from aimms_ops.host.events import Event, Events
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.pitr.state import PitrState


@dataclass(frozen=True)
class Plan:
    enable: bool
    steps: list[tuple[str, str]]
    commands: list[Command] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"enable": self.enable,
                "steps": [{"step": s, "detail": d} for s, d in self.steps],
                "commands": [c.as_dict() for c in self.commands]}


def _common(host: Host) -> list[str]:
    c = host.compose
    return ["--project", c.project, "--service", c.postgres_service,
            "--superuser", host.postgres.superuser, "--project-dir", c.project_dir,
            "--compose-file", c.file, "--log-file", host.log_file]


def backup_command(host: Host, kind: str) -> Command:
    """A PITR backup of ``kind`` as cron and ``fab pitr-backup`` run it."""
    return program(["pitr-backup", "--type", kind, "--config", host.layout.config_file,
                    "--report"])


def enable_plan(host: Host, state: PitrState) -> Plan | None:
    """What turning PITR on changes, or None when it is on already (pure)."""
    cfg = host.pitr
    if cfg is None:
        raise OpsError(f"{host.name} has no pitr: in the inventory",
                       "add pitr: {} to the host (see README: point-in-time recovery)")
    if state.on:
        return None
    base = state.facts.get("image") or ""
    if not base and not cfg.image:
        raise OpsError(f"no running postgres container on {host.name}: PITR is built on "
                       "its image", "start the stack, then run fab install-backups again")
    image = cfg.image or pitr.image_tag(base)
    args = [*_common(host), "--repo", cfg.repo, "--retention-full", str(cfg.retention_full),
            "--report"]
    args += ["--image", cfg.image] if cfg.image else ["--base-image", base]
    override = pitr.override_path(host.compose.file_path)
    steps = [
        ("image", f"use {image}" if cfg.image else
         f"build {image}: {base} + Debian's pgbackrest (docker build)"),
        ("repository", f"{cfg.repo} (the container's postgres owns it; mode 2770)"),
        ("passphrase", f"{pitr.secret_path(host.compose.file_path)} (0600, made once; keep "
                       "a copy apart: without it the repository cannot be read)"),
        ("override", f"{override} (start the stack with it from now on)"),
        ("settings", "ALTER SYSTEM SET " + ", ".join(f"{k} = '{v}'"
                                                     for k, v in pitr.ARCHIVE_SETTINGS)),
        ("restart", f"postgres recreated once on {image}: its sessions end"),
        ("stanza", f"pgbackrest stanza-create and check (stanza {pitr.STANZA})"),
        ("backup", "the first full PITR backup"),
        ("cron", f"full backups at '{cfg.full_schedule}', differential at "
                 f"'{cfg.diff_schedule}'"),
    ]
    commands = [program(["pitr-enable", *args]), backup_command(host, "full")]
    if cfg.offsite:
        steps.append(("offsite", f"the repository copied to {cfg.offsite} (its pitr/ folder), "
                                 "then every minute from cron"))
        commands.append(program(pitr.push_args(host.layout.config_file, cfg.offsite, cfg.repo,
                                               "--sync", "--report")))
    return Plan(True, steps, commands)


def disable_plan(host: Host, state: PitrState) -> Plan:
    """What turning PITR off changes (pure)."""
    override = pitr.override_path(host.compose.file_path)
    steps = [
        ("settings", "ALTER SYSTEM RESET " + ", ".join(k for k, _ in pitr.ARCHIVE_SETTINGS)),
        ("restart", f"postgres recreated on {host.compose.file} alone: its sessions end"),
        ("override", f"{override} kept as {pitr.OVERRIDE_FILE}.off"),
        ("cron", "the PITR backup lines removed"),
        ("kept", f"the repository {host.pitr.repo if host.pitr else '(its folder)'} and "
                 "the passphrase: remove them by hand when no restore needs them"),
    ]
    if not state.facts.get("pgbackrest") and state.facts.get("archive_mode") != "on":
        steps = [("nothing", "PITR is off already")]
        return Plan(False, steps)
    return Plan(False, steps, [program(["pitr-enable", "--disable", *_common(host)])])


def run(remote: HostRemote, plan: Plan, on_event: Callable[[Event], None]) -> None:
    """Send the plan's commands, in order; the first that fails ends it."""
    for cmd in plan.commands:
        events = Events(on_event)
        res = remote.run(cmd.line, on_stdout=events.feed, what=cmd.argv[0])
        if not res.ok:
            said = [e["error"] for e in events.all if e.get("error")]
            why = said[-1] if said else res.last_error_line()
            raise OpsError(f"{cmd.argv[0]} failed on {remote.name}: {why}",
                           "see the log: fab logs")

"""rebuild-volume's preflight: everything that can be checked before the stack is
stopped, from the facts gathered (pure). Each check refuses with one line, or returns
what it found for the plan's table."""

from __future__ import annotations

from aimms_ops.core import units
from aimms_ops.core.errors import OpsError
from aimms_ops.host import shell
from aimms_ops.host.compose import compose_services_using, compose_volumes, project_label
from aimms_ops.inventory.model import Host
from aimms_ops.rebuild.facts import RebuildFacts, VolumeSpec, config_services
from aimms_ops.rebuild.state import RunState, backup_name, parse_state
from aimms_ops.restore.source import DumpInfo

#: Free space asked for beyond the volume's size when its data is kept.
DISK_MARGIN_KB = 64 * 1024


def refuse(message: str, hint: str = "nothing was stopped or changed") -> OpsError:
    return OpsError(f"refusing to rebuild: {message}", hint)


def check_backup(dump: DumpInfo) -> tuple[str, str]:
    if not dump.ok:
        raise refuse(f"the backup {dump.source} is not usable: {'; '.join(dump.problems)}",
                      "nothing was stopped or changed; pick another backup (fab list-backups)")
    sha = "sha256 matches its .sha256" if dump.sha256_recorded else "no .sha256 beside it"
    return ("backup", f"{dump.source} ({dump.location}, {units.size(dump.size)}): {sha}, stream "
                      f"and completion marker OK; databases: {', '.join(dump.databases)}")


def check_stack(host: Host, facts: RebuildFacts,
                 ) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Docker, the compose file, the service, the volume declared external, the image."""
    vol, svc, path = host.volumes.postgres, host.compose.postgres_service, host.compose.file_path
    if not facts.docker_ok:
        raise refuse(f"docker does not answer on {host.name}: {facts.docker_error}")
    if not facts.compose_cmd:
        raise refuse(f"neither docker compose nor docker-compose is installed on {host.name}")
    if not facts.compose_file_exists:
        raise refuse(f"the compose file {path} does not exist on {host.name}",
                      "nothing was stopped or changed; fix compose: in the inventory")
    if not facts.config_ok:
        raise refuse(f"{' '.join(facts.compose_cmd)} config fails on {path}: "
                      f"{facts.config_error}")
    services = config_services(facts.config_yaml)
    if svc not in services:
        raise refuse(f"the compose file {path} has no service {svc} (services: "
                      f"{', '.join(services) or 'none'})", "nothing was stopped or changed; "
                      "fix compose.postgres_service in the inventory")
    decl = compose_volumes(facts.config_yaml).get(vol)
    if decl is None:
        raise refuse(f"the compose file {path} declares no volume named {vol}",
                      "nothing was stopped or changed; fix volumes.postgres in the inventory")
    if not decl.external:
        raise refuse(f"the volume {vol} is not declared external in {path}: compose would "
                      "manage it itself", "nothing was stopped or changed; declare it "
                      "external: true (as in production) first")
    if svc not in compose_services_using(facts.config_yaml, decl.key):
        raise refuse(f"the service {svc} does not mount the volume {vol} ({decl.key} in "
                      "the compose file)")
    if not facts.image:
        raise refuse(f"cannot tell the image of the {svc} service (no image: in the compose "
                      "file and no container)")
    if not facts.image_present:
        raise refuse(f"the image {facts.image} is not on {host.name}: the throwaway "
                      "containers of the copy need it")
    return services, [("compose", f"{' '.join(facts.compose_cmd)} -f {path}: services "
                                  f"{', '.join(services)}; {vol} is external and mounted by "
                                  f"{svc}; image {facts.image}")]


def recorded_run(host: Host, facts: RebuildFacts, dump: DumpInfo, new_run: bool,
                  ) -> tuple[RunState | None, RunState | None]:
    """(the run to continue, the run set aside by --new-run) from the host's state file."""
    recorded = parse_state(facts.state_text)
    vol = host.volumes.postgres
    if recorded is None:
        return None, None
    if new_run:
        return None, recorded
    if recorded.volume and recorded.volume != vol:
        raise refuse(f"an unfinished rebuild of another volume ({recorded.volume}) is "
                      f"recorded: {recorded.describe()}", "nothing was changed; finish it "
                      "with the inventory it was started with, or add --new-run to set it aside")
    if recorded.backup_sha256 != dump.sha256:
        name = backup_name(recorded.backup, host) or shell.quote(recorded.backup)
        raise refuse(
            f"an unfinished rebuild of {vol} is recorded: {recorded.describe()}, with the "
            f"backup {recorded.backup} (sha256 {recorded.backup_sha256[:12]}…), not "
            f"{dump.source} (sha256 {dump.sha256[:12]}…)",
            f"nothing was changed; run again with --file={name} to finish it, or add "
            "--new-run to set it aside and start over with this backup")
    return recorded, None


def check_volume(host: Host, facts: RebuildFacts, spec: VolumeSpec | None,
                  services: tuple[str, ...], fresh: bool,
                  keep: str | None) -> list[tuple[str, str]]:
    """The volume can be deleted and recreated, and there is room to keep its data."""
    vol = host.volumes.postgres
    if spec is None or spec.driver != "local" or spec.options:
        what = f"driver {spec.driver}, options {spec.options}" if spec else "unreadable"
        raise refuse(f"the volume {vol} is not a plain local volume ({what}); rebuild-volume "
                      "only deletes and recreates plain local volumes")
    label = project_label(host.compose.project)
    strangers = [u.container for u in facts.volume_users
                 if u.project != label or u.service not in services]
    if strangers:
        raise refuse(f"the volume {vol} is also used by {', '.join(strangers)}, which compose "
                      "down would not stop (it could not be deleted)",
                      "nothing was stopped or changed; remove those containers first")
    checks = [("volume", f"{vol}: plain local volume, used only by the stack")]
    if keep is None:
        return checks
    if facts.keep_exists and fresh:
        raise refuse(f"a volume named {keep} exists already", "run again in a second")
    if facts.size_kb is None or facts.avail_kb is None:
        raise refuse(f"cannot measure the volume {vol} and the free space beside it: "
                      f"{facts.measure_error or 'no answer'}")
    need = facts.size_kb + facts.size_kb // 20 + DISK_MARGIN_KB
    where = facts.docker_root or "docker's data root"
    held, free, needed = (units.size(kb * 1024) for kb in (facts.size_kb, facts.avail_kb, need))
    if facts.avail_kb < need:
        raise refuse(f"not enough disk to keep the old data: {vol} holds {held}, "
                      f"the copy needs {needed} free under {where}, {free} "
                      "are free", "nothing was stopped or changed; free some space, or pass "
                      "--no-keep-old to rebuild without keeping the old data")
    return [*checks, ("disk", f"{vol} holds {held}; {free} free "
                              f"under {where} (the copy needs {needed})")]

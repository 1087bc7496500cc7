"""Health of the stack and the backups, as lists of checks."""

from __future__ import annotations

from aimms_ops.core import units
from aimms_ops.core.checks import Check, State
from aimms_ops.host import shell
from aimms_ops.host.compose import compose_volumes, config_text
from aimms_ops.host.events import Facts
from aimms_ops.inventory.connected import (
    HostRemote,
    compose_command,
    facts_args,
    start_command,
)
from aimms_ops.inventory.model import Host


def gather_facts(remote: HostRemote) -> Facts:
    """The host program's ``facts`` of the stack."""
    return remote.program_facts("facts", *facts_args(remote.host))


def log_command(facts: dict[str, str], host: Host) -> str:
    """The command that shows the postgres container's last lines of log on this host:
    ``docker logs`` with the container's real name, or compose's logs when none exists."""
    name = facts.get("container.name") or facts.get("container.id", "")[:12]
    if name:
        return shell.join(["docker", "logs", "--tail", "50", name])
    return compose_command(facts, host, "logs", "--tail", "50", host.compose.postgres_service)


def connection_checks(facts: dict[str, str], host: Host, *, fingerprint: str) -> list[Check]:
    """The rows of ``fab check``, computed from the host's facts (pure)."""
    ok, crit = State.OK, State.CRITICAL
    rows = [Check("ssh", ok, f"{facts.get('ssh.user', '?')}@{facts.get('ssh.hostname', '?')}, "
                  f"host key {fingerprint}")]
    if facts.get("docker.ok") == "1":
        rows.append(Check("docker", ok, f"engine {facts.get('docker.version', '?')}"))
    else:
        rows.append(Check("docker", crit, facts.get("docker.error", "docker not reachable"),
                          "start the Docker daemon, or add the login user to the docker group"))
    cfile = host.compose.file_path
    if facts.get("compose.file_exists") != "1":
        rows.append(Check("compose project", crit, f"{cfile} not found",
                          "fix compose.project_dir / compose.file in the inventory"))
    elif not facts.get("compose.cmd"):
        rows.append(Check("compose project", crit, "neither `docker compose` nor "
                          "`docker-compose` is installed", "install Docker Compose on the host"))
    elif facts.get("compose.config_ok") != "1":
        rows.append(Check("compose project", crit,
                          f"{cfile}: {facts.get('compose.config_error', 'invalid')}",
                          "fix the compose file"))
    else:
        rows.append(Check("compose project", ok,
                          f"{host.compose.project} ({cfile}, {facts['compose.cmd']})"))
    cid = facts.get("container.id", "")
    service = host.compose.postgres_service
    if not cid:
        rows.append(Check("postgres container", crit,
                          f"no container for service {service!r} of project "
                          f"{host.compose.project!r}",
                          f"start it: {start_command(facts, host)}"))
    elif facts.get("container.state") != "running":
        rows.append(Check("postgres container", crit,
                          f"{facts.get('container.name', cid)} is "
                          f"{facts.get('container.state', 'not running')}",
                          f"start it: {start_command(facts, host)}"))
    else:
        rows.append(Check("postgres container", ok,
                          f"{facts.get('container.name')} ({cid[:12]}), running"))
    if facts.get("postgres.ready") == "1":
        rows.append(Check("postgres accepting connections", ok,
                          facts.get("postgres.ready_detail", "")))
    else:
        rows.append(Check("postgres accepting connections", crit,
                          facts.get("postgres.ready_detail") or "container not running",
                          f"see the container's log: {log_command(facts, host)}"))
    decls = compose_volumes(config_text(facts))
    for vol in host.volumes.names():
        decl = decls.get(vol)
        if facts.get(f"volume.{vol}.exists") != "1":
            rows.append(Check(f"volume {vol}", crit, "does not exist",
                              f"docker volume create {vol} (then restore a backup)"))
        elif decl is None:
            rows.append(Check(f"volume {vol}", crit, "exists, but the compose file does not use it",
                              "declare it in the compose file with external: true"))
        elif not decl.external:
            rows.append(Check(f"volume {vol}", crit,
                              "exists, but is not declared external: `down -v` would delete it",
                              "declare it external: true in the compose file"))
        else:
            used = facts.get(f"volume.{vol}.used_by") or "no container"
            rows.append(Check(f"volume {vol}", ok, f"exists, external, used by {used}"))
    if facts.get("backup_dir.exists") != "1":
        rows.append(Check("backup dir", crit, f"{host.backup_dir} does not exist",
                          "run: fab install-backups"))
    else:
        avail = int(facts.get("backup_dir.avail_kb", "0") or 0)
        writable = facts.get("backup_dir.writable") == "1"
        state = ok if writable else crit
        detail = f"{host.backup_dir}, {units.size(avail * 1024)} free"
        rows.append(Check("backup dir", state, detail if writable else detail + ", not writable",
                          "" if writable else f"chown the directory to {facts.get('ssh.user')}"))
    return rows


def check(remote: HostRemote) -> list[Check]:
    """Connect-time checks of the host: ssh, docker, compose, postgres, volumes, backup dir."""
    facts = gather_facts(remote)
    return connection_checks(facts, remote.host, fingerprint=remote.server_key_fingerprint)

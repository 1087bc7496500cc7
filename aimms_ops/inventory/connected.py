"""A host of the inventory, connected: the transport (:mod:`aimms_ops.host`) with what the
inventory says of the host, for the capabilities that need both."""

from __future__ import annotations

from fabric import Connection

from aimms_ops.host import shell
from aimms_ops.host.remote import Remote
from aimms_ops.host.ssh import SshTarget, connect, resolve
from aimms_ops.inventory.model import Host


class HostRemote(Remote):
    """One host of the inventory, connected and verified; ``host`` is its inventory entry."""

    def __init__(self, host: Host, conn: Connection, target: SshTarget) -> None:
        super().__init__(host.name, conn, target)
        self.host = host


def open_host(host: Host) -> HostRemote:
    """Connect to ``host`` (resolved through ssh_config, host key verified)."""
    target = resolve(host.name, host.ssh_config)
    conn = connect(target, accept_new=host.accept_new_host_key)
    return HostRemote(host, conn, target)


def facts_args(host: Host, *, config: bool = True) -> list[str]:
    """The arguments of the host program's ``facts`` for ``host``; without ``config``,
    the facts of ``compose config`` are left out (0.3 s of the host's CPU with compose
    v1), for a caller that reads only the container, the cluster and the disk."""
    return [
        *(() if config else ("--no-config",)),
        host.compose.project_dir, host.compose.file_path, host.compose.project,
        host.compose.postgres_service, host.postgres.superuser, host.backup_dir,
        *host.volumes.names(),
    ]


def compose_command(facts: dict[str, str], host: Host, *args: str) -> str:
    """A copy-pasteable compose command for the stack: the host's compose (v1's
    ``docker-compose`` or v2's ``docker compose``), its file and its project."""
    cmd = (facts.get("compose.cmd") or "docker compose").split()
    return shell.join([*cmd, "-f", host.compose.file_path, "-p", host.compose.project, *args])


def start_command(facts: dict[str, str], host: Host) -> str:
    """The command that starts the postgres service of the stack on this host."""
    return compose_command(facts, host, "up", "-d", host.compose.postgres_service)

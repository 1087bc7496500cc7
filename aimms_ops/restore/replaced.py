"""The databases a restore set aside: listed, swapped back in, dropped (replaced.sh)."""

from __future__ import annotations

from dataclasses import dataclass

from aimms_ops.core.errors import OpsError
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.restore.source import db_name


@dataclass(frozen=True)
class SetAside:
    name: str  # aimms_ops_old_STAMP_DIGEST
    original: str
    stamp: str  # YYYYmmdd_HHMMSS, UTC
    size: int

    @property
    def when(self) -> str:
        s = self.stamp
        return f"{s[0:4]}-{s[4:6]}-{s[6:8]} {s[9:11]}:{s[11:13]}:{s[13:15]} UTC"


def _run(remote: HostRemote, mode: str, *args: str) -> tuple[list[str], list[str]]:
    """The host's messages (``aimms-ops:`` lines) and its output lines."""
    host = remote.host
    res = remote.run_script("replaced.sh", host.compose.project, host.compose.postgres_service,
                            host.postgres.superuser, host.layout.cluster_lock,
                            str(host.lock_timeout), mode, *args)
    if not res.ok:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        msg = lines[-1].removeprefix("aimms-ops: ") if lines else f"exit {res.rc}"
        raise OpsError(f"{mode} on {remote.name} failed: {msg}",
                       "nothing was changed" if mode != "drop-aside" else "see fab status")
    return ([ln.removeprefix("aimms-ops: ") for ln in res.stderr.splitlines()
             if ln.startswith("aimms-ops: ")], res.stdout.splitlines())


def set_aside(remote: HostRemote) -> list[SetAside]:
    """The databases restores set aside, newest first, with their sizes."""
    sizes = _sizes(remote)
    out = []
    for line in _run(remote, "aside")[1]:
        parts = line.split(" ")
        if len(parts) == 3:
            name = db_name(bytes.fromhex(parts[0]))
            out.append(SetAside(name, db_name(bytes.fromhex(parts[1])), parts[2],
                                sizes.get(name, 0)))
    return out


def _sizes(remote: HostRemote) -> dict[str, int]:
    from aimms_ops.restore.plan import container_of

    res = remote.run(["docker", "exec", container_of(remote), "psql", "-X", "-A", "-t",
                      "-U", remote.host.postgres.superuser, "-d", "template1", "-c",
                      "SELECT datname || ' ' || pg_database_size(oid) FROM pg_database "
                      "WHERE datname LIKE 'aimms_ops_old_%'"], what="psql")
    out = {}
    for line in res.stdout.splitlines():
        name, _, size = line.rpartition(" ")
        if size.isdigit():
            out[name] = int(size)
    return out


def undo(remote: HostRemote) -> list[str]:
    return _run(remote, "undo")[0]


def drop(remote: HostRemote, names: list[str]) -> list[str]:
    return _run(remote, "drop-aside", *(n.encode().hex() for n in names))[0]

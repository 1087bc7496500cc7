"""The databases a restore set aside: listed, swapped back in, dropped (the host program's
``replaced``, its events)."""

from __future__ import annotations

from dataclasses import dataclass

from aimms_ops.core.errors import OpsError
from aimms_ops.host import events
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


def _run(remote: HostRemote, mode: str, *args: str) -> events.Events:
    """The host program's ``replaced MODE``: its events (notes, the aside list)."""
    host = remote.host
    res = remote.run_program("replaced", host.compose.project, host.compose.postgres_service,
                             host.postgres.superuser, host.layout.cluster_lock,
                             str(host.lock_timeout), mode, *args)
    found = events.parse(res.stdout)
    if not res.ok:
        error = found.last("error")
        msg = str(error.get("text", "")) if error else \
            res.last_error_line().removeprefix("aimms-ops: ")
        raise OpsError(f"{mode} on {remote.name} failed: {msg or f'exit {res.rc}'}",
                       "nothing was changed" if mode != "drop-aside" else "see fab status")
    return found


def _notes(found: events.Events) -> list[str]:
    """What each step did (the swap's ``note``, ``replaced``, ``undone`` events)."""
    return [e["text"] for e in found.all if isinstance(e.get("text"), str)
            and e["event"] not in ("wait", "error", "facts")]


def set_aside(remote: HostRemote) -> list[SetAside]:
    """The databases restores set aside, newest first, with their sizes."""
    sizes = _sizes(remote)
    facts = events.facts_of(_run(remote, "aside"), "aside") or {}
    rows = facts.get("set_aside")
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str)
                                                for k in ("name", "original", "stamp")):
            continue
        name = db_name(bytes.fromhex(row["name"]))
        out.append(SetAside(name, db_name(bytes.fromhex(row["original"])), row["stamp"],
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
    return _notes(_run(remote, "undo"))


def drop(remote: HostRemote, names: list[str]) -> list[str]:
    return _notes(_run(remote, "drop-aside", *(n.encode().hex() for n in names)))

"""The backups on the host and in the local download folder, and the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import SHA_RE, BackupFile, validate_name
from aimms_ops.core.retention import NAME_RE, parse_pin
from aimms_ops.inventory.connected import HostRemote


def parse_listing(facts: Mapping[str, Any], backup_dir: str) -> list[BackupFile] | None:
    """The backups of the host program's list-backups (its facts); None when the backup
    dir does not exist."""
    if facts.get("dir.exists") == "0":
        return None
    out = []
    rows = facts.get("backups")
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        name, sha, pin = row.get("name"), row.get("sha256"), row.get("pin")
        mtime, size = row.get("mtime"), row.get("size")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or \
                not isinstance(mtime, int | float) or not isinstance(size, int):
            continue
        out.append(BackupFile(
            name=name, path=f"{backup_dir.rstrip('/')}/{name}", size=size,
            sha256=sha if isinstance(sha, str) and SHA_RE.fullmatch(sha) else None,
            created=datetime.fromtimestamp(int(mtime), tz=UTC), location="remote",
            pin=parse_pin(pin) if isinstance(pin, str) and pin else None,
        ))
    out.sort(key=newest_first, reverse=True)
    return out


def newest_first(b: BackupFile) -> tuple[datetime, str]:
    """The order of a listing (reversed): by the file's time, then by its name, so that
    files of the same time (touched, copied at once) still list the newest-named first."""
    return b.created, b.name


def list_remote(remote: HostRemote) -> list[BackupFile]:
    """The backups on the host, newest first (empty when the dir does not exist)."""
    facts = remote.program_facts("list-backups", remote.host.backup_dir)
    return parse_listing(facts, remote.host.backup_dir) or []


def list_local(folder: Path) -> list[BackupFile]:
    """The backups already downloaded into ``folder``, newest first."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if not NAME_RE.fullmatch(p.name) or not p.is_file():
            continue
        sha = None
        side = p.with_name(p.name + ".sha256")
        if side.is_file():
            first = side.read_text(errors="replace").split()[:1]
            sha = first[0] if first and SHA_RE.fullmatch(first[0]) else None
        st = p.stat()
        out.append(BackupFile(name=p.name, path=str(p.resolve()), size=st.st_size, sha256=sha,
                              created=datetime.fromtimestamp(st.st_mtime, tz=UTC),
                              location="local"))
    out.sort(key=newest_first, reverse=True)
    return out


def pick(backups: list[BackupFile], name: str) -> BackupFile:
    """The backup called ``name`` from a listing (newest first).

    ``latest`` is the newest regular backup (scheduled or fab backup), never a safety
    copy: after a restore it is still the backup the operator means.
    """
    if name == "latest":
        regular = [b for b in backups if not b.safety]
        if regular:
            return regular[0]
        if backups:
            raise OpsError("there is no regular backup on the host, only safety copies "
                           f"({', '.join(b.name for b in backups[:3])})",
                           "name one with --file=NAME, or make a backup: fab backup")
        raise OpsError("there are no backups on the host yet", "make one: fab backup")
    validate_name(name)
    for b in backups:
        if b.name == name:
            return b
    raise OpsError(f"no backup named {name} on the host", "see fab list-backups")


def read_log(remote: HostRemote, lines: int) -> str:
    """The last ``lines`` lines of the backup log on the host."""
    if not 1 <= lines <= 100_000:
        raise OpsError(f"--lines must be between 1 and 100000, got {lines}")
    res = remote.run(["tail", "-n", str(lines), "--", remote.host.log_file], what="tail")
    if not res.ok:
        raise OpsError(f"cannot read {remote.host.log_file} on {remote.name}: "
                       f"{res.last_error_line()}", "has a backup run yet? fab install-backups")
    return res.stdout


def follow_log(remote: HostRemote, lines: int, on_line: Callable[[str], None]) -> None:
    """The last ``lines`` lines of the backup log, then every line added to it, each to
    ``on_line`` as it comes (``tail -F``: a log rotated or created later is followed
    too), until the connection ends or Ctrl-C."""
    if not 1 <= lines <= 100_000:
        raise OpsError(f"--lines must be between 1 and 100000, got {lines}")
    res = remote.run(["tail", "-n", str(lines), "-F", "--", remote.host.log_file],
                     on_stdout=on_line, what="tail -F")
    if not res.ok:
        raise OpsError(f"cannot follow {remote.host.log_file} on {remote.name}: "
                       f"{res.last_error_line()}")


def good_backups(backups: list[BackupFile] | None) -> list[BackupFile]:
    """The regular backups with a recorded checksum, newest first (no safety copies)."""
    return sorted((b for b in backups or [] if b.sha256 and not b.safety),
                  key=newest_first, reverse=True)

"""The backups on the host and in the local download folder, and the log.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import SHA_RE, BackupFile, validate_name
from aimms_ops.core.retention import NAME_RE, Pin, parse_pin
from aimms_ops.inventory.connected import HostRemote


def parse_listing(text: str, backup_dir: str) -> list[BackupFile] | None:
    """Parse the host program's list-backups; None when the backup dir does not exist."""
    if text.strip() == "missing":
        return None
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) not in (4, 5) or not NAME_RE.fullmatch(parts[2]):
            continue
        mtime, size, name, sha = parts[:4]
        out.append(BackupFile(
            name=name, path=f"{backup_dir.rstrip('/')}/{name}", size=int(size),
            sha256=sha if SHA_RE.fullmatch(sha) else None,
            created=datetime.fromtimestamp(int(mtime), tz=UTC), location="remote",
            pin=_pin_field(parts[4]) if len(parts) == 5 else None,
        ))
    out.sort(key=newest_first, reverse=True)
    return out


def newest_first(b: BackupFile) -> tuple[datetime, str]:
    """The order of a listing (reversed): by the file's time, then by its name, so that
    files of the same time (touched, copied at once) still list the newest-named first."""
    return b.created, b.name


def _pin_field(field: str) -> Pin | None:
    if field in ("", "-"):
        return None
    try:
        return parse_pin(base64.b64decode(field).decode("utf-8", "replace"))
    except (binascii.Error, ValueError):
        return Pin(reason="unreadable pin file")


def list_remote(remote: HostRemote) -> list[BackupFile]:
    """The backups on the host, newest first (empty when the dir does not exist)."""
    res = remote.run_program("list-backups", remote.host.backup_dir)
    if not res.ok:
        raise OpsError(f"cannot list backups on {remote.name}: {res.last_error_line()}")
    return parse_listing(res.stdout, remote.host.backup_dir) or []


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

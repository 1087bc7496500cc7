"""Download a backup: resumable through a ``.part`` file, verified against its sha256.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimms_ops.core import units
from aimms_ops.core.errors import ConnectionLost, OpsError
from aimms_ops.core.names import SHA_RE, BackupFile
from aimms_ops.host import shell
from aimms_ops.host.remote import Remote
from aimms_ops.host.streams import DiskFile


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    seconds: float
    resumed_from: int
    already_present: bool = False


def _remote_sha256(remote: Remote, backup: BackupFile) -> str:
    if backup.sha256:
        return backup.sha256
    res = remote.run(["sha256sum", "--", backup.path], what="sha256sum")
    digest = res.stdout.split()[:1]
    if not res.ok or not digest or not SHA_RE.fullmatch(digest[0]):
        raise OpsError(f"cannot checksum {backup.name} on {remote.name}: "
                       f"{res.last_error_line()}")
    return digest[0]


def _hash_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h


class _HashingWriter:
    """The ``.part`` file of a download (``streams.FileSink``): what is written to it, or
    appended to it by ``ssh`` and read back, is hashed on the way."""

    def __init__(self, disk: DiskFile, path: Path, h) -> None:
        self.disk = disk
        self.path = path
        self.h = h

    def write(self, data: bytes) -> int:
        self.h.update(data)
        try:
            return self.disk.write(data)
        except OSError as exc:
            # An OpsError, so that the stream does not take it for a network error.
            raise _local_error(exc, "cannot write the download") from None

    def file(self) -> tuple[str, int]:
        return str(self.path), self.disk.fd

    def appended(self, data: bytes) -> None:
        self.h.update(data)
        try:
            self.disk.grown(len(data))
        except OSError as exc:
            raise _local_error(exc, "cannot write the download") from None


def _local_error(exc: OSError, what: str) -> OpsError:
    """A local file system error of a download as one line: what, where, why, the fix."""
    where = str(exc.filename or "")
    if len(where) > 80:
        where = where[:77] + "..."
    return OpsError(f"{what}: {where + ': ' if where else ''}{exc.strerror or exc}",
                    "free space or fix the permissions there, or choose another --dest; "
                    "then run the same download again: it resumes")


def download(remote: Remote, backup: BackupFile, dest: Path, *,
             progress_factory: Callable[[int, int], object] | None = None,
             ) -> Download:
    """Copy ``backup`` into ``dest`` through a ``.part`` file that a rerun resumes.

    The result is verified against the host's sha256 before it is renamed into
    place; files are 0600. ``progress_factory(total, initial)`` returns a context
    manager yielding an ``advance(n)`` callable.
    """
    expected = _remote_sha256(remote, backup)
    try:
        return _download(remote, backup, dest, expected, progress_factory)
    except OSError as exc:
        raise _local_error(exc, "cannot write the download") from None


def _download(remote: Remote, backup: BackupFile, dest: Path, expected: str,
              progress_factory: Callable[[int, int], object] | None) -> Download:
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = dest / backup.name
    part = dest / (backup.name + ".part")
    if final.is_file() and final.stat().st_size == backup.size:
        if _hash_file(final).hexdigest() == expected:
            _write_sidecar(final, expected)
            return Download(final, backup.size, expected, 0.0, 0, already_present=True)
    held = part.stat().st_size if part.is_file() else 0
    need = backup.size - (held if held <= backup.size else 0)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise OpsError(f"not enough space in {dest} for {backup.name}: it needs "
                       f"{units.size(need)} more, {units.size(free)} is free",
                       "free space there or choose another --dest; then run the same "
                       "download again")
    started = time.monotonic()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        # Held by whatever writes into it (the ssh that writes a download too) as long
        # as it does: two downloads never write into one .part.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        offset = os.fstat(fd).st_size
        if offset > backup.size:
            os.ftruncate(fd, 0)
            offset = 0
        h = _hash_file(part) if offset else hashlib.sha256()
    except BlockingIOError:
        os.close(fd)
        raise OpsError(f"another download is writing {part}",
                       "wait until it ends (or stop it), then run the same download "
                       "again: it resumes") from None
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "ab") as fh:
        writer = _HashingWriter(DiskFile(fh), part, h)
        cmd = shell.join(["tail", "-c", f"+{offset + 1}", "--", backup.path])
        if offset < backup.size:
            ctx = progress_factory(backup.size, offset) if progress_factory else None
            try:
                if ctx is not None:
                    with ctx as advance:  # type: ignore[attr-defined]
                        res = remote.stream_from_remote(cmd, writer, progress=advance)
                else:
                    res = remote.stream_from_remote(cmd, writer)
            except ConnectionLost as exc:
                raise ConnectionLost(f"download of {backup.name} stopped: {exc.message}",
                                     f"run the same download again: it resumes from {part}",
                                     code=exc.code) from None
            if not res.ok:
                raise OpsError(f"download of {backup.name} failed: {res.last_error_line()}",
                               "run the same download again: it resumes")
        fh.flush()
        os.fsync(fh.fileno())
    size = part.stat().st_size
    if size != backup.size:
        raise OpsError(f"download of {backup.name} is incomplete ({size} of {backup.size} "
                       "bytes)", "run the same download again: it resumes")
    digest = h.hexdigest()
    if digest != expected:
        part.unlink()
        raise OpsError(f"download of {backup.name} does not match its sha256 (got {digest[:12]}…, "
                       f"expected {expected[:12]}…); the partial file was removed",
                       "run the download again; if it fails again, run fab verify on the host")
    os.replace(part, final)
    _write_sidecar(final, expected)
    return Download(final, size, expected, time.monotonic() - started, offset)


def _write_sidecar(final: Path, digest: str) -> None:
    side = final.with_name(final.name + ".sha256")
    tmp = side.with_name(side.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{digest}  {final.name}\n")
    os.replace(tmp, side)
    os.chmod(final, 0o600)

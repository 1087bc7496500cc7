"""Where a dump comes from and what it is: a local file or a backup on the host, read once.

Before anything is touched a dump is checked (recorded sha256, the whole gzip stream)
and read as psql reads it by the dump scanner (``aimms_ops.dump``): header, databases,
roles, the preface of properties, the completion marker. On the host the same scanner
runs (``inspect-dump.sh``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aimms_ops.backup.names import NAME_HINT, SHA_RE
from aimms_ops.backup.retention import NAME_RE
from aimms_ops.dump.facts import FactsFeeder
from aimms_ops.errors import OpsError, shown
from aimms_ops.remote import Progress, Remote

#: Bytes read from a local dump per step, and the most one decompression step yields.
READ_CHUNK = 1024 * 1024
INFLATE_PIECE = 1024 * 1024


def db_name(raw: bytes) -> str:
    """A name from the dump as text; bytes that are not UTF-8 survive the round trip."""
    return raw.decode("utf-8", "surrogateescape")


def conninfo(db: str) -> str:
    """``psql -d`` for database ``db`` whatever it holds (a name with ``=`` would be
    taken for a connection string)."""
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def db_hex(name: str) -> str:
    """A name as the host scripts take it: hex, whatever characters it holds."""
    return name.encode("utf-8", "surrogateescape").hex()


@dataclass(frozen=True)
class DumpInfo:
    """What a dump file is, found by reading it once, before anything is touched."""

    source: str  # the local path, or the path on the host
    location: str  # "local" or "remote"
    size: int
    format: str  # "gz" or "plain"
    sha256: str
    sha256_recorded: str | None
    databases: tuple[str, ...]
    problems: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    #: Databases whose own properties the dump carries (its aimms-ops preface).
    properties: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(size: int, sha: str, recorded: str | None, stream_ok: bool, stream_error: str,
           header: bool, complete: bool, fmt: str) -> tuple[str, ...]:
    problems = []
    if size == 0:
        problems.append("the file is empty")
    if recorded is not None and recorded != sha:
        problems.append(f"sha256 mismatch: the file is {sha[:16]}…, its .sha256 says "
                        f"{recorded[:16]}…")
    if not stream_ok:
        problems.append(f"the gzip stream is damaged or truncated ({stream_error})"
                        if fmt == "gz" else f"cannot read the file ({stream_error})")
    elif not header:
        problems.append("not a pg_dumpall dump: no cluster dump header")
    elif not complete:
        problems.append("the dump is incomplete: its completion marker is missing")
    return tuple(problems)


def inspect_local(path: Path, progress: Progress | None = None) -> DumpInfo:
    """Read a local dump once: checksum, decompress, and scan it as psql would read it."""
    if not path.is_file():
        raise OpsError(f"no such file: {path}", "give a local .sql.gz or .sql, or the name of "
                       "a backup on the host (see fab list-backups)")
    fmt = "gz" if path.name.endswith(".gz") else "plain"
    recorded = _recorded_sha(path.with_name(path.name + ".sha256"))
    digest = hashlib.sha256()
    inflater = _Inflater() if fmt == "gz" else None
    scan = FactsFeeder()
    stream_ok, stream_error = True, ""
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            size += len(chunk)
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
            if not stream_ok:
                continue
            try:
                for data in (inflater.feed(chunk) if inflater is not None else [chunk]):
                    scan.feed(data)
            except zlib.error as exc:
                stream_ok, stream_error = False, str(exc)
    if stream_ok and inflater is not None and not inflater.eof:
        stream_ok, stream_error = False, "unexpected end of file"
    facts = scan.close()
    sha = digest.hexdigest()
    problems = _check(size, sha, recorded, stream_ok, stream_error,
                      facts.header and not facts.before_header, facts.complete, fmt)
    return DumpInfo(str(path), "local", size, fmt, sha, recorded,
                    tuple(dict.fromkeys(db_name(d) for d in facts.databases)), problems,
                    tuple(db_name(r) for r in facts.roles),
                    tuple(db_name(d) for d in facts.preface))


class _Inflater:
    """Decompresses a (possibly multi-member) gzip stream in pieces of bounded size.

    However well the dump compresses, no piece is larger than ``INFLATE_PIECE``: the
    memory of a check does not grow with the file or its compression ratio.
    """

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    @property
    def eof(self) -> bool:
        return self._z.eof

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data:
            out = self._z.decompress(data, INFLATE_PIECE)
            if out:
                yield out
            if self._z.eof:
                data = self._z.unused_data
                if data:  # the next gzip member
                    self._z = zlib.decompressobj(wbits=31)
            else:
                data = self._z.unconsumed_tail
        while not self._z.eof and (out := self._z.decompress(b"", INFLATE_PIECE)):
            yield out


def _recorded_sha(side: Path) -> str | None:
    if not side.is_file():
        return None
    first = side.read_text(errors="replace").split()[:1]
    return first[0] if first and SHA_RE.fullmatch(first[0]) else "unreadable"


def inspect_remote(remote: Remote, path: str) -> DumpInfo:
    """Check a dump that is already on the host, on the host (the same scanner)."""
    res = remote.run_script("inspect-dump.sh", path)
    facts = _multi(res.stdout)
    if facts.get("exists") == ["0"]:
        raise OpsError(f"no such backup on {remote.name}: {path}", "see fab list-backups")
    if not res.ok:
        raise OpsError(f"cannot inspect {path} on {remote.name}: {res.last_error_line()}")
    one = {k: v[-1] for k, v in facts.items()}
    recorded = one.get("sha256_recorded") or None
    if recorded is not None and not SHA_RE.fullmatch(recorded):
        recorded = "unreadable"
    size = int(one.get("size", "0"))

    def names(key: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(db_name(bytes.fromhex(h)) for h in facts.get(key, [])))

    problems = _check(size, one.get("sha256", ""), recorded, one.get("stream") == "ok",
                      "decompression failed", one.get("header") == "1",
                      one.get("complete") == "1", one.get("format", "gz"))
    return DumpInfo(path, "remote", size, one.get("format", "gz"), one.get("sha256", ""),
                    recorded, names("db"), problems, names("role"), names("preface"))


def _multi(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


def local_dump(file: str) -> Path | None:
    """``file`` as an existing local file, or None (not a path, or no such file).

    Never raises: a name too long for the file system or an unknown ``~user`` is
    simply not a local file.
    """
    try:
        local = Path(file).expanduser()
        return local if local.is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None


def resolve_source(remote: Remote, file: str) -> DumpInfo:
    """``file`` is a local path (.sql.gz or .sql), or the name of a backup on the host."""
    if not file:
        raise OpsError("--file is required", "give a local dump or a backup name, or latest")
    local = local_dump(file)
    if local is not None:
        return inspect_local(local)
    if NAME_RE.fullmatch(file):
        return inspect_remote(remote, f"{remote.host.backup_dir.rstrip('/')}/{file}")
    if "/" in file or file.endswith((".sql", ".sql.gz", ".gz")):
        raise OpsError(f"no such file: {shown(file)}", "give a local .sql.gz or .sql, or the "
                       "name of a backup on the host (see fab list-backups)")
    raise OpsError(f"not a local file nor a backup name: {shown(file)}", NAME_HINT)

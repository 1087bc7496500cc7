"""Where a dump comes from and what it is: a local file or a backup on the host, read once.

Before anything is touched a dump is checked (recorded sha256, the whole gzip or zstd
stream) and read as psql reads it by the dump scanner (``aimms_ops.dump``): header,
databases, roles, the preface of properties, the completion marker. On the host the same
scanner runs (the host program's ``inspect-dump``, its facts one event).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.names import (
    DUMP_FILE_HINT,
    FORMAT_COMPRESSION,
    NAME_HINT,
    SHA_RE,
    dump_format,
)
from aimms_ops.core.retention import NAME_RE
from aimms_ops.dump.facts import FactsFeeder
from aimms_ops.host import events
from aimms_ops.host.remote import Progress, Remote
from aimms_ops.inventory.connected import HostRemote

#: Bytes read from a local dump per step, and the most one decompression step yields.
READ_CHUNK = 1024 * 1024
INFLATE_PIECE = 1024 * 1024
#: Decompressed pieces waiting for the scanner, at most (memory: x INFLATE_PIECE).
SCAN_QUEUE = 8


def _inflate_module() -> tuple[ModuleType, tuple[type[Exception], ...]]:
    """ISA-L's zlib (PyPI isal: 2.5x zlib's speed on a dump here), else zlib."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (isal_zlib.error, zlib.error)  # type: ignore[return-value]


INFLATE, INFLATE_ERRORS = _inflate_module()


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
    format: str  # "gz", "zst" or "plain" (names.dump_format)
    sha256: str
    sha256_recorded: str | None
    databases: tuple[str, ...]
    problems: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    #: Databases whose own properties the dump carries (its aimms-ops preface).
    properties: tuple[str, ...] = ()
    #: Bytes of the dump once decompressed (what a restore's progress counts on the host).
    raw_size: int | None = None

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
        kind = FORMAT_COMPRESSION.get(fmt)
        problems.append(f"the {kind} stream is damaged or truncated ({stream_error})"
                        if kind else f"cannot read the file ({stream_error})")
    elif not header:
        problems.append("not a pg_dumpall dump: no cluster dump header")
    elif not complete:
        problems.append("the dump is incomplete: its completion marker is missing")
    return tuple(problems)


def inspect_local(path: Path, progress: Progress | None = None) -> DumpInfo:
    """Read a local dump once: checksum, decompress, and scan it as psql would read it.

    One thread reads, hashes and decompresses (C code that lets go of the GIL) while
    this one scans the pieces: the check takes about as long as the slower of the two,
    not their sum.
    """
    if not path.is_file():
        raise OpsError(f"no such file: {path}", f"give {DUMP_FILE_HINT} (see fab list-backups)")
    fmt = dump_format(path.name)
    recorded = _recorded_sha(path.with_name(path.name + ".sha256"))
    scan = FactsFeeder()
    feeder = _Feeder(path, fmt, progress)
    feeder.start()
    try:
        while (piece := feeder.pieces.get()) is not None:
            scan.feed(piece)
    finally:
        feeder.stop()
    if feeder.error is not None:
        raise feeder.error
    facts = scan.close()
    problems = _check(feeder.size, feeder.sha256, recorded, feeder.stream_ok,
                      feeder.stream_error, facts.header and not facts.before_header,
                      facts.complete, fmt)
    return DumpInfo(str(path), "local", feeder.size, fmt, feeder.sha256, recorded,
                    tuple(dict.fromkeys(db_name(d) for d in facts.databases)), problems,
                    tuple(db_name(r) for r in facts.roles),
                    tuple(db_name(d) for d in facts.preface))


class LocalCheck:
    """``inspect_local`` of a file, started at once in its own thread.

    A task starts it before it connects, so that the check of a local dump and the
    connection (``ssh -G``, key exchange, authentication) overlap; ``result`` then
    waits for it, passing the bytes read so far on to ``progress``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read = 0
        self._lock = threading.Lock()
        self._info: DumpInfo | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _advance(self, n: int) -> None:
        with self._lock:
            self._read += n

    def _run(self) -> None:
        try:
            self._info = inspect_local(self.path, self._advance)
        except Exception as exc:  # noqa: BLE001  (raised again by result(), in the task)
            self._error = exc

    def result(self, progress: Progress | None = None) -> DumpInfo:
        shown = 0
        while True:
            self._thread.join(0.05)
            with self._lock:
                read = self._read
            if progress is not None and read > shown:
                progress(read - shown)
                shown = read
            if not self._thread.is_alive():
                break
        if self._error is not None:
            raise self._error
        assert self._info is not None
        return self._info


def start_local_check(file: str) -> LocalCheck | None:
    """The check of ``file`` started now, when it is a local dump; else None."""
    local = local_dump(file) if file else None
    return LocalCheck(local) if local is not None else None


class _Feeder(threading.Thread):
    """Reads a dump, hashes it and decompresses it, handing the pieces to ``pieces``.

    A damaged stream stops the pieces (``stream_ok`` False) but not the hash, which
    covers the whole file. ``None`` in ``pieces`` is the end.
    """

    def __init__(self, path: Path, fmt: str, progress: Progress | None) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.inflater = _inflater(fmt)
        self.progress = progress
        self.pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=SCAN_QUEUE)
        self.size = 0
        self.sha256 = ""
        self.stream_ok, self.stream_error = True, ""
        self.error: OSError | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        digest = hashlib.sha256()
        try:
            with self.path.open("rb") as fh:
                while (chunk := fh.read(READ_CHUNK)) and not self._stopped.is_set():
                    self.size += len(chunk)
                    digest.update(chunk)
                    if self.progress is not None:
                        self.progress(len(chunk))
                    if self.stream_ok:
                        self._inflate(chunk)
            if self.stream_ok and self.inflater is not None and not self.inflater.eof:
                self.stream_ok, self.stream_error = False, "unexpected end of file"
            self.sha256 = digest.hexdigest()
        except OSError as exc:
            self.error = exc
        finally:
            self._put(None)

    def _inflate(self, chunk: bytes) -> None:
        try:
            for data in (self.inflater.feed(chunk) if self.inflater is not None else [chunk]):
                self._put(data)
        except STREAM_ERRORS as exc:
            self.stream_ok, self.stream_error = False, str(exc)

    def _put(self, item: bytes | None) -> None:
        while not self._stopped.is_set():
            try:
                self.pieces.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        """The scanner is done (or failed): let the thread end, and wait for it."""
        self._stopped.set()
        self.join()


class _Inflater:
    """Decompresses a (possibly multi-member) gzip stream in pieces of bounded size.

    However well the dump compresses, no piece is larger than ``INFLATE_PIECE``: the
    memory of a check does not grow with the file or its compression ratio.
    """

    def __init__(self) -> None:
        self._z = INFLATE.decompressobj(wbits=31)

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
                    self._z = INFLATE.decompressobj(wbits=31)
            else:
                data = self._z.unconsumed_tail
        while not self._z.eof and (out := self._z.decompress(b"", INFLATE_PIECE)):
            yield out


class StreamError(ValueError):
    """A compressed stream that does not decompress (zstd's errors, as one type)."""


#: What a stream that does not decompress raises, whatever its format.
STREAM_ERRORS: tuple[type[Exception], ...] = (*INFLATE_ERRORS, StreamError)


class _ZstdInflater:
    """Decompresses a (possibly multi-frame) zstd stream in pieces of bounded size.

    zstandard's decompressobj yields all it can of the input it is given: the input goes
    in small slices, so no piece of output is much larger than ``INFLATE_PIECE``.
    """

    SLICE = 64 * 1024

    def __init__(self) -> None:
        import zstandard

        self._errors = zstandard.ZstdError
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._z = self._new()

    @property
    def eof(self) -> bool:
        return bool(self._z.eof)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        view = memoryview(chunk)
        for at in range(0, len(view), self.SLICE):
            data = bytes(view[at:at + self.SLICE])
            while data:
                if self._z.eof:  # the next zstd frame
                    self._z = self._new()
                try:
                    out = self._z.decompress(data)
                except self._errors as exc:
                    raise StreamError(str(exc)) from None
                for i in range(0, len(out), INFLATE_PIECE):
                    yield out[i:i + INFLATE_PIECE]
                data = self._z.unused_data if self._z.eof else b""


def _inflater(fmt: str) -> _Inflater | _ZstdInflater | None:
    """The decompressor of a dump format (None: plain SQL, read as it is)."""
    if fmt == "gz":
        return _Inflater()
    return _ZstdInflater() if fmt == "zst" else None


def _recorded_sha(side: Path) -> str | None:
    if not side.is_file():
        return None
    first = side.read_text(errors="replace").split()[:1]
    return first[0] if first and SHA_RE.fullmatch(first[0]) else "unreadable"


def inspect_remote(remote: Remote, path: str, *, full: bool = False) -> DumpInfo:
    """Check a dump that is already on the host, on the host (the same scanner). A backup
    whose bytes are those it recorded is only hashed, its facts those its backup recorded
    (``agent.dumpfacts``), unless ``full``: then it is read whole."""
    res = remote.run_program("inspect-dump", *(["--full"] if full else []), path)
    facts = events.facts_of(events.parse(res.stdout), "inspect-dump")
    if facts is not None and facts.get("exists") == "0":
        raise OpsError(f"no such backup on {remote.name}: {path}", "see fab list-backups")
    if facts is None or not res.ok:
        raise OpsError(f"cannot inspect {path} on {remote.name}: "
                       f"{res.last_error_line() or 'its report was cut short'}")
    recorded = events.text_of(facts, "sha256_recorded") or None
    if recorded is not None and not SHA_RE.fullmatch(recorded):
        recorded = "unreadable"
    size_text = events.text_of(facts, "size")
    size = int(size_text) if size_text.isdigit() else 0
    sha256 = events.text_of(facts, "sha256")

    def names(key: str) -> tuple[str, ...]:
        hexes = facts.get(key)
        return tuple(dict.fromkeys(db_name(bytes.fromhex(h)) for h in hexes
                                   if isinstance(h, str))) if isinstance(hexes, list) else ()

    fmt = events.text_of(facts, "format") or "gz"
    problems = _check(size, sha256, recorded, facts.get("stream") == "ok",
                      "decompression failed", facts.get("header") == "1",
                      facts.get("complete") == "1", fmt)
    raw = events.text_of(facts, "bytes")
    return DumpInfo(path, "remote", size, fmt, sha256, recorded, names("db"), problems,
                    names("role"), names("preface"), raw_size=int(raw) if raw.isdigit() else None)


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


def resolve_source(remote: HostRemote, file: str) -> DumpInfo:
    """``file`` is a local path (.sql.gz, .sql.zst or .sql), or the name of a backup on the
    host."""
    if not file:
        raise OpsError("--file is required", "give a local dump or a backup name, or latest")
    local = local_dump(file)
    if local is not None:
        return inspect_local(local)
    if NAME_RE.fullmatch(file):
        return inspect_remote(remote, f"{remote.host.backup_dir.rstrip('/')}/{file}")
    if "/" in file or file.endswith(".sql") or dump_format(file) != "plain":
        raise OpsError(f"no such file: {shown(file)}", f"give {DUMP_FILE_HINT} "
                       "(see fab list-backups)")
    raise OpsError(f"not a local file nor a backup name: {shown(file)}", NAME_HINT)

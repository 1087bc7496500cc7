"""The dump of a backup: ``docker exec … pg_dumpall | COMPRESSOR``, written, hashed and
tested in one pass.

The raw dump crosses docker exec's pipe once, straight into the compressor on the host
(igzip (ISA-L) when present, else pigz, else gzip, always the .gz format; or zstd with
compression zstd); the container only runs pg_dumpall. What the compressor writes is
read here once: written to the temporary file, hashed (sha256), and fed to the fastest
decompressor of its format, whose output is read to its end (what ``gzip -t`` does)
keeping the last bytes for the completion marker, and handed on to the dump reader
(``aimms-ops.pyz dump inspect``): what the backup holds, its databases and roles, is
recorded with it (``agent.dumpfacts``), so that a restore of it need not read it all
again before it starts. pg_dumpall's own exit status is reported on stderr (a pipe
would hide it).

Before the dump comes its preface (the properties of template1 and postgres, which a
plain pg_dumpall leaves out; the settings of ALTER ROLE ALL; the version of each
extension of each database), as comment lines that psql skips and aimms-ops' restore
reads (``aimms_ops.dump``); after it, the trailer that closes again the databases that
allow no connections (``agent.cluster``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from typing import IO, Callable, List, Optional

from aimms_ops.agent.cluster import SIDE_COPY_SQL

MARKER = b"-- PostgreSQL database cluster dump complete"
STATUS_PREFIX = "aimms-ops: pg_dumpall status "
CHUNK = 1 << 20

# What runs in the container, with sh: $1 the superuser, $2 $3 the side copies'
# patterns, $4..$6 the preface's SQL, $7 the trailer as a printf format (core.printf:
# Docker would turn a byte of a name that is not UTF-8 into U+FFFD). The databases'
# names are read in SQL_ASCII: psql would leave out a byte that is not UTF-8.
INNER = (
    'for db in template1 postgres; do\n'
    '    if p=$(pg_dump -U "$1" --create --schema-only --exclude-schema="*" "$db" '
    '2>/dev/null); then\n'
    '        printf -- "-- aimms-ops: properties of database %s '
    '(pg_dump --create --schema-only)\\n" "$db"\n'
    '        printf "%s\\n" "$p" | sed "s/^/-- | /"\n'
    '    fi\n'
    'done; '
    'printf -- "-- aimms-ops: settings of ALTER ROLE ALL\\n"\n'
    'psql -X -A -t -U "$1" -d template1 -c "$4"\n'
    'PGCLIENTENCODING=SQL_ASCII psql -X -A -t -U "$1" -d template1 -c "$5" | '
    'while IFS= read -r db; do\n'
    '    PGDATABASE=$db psql -X -A -t -U "$1" -c "$6"\n'
    'done; '
    'pg_dumpall -U "$1" --exclude-database="$2" --exclude-database="$3"; '
    'echo "' + STATUS_PREFIX + '$?" >&2; '
    'printf -- "$7"'
)
PREFACE_SQL = (
    "SELECT '-- aimms-ops: role all ' || encode(textsend(c), 'hex')"
    " FROM pg_db_role_setting, unnest(setconfig) c WHERE setrole = 0 AND setdatabase = 0",
    "SELECT datname FROM pg_database WHERE datallowconn AND " + SIDE_COPY_SQL
    + " AND datname !~ E'\\\\n'",
    "SELECT '-- aimms-ops: extension ' || encode(textsend(current_database()), 'hex')"
    " || ' ' || encode(textsend(extname), 'hex') || ' ' || extversion"
    " FROM pg_extension WHERE extname <> 'plpgsql'",
)


class Compressor:
    """The compressor (stdin to stdout) and the decompressor that tests what it wrote."""

    def __init__(self, name: str, level: int, argv: List[str], check: List[str]) -> None:
        self.name = name
        self.level = level
        self.argv = argv
        self.check = check


def pick(compression: str, gzip_level: int, zstd_level: int,
         want: str = "auto") -> Optional[Compressor]:
    """The compressor of ``compression`` on this host, or None when it is not installed:
    zstd for zstd (a thread per core); for gzip igzip (ISA-L; its levels are 0-3, a
    higher one becomes 3), else pigz, else gzip, or the one ``want`` names."""
    if compression == "zstd":
        if shutil.which("zstd") is None:
            return None
        return Compressor("zstd", zstd_level, ["zstd", "-q", "-T0", "-%d" % zstd_level, "-c"],
                          ["zstd", "-q", "-dc"])
    check = next((t for t in ("igzip", "pigz", "gzip") if shutil.which(t)), None)
    for tool in ("igzip", "pigz", "gzip"):
        if want not in ("auto", tool) or shutil.which(tool) is None or check is None:
            continue
        level = min(gzip_level, 3) if tool == "igzip" else gzip_level
        return Compressor(tool, level, [tool, "-c", "-%d" % level], [check, "-dc"])
    return None


class Outcome:
    """What the pipeline did: each stage's status and the facts of what was written."""

    def __init__(self) -> None:
        self.dump_status: Optional[int] = None  # docker exec's
        self.zip_status: Optional[int] = None
        self.check_status: Optional[int] = None
        self.pg_dumpall: Optional[int] = None  # pg_dumpall's own, from its stderr line
        self.write_error = ""
        self.errline = ""
        self.size = 0
        self.sha256 = ""
        self.tail = b""
        #: What the dump reader said of the decompressed stream (its ``facts`` event),
        #: or "" when it was not run or did not finish.
        self.facts = ""


def _keep_tail(stream: IO[bytes], keep: int, out: List[bytes],
               reader: "Optional[subprocess.Popen[bytes]]" = None) -> None:
    """Read ``stream`` to its end, keeping its last ``keep`` bytes; hand it on to the
    dump reader, if any (which is then dropped if it stops reading: it never fails the
    backup)."""
    tail = b""
    feed = reader.stdin if reader is not None else None
    while True:
        data = stream.read(CHUNK)
        if not data:
            break
        tail = (tail + data)[-keep:]
        if feed is not None:
            try:
                feed.write(data)
            except (BrokenPipeError, OSError):
                feed = None
    out.append(tail)
    if reader is not None and reader.stdin is not None:
        try:
            reader.stdin.close()
        except OSError:
            pass


def run(dump_argv: List[str], comp: Compressor, dest: IO[bytes], errf: IO[bytes],
        keep_tail: int, progress: Optional[Callable[[int], None]] = None,
        inspect_argv: Optional[List[str]] = None) -> Outcome:
    """Run the pipeline into ``dest`` (the temporary file, open for writing); stderr of
    every stage goes to ``errf``. ``inspect_argv``: the dump reader, fed the decompressed
    stream (its report in ``Outcome.facts``)."""
    res = Outcome()
    dump = subprocess.Popen(dump_argv, stdout=subprocess.PIPE, stderr=errf)
    zipper = subprocess.Popen(comp.argv, stdin=dump.stdout, stdout=subprocess.PIPE,
                              stderr=errf)
    assert dump.stdout is not None and zipper.stdout is not None
    dump.stdout.close()  # the compressor holds it now
    checker = subprocess.Popen(comp.check, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=errf)
    assert checker.stdin is not None and checker.stdout is not None
    tails: List[bytes] = []
    inspector = None
    if inspect_argv:
        try:
            inspector = subprocess.Popen(inspect_argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            inspector = None
    said: List[bytes] = []
    if inspector is not None:
        report = inspector.stdout
        assert report is not None
        collect = threading.Thread(target=lambda: said.append(report.read()), daemon=True)
        collect.start()
    reader = threading.Thread(target=_keep_tail,
                              args=(checker.stdout, keep_tail, tails, inspector), daemon=True)
    reader.start()
    digest = hashlib.sha256()
    checking = True
    try:
        while True:
            data = zipper.stdout.read(CHUNK)
            if not data:
                break
            try:
                dest.write(data)
            except OSError as e:
                res.write_error = e.strerror or str(e)
                break
            digest.update(data)
            res.size += len(data)
            if checking:
                try:
                    checker.stdin.write(data)
                except (BrokenPipeError, OSError):
                    checking = False
            if progress is not None:
                progress(res.size)
    finally:
        try:
            checker.stdin.close()
        except OSError:
            pass
        if res.write_error:
            zipper.kill()
            dump.kill()
        zipper.stdout.close()
        res.zip_status = zipper.wait()
        res.dump_status = dump.wait()
        res.check_status = checker.wait()
        reader.join()
        if inspector is not None:
            if res.write_error:
                inspector.kill()
            collect.join()
            if inspector.wait() == 0 and said:
                res.facts = said[0].decode("utf-8", "replace")
    res.sha256 = digest.hexdigest()
    res.tail = tails[0] if tails else b""
    return res

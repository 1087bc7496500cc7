"""Small things the host program's jobs run the host's tools with: docker, psql's
errors, the decompressor of a backup, a stage of a pipeline that is the program itself."""

import os
import pwd
import shutil
import socket
import subprocess
import sys
from typing import List, Optional, Tuple

from aimms_ops.core import events, retention


def hostname() -> str:
    return socket.gethostname()


def user() -> str:
    """The login the job runs as (its uid when it has no name)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def docker(*args: str, stdin: Optional[bytes] = None) -> Tuple[int, str, str]:
    """``docker ARGS``: its status, stdout and stderr."""
    try:
        proc = subprocess.run(["docker", *args], input=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except OSError as e:
        return 127, "", str(e)
    return proc.returncode, _text(proc.stdout), _text(proc.stderr)


def out(*args: str) -> str:
    """The stdout of ``docker ARGS`` (empty when it fails)."""
    rc, stdout, _err = docker(*args)
    return stdout if rc == 0 else ""


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def psql_error(text: str) -> str:
    """psql's first error, whole (a message may span lines), newlines shown as \\n."""
    got: List[str] = []
    for line in text.splitlines():
        if line.startswith("psql:") and got:
            break
        if got or line.startswith("psql:"):
            got.append(line)
    return "\\n".join(got)


def conninfo_db(name: str) -> str:
    """A libpq connection string for database ``name``, whatever it holds."""
    return "dbname='%s'" % name.replace("\\", "\\\\").replace("'", "\\'")


def connect_line(name: str) -> bytes:
    """psql's ``\\connect`` to database ``name`` by its bytes, keeping the user, as a line
    of its stdin: an argument of docker exec would turn a byte that is not UTF-8 into
    U+FFFD."""
    target = conninfo_db(name).encode("utf-8", "surrogateescape").replace(b'"', b'""')
    return b'\\connect -reuse-previous=on "' + target + b'"\n'


def decompressor(name: str) -> Tuple[Optional[List[str]], str]:
    """The command that decompresses backup ``name`` (stdin to stdout): zstd for a
    ``.sql.zst``, else igzip, else pigz, else gzip; or None and what to install."""
    zst = dict(retention.EXTENSIONS)["zstd"].rsplit(".", 1)[1]
    if name.endswith("." + zst):
        return (["zstd", "-q", "-dc"] if shutil.which("zstd") else None), "zstd"
    for tool in ("igzip", "pigz", "gzip"):
        if shutil.which(tool):
            return [tool, "-dc"], "gzip"
    return None, "gzip"


def _program() -> List[str]:
    """The host program, to run its dump reader in a stage of the pipeline: the zipapp
    this process was started from (its entry point names itself in AIMMS_OPS_PROGRAM,
    also when it imports from the folder beside it), else these modules."""
    # Started without a PATH (cron's bare environment), python3 does not know its own
    # path; the settings file has given the PATH since.
    python = sys.executable or "python3"
    zipapp = os.environ.get("AIMMS_OPS_PROGRAM", "")
    if zipapp and os.path.isfile(zipapp):
        return [python, zipapp]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isfile(root):  # the zipapp, started otherwise than by its entry point
        return [python, root]
    return [python, "-m", "aimms_ops.agent"]


def _status(rc: int) -> int:
    """A stage's status as bash gives it (128 + N for a stage killed by signal N)."""
    return 128 - rc if rc < 0 else rc


#: The verify's SQL: each table's exact row count, and every database opened.
_COUNT_SQL = """SELECT format('SELECT %L, count(*) FROM ONLY %I.%I',
              quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname, c.relname
\\gexec
"""
#: Every database that allows no connections opened, in the server: a name that is not
#: UTF-8 never goes to psql and back (\\gexec would send it in the client's encoding).
_OPEN_SQL = """DO $aimms_ops$DECLARE d name; BEGIN
FOR d IN SELECT datname FROM pg_database WHERE NOT datallowconn AND NOT datistemplate LOOP
EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS true', d); END LOOP; END$aimms_ops$;
"""


def _proc_number(path: str, key: str) -> int:
    """The number after ``key:`` in the /proc file ``path``; 0 when it cannot be told
    (the process gone, no /proc)."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def read_position(pid: int, fd: int = 0) -> int:
    """How far process ``pid`` has read the file open as its ``fd`` (Linux's fdinfo)."""
    return _proc_number("/proc/%d/fdinfo/%d" % (pid, fd), "pos")


def bytes_written(pid: int) -> int:
    """The bytes process ``pid`` has written so far (``wchar`` of Linux's /proc/PID/io)."""
    return _proc_number("/proc/%d/io" % pid, "wchar")


def watch_reading(first: "subprocess.Popen[bytes]", last: "subprocess.Popen[bytes]",
                  ticker: events.Ticker, *, written: bool = False) -> None:
    """Wait for ``last`` to end, telling ``ticker`` how far ``first`` (a decompressor
    reading a file on its stdin) is in that file, or (``written``) how many bytes it has
    written."""
    while last.poll() is None:
        ticker.tick(bytes_written(first.pid) if written else read_position(first.pid))
        try:
            last.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass

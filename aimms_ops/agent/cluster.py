"""The cluster as the backup sees it: its container (found by compose's labels), SQL in
it through ``docker exec … psql``, and the databases pg_dumpall would skip.

pg_dumpall skips every database whose datallowconn is false. So that no database is left
out silently, each one (but template0, an invalid one, and the restore's side copies) is
allowed connections for the dump only: its oid is noted in ALLOWCONN_NOTE first, then it
is opened, logged by name; after the dump (and when the job ends, and by the next run
after a kill -9) it is closed again. The dump ends, after pg_dumpall's completion marker,
with an ``ALTER DATABASE … ALLOW_CONNECTIONS false;`` per database, so that any restore
of it (fab restore, psql by hand) closes them again too.
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable, List, Optional, Tuple

from aimms_ops.agent import hosttools
from aimms_ops.core.layout import compose_label
from aimms_ops.dump.beside import NEW_PREFIX, OLD_PREFIX

#: The restore's own side copies: never dumped, never opened.
SIDE_COPY_PATTERNS = tuple(p.decode() + "*" for p in (OLD_PREFIX, NEW_PREFIX))
SIDE_COPY_SQL = "datname !~ '^(%s|%s)'" % (OLD_PREFIX.decode(), NEW_PREFIX.decode())
#: In the backup dir: "OID<TAB>HEX" of each database opened for the dump.
ALLOWCONN_NOTE = ".backup.allowconn"
TRAILER_TITLE = ("-- aimms-ops: databases that allow no connections (dumped with "
                 "connections allowed for the dump only)")


class ClusterError(Exception):
    """SQL or docker failed (the message is its last line)."""




def container(project: str, service: str, *, stopped: bool = False) -> str:
    """The id of the service's container ("" when there is none)."""
    args = ["docker", "ps", "-q", "--filter",
            "label=com.docker.compose.project=" + compose_label(project),
            "--filter", "label=com.docker.compose.service=" + service]
    if stopped:
        args.append("-a")
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return out.split("\n", 1)[0].strip()


def container_name(cid: str) -> str:
    out = subprocess.run(["docker", "inspect", "--format", "{{.Name}}", cid],
                         capture_output=True, text=True, check=False).stdout
    return out.strip().lstrip("/")


def last_line(text: str) -> str:
    return hosttools.last_line(text) or "no message"


class Cluster:
    """SQL in the postgres container ``cid`` as ``superuser``, in template1 (there even
    when postgres is not)."""

    def __init__(self, cid: str, superuser: str) -> None:
        self.cid = cid
        self.superuser = superuser

    def rows(self, sql: str) -> List[List[str]]:
        proc = subprocess.run(
            ["docker", "exec", self.cid, "psql", "-X", "-q", "-A", "-t", "-F", "\t",
             "-v", "ON_ERROR_STOP=1", "-U", self.superuser, "-d", "template1", "-c", sql],
            capture_output=True, text=True, errors="surrogateescape", check=False)
        if proc.returncode != 0:
            raise ClusterError(last_line(proc.stderr or proc.stdout))
        return [line.split("\t") for line in proc.stdout.splitlines() if line]

    def allow_connections(self, oid: str, allow: bool) -> None:
        if not oid.isdigit():
            raise ClusterError("not an oid: %s" % oid)
        self.rows("DO $aimms_ops$DECLARE d name; BEGIN "
                  "SELECT datname INTO d FROM pg_database WHERE oid = %s; "
                  "IF d IS NOT NULL THEN EXECUTE format('ALTER DATABASE %%I "
                  "ALLOW_CONNECTIONS %s', d); END IF; END$aimms_ops$"
                  % (oid, "true" if allow else "false"))


def shown_name(hexname: str) -> str:
    """A database name (hex of its bytes) as one log line."""
    text = bytes.fromhex(hexname).decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def open_closed(cluster: Cluster, backup_dir: str, log: Callable[[str], None]) -> bytes:
    """Allow connections on every database pg_dumpall would skip, noting each first;
    return the trailer (the statements that close them on a restore)."""
    try:
        rows = cluster.rows("SELECT oid, encode(textsend(quote_ident(datname)), "
                            "'hex') FROM pg_database WHERE NOT datallowconn AND datname <> "
                            "'template0' AND datconnlimit <> -2 AND %s ORDER BY datname"
                            % SIDE_COPY_SQL)
    except ClusterError as e:
        raise ClusterError("cannot list the databases that allow no connections: %s" % e) \
            from e
    if not rows:
        return b""
    note = os.path.join(backup_dir, ALLOWCONN_NOTE)
    with open(note, "w", encoding="ascii") as fh:
        fh.write("".join("%s\t%s\n" % (oid, hexname) for oid, hexname in rows))
    # From template1: a database cannot close itself (psql would be in the last one dumped).
    trailer = [b"", TRAILER_TITLE.encode(), b"\\connect template1"]
    for oid, hexname in rows:
        log("allowing connections to database %s for the dump only (datallowconn is false: "
            "pg_dumpall would skip it)" % shown_name(hexname))
        try:
            cluster.allow_connections(oid, True)
        except ClusterError as e:
            raise ClusterError("cannot allow connections to database %s for the dump: %s"
                               % (shown_name(hexname), e)) from e
        trailer.append(b"ALTER DATABASE " + bytes.fromhex(hexname) + b" ALLOW_CONNECTIONS false;")
    return b"\n".join(trailer) + b"\n"


def close_again(cluster: Optional[Cluster], backup_dir: str,
                log: Callable[[str], None]) -> None:
    """Put datallowconn back to false on every database the note names (this run's, or a
    killed run's), then remove the note. Safe to call twice."""
    note = os.path.join(backup_dir, ALLOWCONN_NOTE)
    try:
        with open(note, encoding="ascii", errors="replace") as fh:
            rows = [ln.split("\t") for ln in fh.read().splitlines() if "\t" in ln]
    except FileNotFoundError:
        return
    if rows and cluster is None:
        return  # no cluster to reach yet: the next run does it
    failed = []
    for oid, hexname in rows:
        try:
            cluster.allow_connections(oid, False)  # type: ignore[union-attr]
            log("connections to database %s closed again (datallowconn false)"
                % shown_name(hexname))
        except (ClusterError, ValueError) as e:
            failed.append("%s: %s" % (shown_name(hexname), e))
    if failed:
        raise ClusterError("cannot put datallowconn back to false on database %s (run ALTER "
                           "DATABASE … ALLOW_CONNECTIONS false there; the next backup tries "
                           "again)" % " ".join(failed))
    os.unlink(note)


def dumped(cluster: Cluster) -> Tuple[List[str], List[str]]:
    """(hex names, shown names) of the databases pg_dumpall is about to dump (its own
    selection, less the side copies). A name with a line break is refused: pg_dumpall
    refuses it, and says only its last line."""
    try:
        rows = cluster.rows("SELECT encode(textsend(datname), 'hex'), "
                            "encode(textsend(quote_ident(datname)), 'hex') FROM "
                            "pg_database WHERE datallowconn AND datconnlimit <> -2 AND %s "
                            "ORDER BY datname" % SIDE_COPY_SQL)
    except ClusterError as e:
        raise ClusterError("cannot list the databases to dump: %s" % e) from e
    hexes, shown = [], []
    for hexname, quoted in rows:
        if b"\n" in bytes.fromhex(hexname) or b"\r" in bytes.fromhex(hexname):
            raise ClusterError("database %s cannot be backed up: pg_dumpall refuses a database "
                               "name that holds a line break (rename it: ALTER DATABASE ... "
                               "RENAME TO ...)" % shown_name(quoted))
        if hexname:
            hexes.append(hexname)
            shown.append(shown_name(quoted))
    return hexes, shown

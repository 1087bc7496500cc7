"""The deep verify's throwaway (``agent/verify.py`` runs it): a container from the image
of the production postgres container, with production's environment, a new volume of
its own and ``--network none``, refused when its generated names exist or name anything
of production; the backup streamed twice through the decompressor, the dump reader's
restore filter (``aimms-ops.pyz dump filter``) and ``psql -v ON_ERROR_STOP=1`` in it;
then its databases, tables and exact row counts.

Checks: disk, start, gzip stream (zstd stream), dump header, restore, completion marker,
databases, live restore. Every external tool is a subprocess: docker, the decompressor,
psql in the container; the swap after each replay is the dump reader's, in-process.
"""

import os
import pwd
import subprocess
import tempfile
import time
from typing import List, Optional, Tuple

from aimms_ops.agent.cluster import compose_label as project_label
from aimms_ops.agent.cluster import shown_name
from aimms_ops.agent.hosttools import (
    _COUNT_SQL,
    _OPEN_SQL,
    _program,
    _status,
    _text,
    connect_line,
    decompressor,
    docker,
    last_line,
    out,
    psql_error,
    watch_reading,
)
from aimms_ops.agent.throwaway import Throwaway
from aimms_ops.core import events, units
from aimms_ops.dump.facts import INSPECT
from aimms_ops.dump.swap import Cluster, SwapError, drop_replaced, prepare, swap

#: The label on what the verify makes, and the prefix of its names.
LABEL = "org.aimms-ops.verify=1"
PREFIX = "aimms-ops-verify-"
DEFAULT_PGDATA = "/var/lib/postgresql/data"
MIB = 1024 * 1024
#: psql's error, at most this many characters in a reason.
REASON_CHARS = 400
_PSQL = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
_NAMES_SQL = ("SELECT encode(textsend(datname::text), 'hex') FROM pg_database "
              "WHERE NOT datistemplate ORDER BY 1")
_CLOSED_NAMES_SQL = _NAMES_SQL.replace("WHERE", "WHERE NOT datallowconn AND")


def shown_names(names: List[str]) -> str:
    """Database names for a message: a byte that is not UTF-8 as ``\\xe9``."""
    return " ".join(shown_name(n.encode("utf-8", "surrogateescape").hex()) for n in names)


class Failed(Exception):
    """A check failed: ``check`` names it, the message says why."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason


class Trial(Throwaway):
    """The throwaway of one verify run (``run``: the verify.Run it reports to; the
    drill's Run, agent/drill.py, has the same methods). ``prefix`` and ``label`` name
    and mark what it makes."""

    prefix = PREFIX
    label = LABEL
    work_prefix = "aimms-verify."

    def __init__(self, run, path: str, size: int) -> None:
        self.run = run
        self.path = path
        self.size = size
        self.opts = run.opts
        self.superuser = run.opts.get("PG_SUPERUSER")
        self.container = ""
        self.volume = ""
        self.made_container = False
        self.made_volume = False
        self.removed = False
        self.work = ""
        self.unzip: List[str] = []
        self.procs: List[subprocess.Popen] = []

    def fail(self, check: str, reason: str) -> "Failed":
        return Failed(check, reason)

    # --- the throwaway's names, refused when they touch production ------------------
    def production(self) -> Tuple[str, str, str, str]:
        """The production container (id, name), its image and where its data is mounted."""
        if docker("info")[0] != 0:
            raise self.fail("start", "docker is not reachable as %s"
                            % pwd.getpwuid(os.getuid()).pw_name)
        project, service = self.opts.get("COMPOSE_PROJECT"), self.opts.get("COMPOSE_SERVICE")
        prod = out("ps", "-q", "--filter", "label=com.docker.compose.project=%s"
                   % project_label(project), "--filter",
                   "label=com.docker.compose.service=%s" % service, "-a").split("\n")[0]
        if not prod:
            raise self.fail("start", "there is no %s container of compose project %s to take "
                            "the image from" % (service, project))
        prod_name = out("inspect", "--format", "{{.Name}}", prod).strip().lstrip("/")
        image = out("inspect", "--format", "{{.Image}}", prod).strip()
        if not image:
            raise self.fail("start", "cannot read the image of %s" % prod_name)
        env = out("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", prod)
        pgdata = ([ln[len("PGDATA="):] for ln in env.splitlines() if ln.startswith("PGDATA=")]
                  or [""])[-1] or DEFAULT_PGDATA
        # The throwaway volume goes where production keeps its data: the mount holding PGDATA.
        dest = ""
        for d in out("inspect", "--format", "{{range .Mounts}}{{println .Destination}}{{end}}",
                     prod).splitlines():
            if d and (d == pgdata or pgdata.startswith(d + "/")) and len(d) > len(dest):
                dest = d
        self.names(prod, prod_name)
        return prod, prod_name, image, dest or pgdata

    def names(self, prod: str, prod_name: str) -> None:
        protected = set(v for v in self.opts.protect if v)
        for c in out("ps", "-aq", "--filter", "label=com.docker.compose.project=%s"
                     % project_label(self.opts.get("COMPOSE_PROJECT"))).split():
            mounts = out("inspect", "--format",
                         "{{range .Mounts}}{{if .Name}}{{println .Name}}{{end}}{{end}}", c)
            protected.update(v for v in mounts.splitlines() if v)
        name = "%s%s-%d" % (self.prefix, time.strftime("%Y%m%d%H%M%S", time.gmtime()), os.getpid())
        self.container = self.volume = name
        if name in (prod_name, prod):
            raise self.fail("start", "refusing: %s is the production container" % name)
        if name in protected:
            raise self.fail("start", "refusing: %s is a production volume" % name)
        if docker("container", "inspect", name)[0] == 0:
            raise self.fail("start", "refusing: a container named %s already exists" % name)
        if docker("volume", "inspect", name)[0] == 0:
            raise self.fail("start", "refusing: a volume named %s already exists" % name)

    # --- room for it ----------------------------------------------------------------
    def disk(self, prod: str) -> None:
        """About the size of production's cluster (read-only query), else 8 times the dump."""
        need = 0
        if out("inspect", "--format", "{{.State.Running}}", prod).strip() == "true":
            digits = "".join(c for c in out(
                "exec", prod, "psql", "-X", "-A", "-t", "-U", self.superuser, "-d", "postgres",
                "-c", "SELECT sum(pg_database_size(datname)) FROM pg_database") if c.isdigit())
            need = int(digits) if digits else 0
        need = (need or self.size * 8) * 12 // 10 + 64 * MIB
        root = out("info", "--format", "{{.DockerRootDir}}").strip()
        try:
            st = os.statvfs(root)
        except (OSError, ValueError):
            return
        avail = st.f_bavail * st.f_frsize // 1024 * 1024
        if avail < need:
            raise self.fail("disk", "the trial restore needs about %s but %s has %s free"
                            % (units.size(need), root, units.size(avail)))
        self.run.check("disk", "OK", "%s free in %s, about %s needed"
                       % (units.size(avail), root, units.size(need)))

    # --- the throwaway --------------------------------------------------------------
    def start(self, prod: str, prod_name: str, image: str, dest: str) -> None:
        try:
            self.work = tempfile.mkdtemp(prefix=self.work_prefix)
        except OSError as e:
            raise self.fail("start", "cannot create a temporary dir") from e
        # Production's environment, so the image initialises the same superuser and settings.
        rc, env, _err = docker("inspect", "--format",
                               "{{range .Config.Env}}{{println .}}{{end}}", prod)
        if rc != 0:
            raise self.fail("start", "cannot read the environment of %s" % prod_name)
        with open(self.file("env"), "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("".join(ln + "\n" for ln in env.splitlines() if ln))
        self.made_volume = True
        rc, _out, err = docker("volume", "create", "--label", self.label, self.volume)
        if rc != 0:
            raise self.fail("start", "docker volume create %s failed: %s"
                            % (self.volume, last_line(err)))
        self.made_container = True
        rc, _out, err = docker("run", "--detach", "--name", self.container, "--label",
                               self.label, "--network", "none", "--env-file", self.file("env"),
                               "--volume", "%s:%s" % (self.volume, dest), image)
        if rc != 0:
            raise self.fail("start", "docker run failed: %s" % last_line(err))
        self.run.event("verify", container=self.container, volume=self.volume, image=image)
        self.run.log("started throwaway container %s (image of %s, volume %s at %s, no network)"
                     % (self.container, prod_name, self.volume, dest))
        wait = int(self.opts.wait)
        deadline = time.monotonic() + wait
        while True:
            if out("inspect", "--format", "{{.State.Running}}", self.container).strip() != "true":
                _rc, logs, err = docker("logs", "--tail", "5", self.container)
                raise self.fail("start", "the throwaway container stopped while starting: %s"
                                % last_line(logs + err))
            # Ready once postgres itself is PID 1: the images' entrypoints run a temporary
            # server while they initialise the cluster.
            if docker("exec", self.container, "sh", "-c",
                      '[ "$(cat /proc/1/comm)" = postgres ] && pg_isready -q -U "$1"',
                      "sh", self.superuser)[0] == 0:
                break
            if time.monotonic() >= deadline:
                raise self.fail("start", "the throwaway server did not accept connections "
                                "within %ds" % wait)
            time.sleep(0.5)
        self.run.check("start", "OK", "%s from the image of %s, volume %s, no network"
                       % (self.container, prod_name, self.volume))

    def file(self, name: str) -> str:
        return os.path.join(self.work, name)

    def read(self, name: str) -> str:
        try:
            with open(self.file(name), "rb") as fh:
                return _text(fh.read())
        except OSError:
            return ""

    # --- the trial restore: decompress | dump reader | psql, twice -------------------
    def replay(self, unzip: List[str], second: bool) -> List[int]:
        """The dump through the restore filter into the throwaway server; the stages'
        statuses. Each pass is a restore as fab restore makes one, every database rebuilt
        beside, then swapped in: the first onto the new cluster (as rebuild-volume
        restores), the second onto what the first made, with that cluster's properties
        (as a restore onto a live cluster)."""
        opts: List[str] = []
        cluster = Cluster(self.container, self.superuser)
        for db in ("template1", "postgres"):
            with open(self.file(db + ".props"), "wb") as fh:
                rc = subprocess.call(["docker", "exec", self.container, "pg_dump", "-U",
                                      self.superuser, "--create", "--schema-only",
                                      "--exclude-schema=*", db], stdout=fh,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            if rc == 0:
                opts += ["--props", "%s=%s" % (db, self.file(db + ".props"))]
        state = self.file("beside-2" if second else "beside-1")
        os.makedirs(state, exist_ok=True)
        opts += ["--beside", state]
        try:
            prepare(cluster, state, lambda msg, **_: None)
        except SwapError as e:
            self._psql_err("psql: prepare failed: %s" % e)
            return [0, 0, 1]
        with open(self.path, "rb") as src, open(self.file("unzip.err"), "wb") as e0, \
                open(self.file("filter.err"), "wb") as e1, \
                open(self.file("psql.err"), "wb") as e2:
            stages = [
                (unzip, src, e0),
                ([*_program(), "dump", "filter", "--facts", self.file("inspect"), *opts], None, e1),
                (["docker", "exec", "-i", "-e", "PGOPTIONS=-c client_min_messages=warning",
                  self.container, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U",
                  self.superuser, "-d", "postgres", "-f", "-"], None, e2)]
            self.procs = []
            for i, (argv, stdin, err) in enumerate(stages):
                proc = subprocess.Popen(
                    argv, stdin=stdin if stdin is not None else self.procs[-1].stdout,
                    stdout=subprocess.PIPE if i < 2 else subprocess.DEVNULL, stderr=err)
                if i:
                    self.procs[-1].stdout.close()  # type: ignore[union-attr]
                self.procs.append(proc)
            # Pass 2 knows the decompressed size (pass 1's facts): it counts those bytes.
            raw = [int(b) for b in self.facts("bytes") if b.isdigit()] if second else []
            size = raw[0] if raw and unzip[0] != "cat" else os.path.getsize(self.path)
            ticker = self.run.ticker("replay", size, what="pass %d" % (2 if second else 1))
            watch_reading(self.procs[0], self.procs[-1], ticker, written=bool(raw))
            st = [_status(p.wait()) for p in self.procs]
            ticker.end(size)
            self.procs = []
        self.run.log("restore pass %d stages: %s %d, filter %d, psql %d"
                     % (2 if second else 1, unzip[0], st[0], st[1], st[2]))
        if st[1] == 0 and st[2] == 0:
            stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime()).encode()
            try:
                swap(cluster, state, stamp, lambda msg, **_: None)
            except SwapError as e:
                st[2] = 1
                self._psql_err("psql: swap failed: %s" % e)
            else:
                try:
                    drop_replaced(cluster, state, lambda msg, **_: None)
                except SwapError:
                    pass
        return st

    def _psql_err(self, text: str) -> None:
        with open(self.file("psql.err"), "w", encoding="utf-8") as fh:
            fh.write(text + "\n")

    def psql(self, db: str, sql: str, *, stdin: bool = False) -> Tuple[int, str, str]:
        """psql in the throwaway as the superuser: tab-separated rows."""
        args = ["exec", "-i", self.container, *_PSQL, "-U", self.superuser, "-d", db]
        if stdin:
            return docker(*args, stdin=sql.encode("utf-8", "surrogateescape"))
        return docker(*args, "-c", sql, stdin=b"")

    def psql_in(self, db: str, sql: str) -> Tuple[int, str, str]:
        """``sql`` in database ``db``, whatever its name holds (:func:`connect_line`)."""
        args = ["exec", "-i", self.container, *_PSQL, "-U", self.superuser, "-d", "postgres"]
        return docker(*args, stdin=connect_line(db) + sql.encode("utf-8", "surrogateescape"))

    def databases(self, closed: bool) -> List[str]:
        """The throwaway's databases that are not templates (``closed``: those allowing
        no connections), read as bytes (psql would leave out a byte that is not UTF-8)."""
        out = self.psql("postgres", _CLOSED_NAMES_SQL if closed else _NAMES_SQL)[1]
        return [_text(bytes.fromhex(h)) for h in out.split()]

    def facts(self, key: str) -> List[str]:
        """Fact ``key`` of what the dump filter read (its ``--facts``), as text: "1" or "0"
        for a truth, one item per name; none when the filter wrote no report."""
        value = (events.facts_in(self.read("inspect"), INSPECT) or {}).get(key)
        items = value if isinstance(value, list) else [] if value is None else [value]
        return [("1" if v else "0") if isinstance(v, bool) else str(v) for v in items]

    def first_replay(self) -> List[str]:
        """The first replay and its checks (stream, header, restore, completion marker,
        databases): the databases it restored."""
        unzip, missing = decompressor(self.run.name)
        if unzip is None:
            raise self.fail("restore", "%s is not installed on this host; reading %s needs it "
                            "(install %s)" % (missing, self.run.name, missing))
        # The stream check is named after the format: "gzip stream" or "zstd stream".
        stream = "zstd stream" if unzip[0] == "zstd" else "gzip stream"
        st = self.replay(unzip, False)
        # A stage killed by SIGPIPE (141) only saw a later stage stop: not a fault of its own.
        if st[0] not in (0, 141):
            raise self.fail(stream, "the file does not decompress to its end: %s"
                            % last_line(self.read("unzip.err")))
        if st[0] == 0:
            self.run.check(stream, "OK", "decompresses to its end")
        else:
            self.run.check(stream, "UNKNOWN", "not read to its end: a later stage stopped first")
        if "0" in self.facts("header"):
            raise self.fail("dump header", "not a pg_dumpall cluster dump (no header)")
        if st[2] != 0:
            raise self.fail("restore", "psql stopped: %s"
                            % psql_error(self.read("psql.err"))[:REASON_CHARS])
        # The filter exits 3 when the stream ends before the completion marker.
        if "0" in self.facts("complete") or st[1] == 3:
            raise self.fail("completion marker",
                            "the dump has no completion marker: it is incomplete")
        if st[1] != 0:
            raise self.fail("restore", "the restore filter failed (status %d): %s"
                            % (st[1], last_line(self.read("filter.err"))))
        self.run.check("dump header", "OK", "a pg_dumpall cluster dump")
        self.run.check("restore", "OK", "psql replayed it with ON_ERROR_STOP")
        self.run.check("completion marker", "OK", "present")

        # --- what is there now: every database, those allowing no connections too ----
        restored = self.databases(False)
        closed = self.databases(True)
        if not restored:
            raise self.fail("databases", "cannot list the databases of the throwaway server")
        dumped = [_text(bytes.fromhex(h)) for h in self.facts("db")]
        missing_dbs = [db for db in dumped if db and db != "template1" and db not in restored]
        if missing_dbs:
            raise self.fail("databases", "missing after the restore: %s" % shown_names(missing_dbs))
        self.run.check("databases", "OK", shown_names(restored) + (
            " (restored allowing no connections, as the dump says: %s)" % shown_names(closed)
            if closed else ""))
        self.unzip = unzip
        return restored

    def count(self, db: str) -> List[Tuple[str, Optional[int]]]:
        """(table, exact rows) of every table of ``db`` in the throwaway."""
        rc, counts, err = self.psql_in(db, _COUNT_SQL)
        if rc != 0:
            raise self.fail("databases", "counting the rows of %s failed: %s"
                            % (db, last_line(err)))
        return [(t, int(n) if n.isdigit() else None)
                for t, _, n in (ln.partition("\t") for ln in counts.splitlines()) if t]

    def restore(self) -> Tuple[int, int, int]:
        """Both replays and the counts: (databases, tables, rows)."""
        restored = self.first_replay()
        st = self.replay(self.unzip, True)
        if st[2] != 0 or st[1] != 0:
            raise self.fail("live restore", "a second replay onto the restored cluster failed, "
                            "as fab restore onto a live cluster would: %s"
                            % psql_error(self.read("psql.err"))[:REASON_CHARS])
        self.run.check("live restore", "OK", "replayed again onto the cluster the first "
                       "replay made")

        # The throwaway's closed databases are opened to count their rows.
        self.psql("postgres", _OPEN_SQL, stdin=True)
        tables = rows = 0
        for db in restored:
            self.run.event("database", name=db)
            for table, count in self.count(db):
                self.run.event("table", database=db, table=table, rows=count)
                tables += 1
                rows += count or 0
        return len(restored), tables, rows

    def run_all(self) -> Tuple[int, int, int]:
        prod, prod_name, image, dest = self.production()
        self.disk(prod)
        self.start(prod, prod_name, image, dest)
        return self.restore()

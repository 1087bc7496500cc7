"""The host's side of a restore built beside the live cluster: make room, swap in, undo.

``prepare`` removes what an earlier restore that was killed left half-built and notes
the roles the cluster has; the stream then rebuilds each database under its new name
(restore_filter.py, ``--beside``). ``swap`` puts them in place in one transaction: the
live databases are closed to new sessions, their sessions ended, then renamed aside and
the rebuilt ones given their names, with the role changes the dump holds. ``discard``
undoes everything the restore did before that (the rebuilt copies, the roles it made),
so a restore that fails leaves the live cluster as it was. ``undo`` swaps the databases
set aside by the last restore back in; ``drop`` removes databases set aside.

What each step did goes to ``log(text, kind="note", **fields)``: ``replaced`` (with
``database`` and ``kept_as``) for each database the swap replaced, ``undone`` once
``discard`` left the live cluster as it was (the restore stream's events, core.events).

Every SQL statement goes to psql in the postgres container through ``docker exec``
(``Cluster``); names travel as SQL literals and identifiers quoted here, never through
a shell, and those of the swap run in a database of encoding SQL_ASCII (CREATE_SWAP_DB).
"""

import subprocess
import time

from .beside import (
    KEEP_REPLACED_DAYS,
    NEW_PREFIX,
    OLD_PREFIX,
    REPLACED_SETTING,
    SWAP_DB,
    aside_name,
    new_name,
)
from .lexer import shown, sql_literal

#: The swap runs from a database of encoding SQL_ASCII (psql's client encoding too): the
#: server then takes a statement's bytes as they are, so that a database name that is
#: not valid UTF-8 can be written in it (a UTF8 database refuses such a statement).
CREATE_SWAP_DB = (b"CREATE DATABASE " + SWAP_DB + b" WITH TEMPLATE = template0 "
                  b"ENCODING = 'SQL_ASCII' LOCALE = 'C';\n")


class SwapError(Exception):
    """A step of the swap failed: its message says which and psql's words; ``out``:
    what psql printed before it stopped."""

    def __init__(self, message, out=()):
        super().__init__(message)
        self.out = list(out)


def quote_ident(name):
    return b'"' + name.replace(b'"', b'""') + b'"'


class Cluster:
    """psql in the postgres container, as the superuser."""

    def __init__(self, container, superuser):
        self.container = container
        self.superuser = superuser

    def psql(self, sql, db=b"template1"):
        """Run ``sql`` (bytes) in ``db``; its output lines, or SwapError with psql's error."""
        cmd = ["docker", "exec", "-i", "-e", "PGOPTIONS=-c client_min_messages=warning",
               "-e", "PGCLIENTENCODING=SQL_ASCII", self.container, "psql", "-X", "-q", "-A",
               "-t", "-v", "ON_ERROR_STOP=1",
               "-U", self.superuser, "-d", db.decode("utf-8", "surrogateescape")]
        proc = subprocess.run(cmd, input=sql, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().replace("\n", "\\n")
            raise SwapError(err or "psql exited %d" % proc.returncode,
                            proc.stdout.splitlines())
        return proc.stdout.splitlines()

    def databases(self):
        """name -> (is template, allows connections) of every database."""
        out = {}
        for line in self.psql(b"SELECT encode(textsend(datname), 'hex') || ' ' || "
                              b"datistemplate::int || ' ' || datallowconn::int "
                              b"FROM pg_database"):
            hexname, tmpl, conn = line.split(b" ")
            out[bytes.fromhex(hexname.decode())] = (tmpl == b"1", conn == b"1")
        return out

    def roles(self):
        return set(bytes.fromhex(x.decode()) for x in self.psql(
            b"SELECT encode(textsend(rolname), 'hex') FROM pg_roles"))

    def survey(self):
        """What a restore reads before it starts, in one query: every database (as
        ``databases``), the roles, the databases set aside (as ``set_aside``) and the
        tablespaces' names."""
        dbs, roles, aside, spaces = {}, set(), [], []
        for line in self.psql(
                b"SELECT 'd ' || encode(textsend(datname), 'hex') || ' ' || "
                b"datistemplate::int || ' ' || datallowconn::int FROM pg_database "
                b"UNION ALL SELECT 'r ' || encode(textsend(rolname), 'hex') FROM pg_roles "
                b"UNION ALL SELECT 'a ' || " + _ASIDE_SQL +
                b" UNION ALL SELECT 't ' || encode(textsend(spcname), 'hex') "
                b"FROM pg_tablespace"):
            kind, _, rest = line.partition(b" ")
            if kind == b"d":
                hexname, tmpl, conn = rest.split(b" ")
                dbs[bytes.fromhex(hexname.decode())] = (tmpl == b"1", conn == b"1")
            elif kind == b"r":
                roles.add(bytes.fromhex(rest.decode()))
            elif kind == b"a":
                aside += _aside_rows([rest])
            elif kind == b"t":
                spaces.append(bytes.fromhex(rest.decode()))
        aside.sort(key=lambda a: a[2], reverse=True)
        return dbs, roles, aside, spaces

    def drop_swap_db(self):
        """Drop the swap's own database (never a template, always open): one statement."""
        self.psql(b"DROP DATABASE IF EXISTS " + SWAP_DB + b" WITH (FORCE);\n")

    def drop(self, name):
        """Drop database ``name``, whatever it is (a template, closed to sessions)."""
        self.drop_all([name])

    def drop_all(self, names):
        """Drop the databases ``names``, whatever they are, in one psql session, in
        order. A failure stops it: ``dropped(error.out)`` names those gone before."""
        sql = []
        for name in names:
            q = quote_ident(name)
            sql += [b"ALTER DATABASE ", q, b" IS_TEMPLATE false;\n", b"ALTER DATABASE ", q,
                    b" ALLOW_CONNECTIONS true;\n", b"DROP DATABASE IF EXISTS ", q,
                    b" WITH (FORCE);\n", b"SELECT 'dropped ", name.hex().encode(), b"';\n"]
        if not sql:
            return
        self.psql(b"".join(sql))


def dropped(out):
    """The databases a ``drop_all`` that failed had dropped, from what its psql printed."""
    return [bytes.fromhex(ln[8:].decode()) for ln in out if ln.startswith(b"dropped ")]


def _lines(path):
    try:
        with open(path, "rb") as fh:
            return [ln.rstrip(b"\n") for ln in fh if ln.strip()]
    except OSError:
        return []


def read_manifest(state):
    """What the stream rebuilt: (databases, roles of the dump), names as bytes."""
    dbs, roles = [], []
    for line in _lines(state + "/manifest"):
        kind, _, value = line.partition(b" ")
        (dbs if kind == b"db" else roles).append(bytes.fromhex(value.decode()))
    return dbs, roles


def drop_expired(cluster, log, now=None, aside=None):
    """Drop the databases restores set aside more than KEEP_REPLACED_DAYS ago (the first
    restore and the first backup after that time do), each logged; their names.
    ``aside``: what ``set_aside`` gives, when it was read already."""
    limit = time.strftime("%Y%m%d_%H%M%S", time.gmtime(
        (now or time.time()) - KEEP_REPLACED_DAYS * 86400)).encode()
    expired = [(name, "removed %s (%s before a restore of %s, kept %d days)"
                % (name.decode(), shown(original), stamp.decode(), KEEP_REPLACED_DAYS))
               for name, original, stamp, _tmpl, _conn in (set_aside(cluster) if aside is None
                                                            else aside)
               if stamp < limit]
    return drop_logged(cluster, expired, log)


def drop_logged(cluster, items, log):
    """Drop the databases of ``items`` (name, what to log once it is gone) in one psql
    session, each logged once dropped; their names."""
    try:
        cluster.drop_all([name for name, _text in items])
    except SwapError as e:
        gone = set(dropped(e.out))
        for name, text in items:
            if name in gone and text:
                log(text)
        raise
    for _name, text in items:
        if text:
            log(text)
    return [name for name, _text in items]


def prepare(cluster, state, log, now=None, survey=None):
    """Remove rebuilt copies a killed restore left, and copies set aside more than
    KEEP_REPLACED_DAYS ago; note the roles the cluster has. ``survey``: what
    ``Cluster.survey`` gives, when it was read already."""
    dbs, roles, aside, _spaces = survey if survey is not None else cluster.survey()
    drop_logged(cluster, [(name, "" if name == SWAP_DB else
                           "removed %s, left half-built by an earlier restore" % name.decode())
                          for name in dbs if name.startswith(NEW_PREFIX)], log)
    drop_expired(cluster, log, now, aside)
    with open(state + "/roles", "wb") as fh:
        for role in sorted(roles):
            fh.write(role.hex().encode() + b"\n")


def discard(cluster, state, log):
    """Undo what the restore did before its swap: the rebuilt copies and the roles it made."""
    cluster.drop_all([name for name in cluster.databases() if name.startswith(NEW_PREFIX)])
    before = set(bytes.fromhex(x.decode()) for x in _lines(state + "/roles"))
    _dbs, dump_roles = read_manifest(state)
    made = [r for r in dump_roles if r not in before and r in cluster.roles()]
    for role in made:
        cluster.psql(b"DROP ROLE IF EXISTS " + quote_ident(role) + b";\n")
    log("the live cluster is as it was: the rebuilt copies were removed%s"
        % (" and the roles the restore made (%s) dropped" % ", ".join(shown(r) for r in made)
           if made else ""), kind="undone")


def _closing(names, wait=15):
    """The statements, run from the swap's own database, that close ``names`` to new
    sessions and end theirs, each waited for up to ``wait`` seconds; they print ``ended
    N`` (a second round ends any that started while the first ran)."""
    if not names:
        return []
    lits = b", ".join(sql_literal(n) for n in names)
    end = (b"SELECT 'ended ' || count(*) FILTER (WHERE pg_terminate_backend(pid, %d)) "
           b"FROM pg_stat_activity WHERE datname = ANY (ARRAY[" % (wait * 1000) + lits +
           b"]::text[]) AND pid <> pg_backend_pid();\n")
    return [b"".join(b"ALTER DATABASE " + quote_ident(n) + b" ALLOW_CONNECTIONS false;\n"
                     for n in names), end, end]


def _reopen(cluster, names, live):
    """Open again to sessions those of ``names`` that were open: a swap that failed."""
    sql = b"".join(b"ALTER DATABASE " + quote_ident(n) + b" ALLOW_CONNECTIONS true;\n"
                   for n in names if live[n][1])
    if sql:
        cluster.psql(sql, SWAP_DB)


def _ended(lines, log):
    ended = sum(int(ln.split(b" ", 1)[1]) for ln in lines if ln.startswith(b"ended "))
    if ended:
        log("ended %d session(s) on the databases being replaced" % ended)


#: What the swap's psql prints once its transaction committed.
SWAPPED = b"aimms-ops: swapped"


def _run_swap(cluster, replaced, live, body, log):
    """One psql session: the swap's own database made, the databases being replaced
    closed and their sessions ended, then ``body`` (a transaction); the swap database
    dropped after. On a failure before the commit, the ones closed are opened again."""
    sql = [b"DROP DATABASE IF EXISTS " + SWAP_DB + b" WITH (FORCE);\n"] if SWAP_DB in live else []
    sql += [CREATE_SWAP_DB, b"\\connect " + SWAP_DB + b"\n"]
    sql += _closing(replaced)
    sql += body
    sql.append(b"SELECT '" + SWAPPED + b"';\n")
    try:
        try:
            out = cluster.psql(b"".join(sql))
        except SwapError:
            if replaced:
                try:
                    _reopen(cluster, replaced, live)
                except SwapError:
                    pass  # not even the swap's database was made: nothing was closed
            raise
        _ended(out, log)
        if SWAPPED not in out:
            raise SwapError("psql ended before the swap's transaction was confirmed")
    finally:
        cluster.drop_swap_db()


def swap(cluster, state, stamp, log, as_name=None):
    """Put the rebuilt databases in place, the live ones aside, the dump's role changes
    with them: one transaction. On any failure the live cluster is left as it was."""
    dbs, _roles = read_manifest(state)
    if not dbs:
        raise SwapError("the stream rebuilt no database")
    live = cluster.databases()
    targets = [(db, as_name if as_name is not None else db) for db in dbs]
    for db, _target in targets:
        if new_name(db) not in live:
            raise SwapError("database %s was not rebuilt" % shown(db))
    if as_name is not None and as_name in live:
        raise SwapError("database %s exists already" % shown(as_name))
    replaced = [t for _db, t in targets if t in live]
    sql = [b"BEGIN;\n"]
    try:
        with open(state + "/deferred.sql", "rb") as fh:
            sql.append(fh.read())
    except OSError:
        pass
    # The dump's globals set client_encoding: the names below are bytes as they are.
    sql.append(b"SET client_encoding = 'SQL_ASCII';\n")
    for db, target in targets:
        q = quote_ident(target)
        if target in live:
            tmpl, conn = live[target]
            aside = aside_name(target, stamp)
            note = b"%s %s %s %s" % (target.hex().encode(), stamp,
                                     b"t" if tmpl else b"f", b"t" if conn else b"f")
            sql += [b"ALTER DATABASE ", q, b" RENAME TO ", aside, b";\n",
                    b"ALTER DATABASE ", aside, b" IS_TEMPLATE false;\n",
                    b"ALTER DATABASE ", aside, b" SET ", REPLACED_SETTING.encode(),
                    b" = ", sql_literal(note), b";\n"]
        sql += [b"ALTER DATABASE ", new_name(db), b" RENAME TO ", q, b";\n"]
    sql.append(b"COMMIT;\n")
    _run_swap(cluster, replaced, live, sql, log)
    with open(state + "/aside", "wb") as fh:
        for _db, target in targets:
            if target in live:
                fh.write(aside_name(target, stamp).hex().encode() + b"\n")
                kept = aside_name(target, stamp).decode()
                log("replaced %s; the one it replaced is kept as %s" % (shown(target), kept),
                    kind="replaced", kept_as=kept,
                    database=target.decode("utf-8", "surrogateescape"))
            else:
                log("restored %s (new)" % shown(target))


def drop_replaced(cluster, state, log):
    """Drop what the swap just set aside (a restore onto a new, empty cluster)."""
    cluster.drop_all([bytes.fromhex(line.decode()) for line in _lines(state + "/aside")])


#: The databases set aside, one row each: the hex of the name, a space, the hex of the
#: setting that says what it was (REPLACED_SETTING).
_ASIDE_SQL = (b"encode(textsend(d.datname), 'hex') || ' ' || encode(textsend(c), 'hex') "
              b"FROM pg_database d JOIN pg_db_role_setting s ON s.setdatabase = d.oid "
              b"AND s.setrole = 0, unnest(s.setconfig) c WHERE c LIKE '" +
              REPLACED_SETTING.encode() + b"=%' AND d.datname LIKE '" + OLD_PREFIX + b"%'")


def _aside_rows(lines):
    out = []
    for line in lines:
        aside_hex, conf_hex = line.split(b" ")
        value = bytes.fromhex(conf_hex.decode()).split(b"=", 1)[1].split(b" ")
        if len(value) != 4:
            continue
        out.append((bytes.fromhex(aside_hex.decode()), bytes.fromhex(value[0].decode()),
                    value[1], value[2] == b"t", value[3] == b"t"))
    return out


def set_aside(cluster):
    """The databases set aside by restores: (aside name, original name, stamp, template,
    allowed connections), newest first."""
    out = _aside_rows(cluster.psql(b"SELECT " + _ASIDE_SQL))
    out.sort(key=lambda a: a[2], reverse=True)
    return out


def undo(cluster, log):
    """Swap the databases the last restore set aside back in; the restored ones go."""
    aside = set_aside(cluster)
    if not aside:
        raise SwapError("no database was set aside by a restore")
    stamp = aside[0][2]
    last = [a for a in aside if a[2] == stamp]
    live = cluster.databases()
    gone = []
    present = [a[1] for a in last if a[1] in live]
    sql = [b"BEGIN;\n"]
    for name, original, _stamp, tmpl, conn in last:
        q = quote_ident(original)
        if original in live:
            undone = new_name(original)
            gone.append(undone)
            sql += [b"ALTER DATABASE ", q, b" RENAME TO ", undone, b";\n"]
        sql += [b"ALTER DATABASE ", name, b" RESET ", REPLACED_SETTING.encode(), b";\n",
                b"ALTER DATABASE ", name, b" RENAME TO ", q, b";\n",
                b"ALTER DATABASE ", q, b" IS_TEMPLATE ", b"true" if tmpl else b"false",
                b";\n", b"ALTER DATABASE ", q, b" ALLOW_CONNECTIONS ",
                b"true" if conn else b"false", b";\n"]
    sql.append(b"COMMIT;\n")
    _run_swap(cluster, present, live, sql, log)
    cluster.drop_all(gone)
    for name, original, _stamp, _tmpl, _conn in last:
        log("put back %s (it was kept as %s)" % (shown(original), name.decode()))


def drop_aside(cluster, log, names=None):
    """Drop the databases restores set aside (``names``: only those)."""
    drop_logged(cluster, [(name, "dropped %s (%s before a restore)" % (name.decode(),
                                                                         shown(original)))
                          for name, original, _stamp, _tmpl, _conn in set_aside(cluster)
                          if names is None or name in names], log)

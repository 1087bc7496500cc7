"""The restore filter: a dump rewritten so that psql replays it exactly onto a live cluster."""

import re

from .beside import connect_line, new_name, own_name, rename_statement
from .lexer import (
    _CLOSE_DB,
    _CREATE_DB,
    _CREATE_ROLE,
    _DROP_DB,
    _DROP_ROLE,
    _IDENT,
    _TABLESPACE,
    ident_name,
    shown,
    sql_literal,
)
from .preface import Preface, property_lines
from .reader import PREFACE_LINE, PREFACE_TITLE, preface_extra

#: What pg_dumpall says at its start, said again after each connection of a rebuild: a
#: database whose default is default_transaction_read_only = on replays all the same.
_WRITABLE = b"SET default_transaction_read_only = off;\n"
_SET = re.compile(rb"\s*SET [a-z_]+ = [^;]*;\s*$")
_TABLESPACE_NAME = re.compile(rb"\s*CREATE TABLESPACE (" + _IDENT + rb")")
#: template1 is a template: it can be dropped only once it is not (what pg_dump does).
_NOT_TEMPLATE = (b"UPDATE pg_catalog.pg_database SET datistemplate = false "
                 b"WHERE datname = 'template1';")


class RestoreFilter:
    """Rewrites a dump so that psql with ON_ERROR_STOP replays it exactly on a live cluster.

    Whole cluster (``only`` is None):
    - the globals run in one transaction (unless they create a tablespace), after a
      prelude that, for every role the dump holds and the cluster has, resets its
      settings, password and comment and revokes its memberships: the dump then sets
      them exactly. Each ``CREATE ROLE x;`` tolerates an existing role. Roles the
      dump does not hold are left alone.
    - every database with a ``CREATE DATABASE`` is dropped first (``WITH (FORCE)``);
      template1 and postgres, which a plain dump only reconnects to, are dropped and
      recreated with their properties (from the dump's preface, else from ``props``:
      the live cluster's, captured before the restore).
    - ``DROP ROLE`` of a --clean dump is kept as a comment, its ``DROP DATABASE`` gets
      ``WITH (FORCE)``.
    One database (``only``): just that database's section, the rest as empty lines, but
    the ``ALTER DATABASE … ALLOW_CONNECTIONS false;`` after the completion marker that
    closes that database again (the backup's, for a database that allows no connections).

    The output has the dump's lines in the same numbers, except for whole blocks the
    filter inserts, each reported on ``log`` (``kind="inserted"``, ``lines`` N, ``after``
    K, counted in the output), so psql's line numbers map back to the dump's; and where
    each database starts (``kind="section"``, ``database``, ``line``). ``log(text,
    kind="note", **fields)``: a failure's reason is ``kind="error"``.
    """

    def __init__(self, out, log, only=None, props=None, beside=None):
        self.out = out
        self.log = log
        self.only = only
        self.props = dict(props or {})
        #: Built beside the live cluster (a Beside): every database under its new name,
        #: the globals but CREATE ROLE and CREATE TABLESPACE kept for the swap.
        self.beside = beside
        self.reader = None
        self.globals = []  # ("line", bytes) | ("unit", [bytes]) until the first section
        self.out_lines = 0
        self.section_created = False
        self.section_connected = False
        self.keep = only is None
        self.tag_n = 0
        self.preface_dbs = set()
        self._preface_db = b""
        #: What else the preface says: extension versions, ALTER ROLE ALL's settings.
        self.preface = Preface()

    def attach(self, reader):
        self.reader = reader
        return self

    # -- output
    def _write(self, data):
        self.out.write(data)
        self.out_lines += data.count(b"\n")

    def _blank(self, data):
        self._write(b"\n" * data.count(b"\n"))

    def _insert(self, text):
        n = text.count(b"\n")
        self.log("inserted %d lines after line %d" % (n, self.out_lines), kind="inserted",
                 lines=n, after=self.out_lines)
        self._write(text)

    # -- reader events
    def line(self, line, kind):
        r = self.reader
        if kind == "preface":
            body = line.rstrip(b"\r\n")
            extra = preface_extra(body)
            if extra is not None:
                self.preface.take(extra)
            elif body.startswith(PREFACE_TITLE):
                self._preface_db = body[len(PREFACE_TITLE):].split(b" (", 1)[0]
                self.preface_dbs.add(self._preface_db)
                self.props[self._preface_db] = []
            elif self._preface_db:
                self.props[self._preface_db].append(line[len(PREFACE_LINE):])
            return self._write(line)
        if r.section is None and kind not in ("complete",) and r.seen_header \
                and self.globals is not None:
            self.globals.append(("line", line))
            return None
        if kind == "section":
            self._flush_globals()
            # Where each database starts, so that a failure names its database.
            self.log("database %s from line %d" % (shown(r.section), self.out_lines + 1),
                     kind="section", line=self.out_lines + 1,
                     database=r.section.decode("utf-8", "surrogateescape"))
            self.section_created = False
            self.section_connected = False
            if self.only is not None:
                self.keep = r.section == self.only
            return self._write(line)
        if kind == "complete":
            self._flush_globals()
            if self.only is not None:
                self.keep = False
            return self._write(line)
        if not self.keep:
            if kind == "meta" and r.complete and self.only is not None \
                    and line.lstrip().startswith(b"\\connect"):
                return self._write(line)  # where the closing statements below run
            return self._blank(line)
        if kind == "meta" and r.section is not None \
                and line.lstrip().startswith(b"\\connect"):
            if not self.section_connected:
                self.section_connected = True
                if r.section in (b"template1", b"postgres") and not self.section_created:
                    self._recreate(r.section)
            if self.beside is not None:
                self._write(connect_line(line, new_name(r.section)))
                # The database's own default (read only) must not stop its replay.
                return self._insert(_WRITABLE)
        return self._write(line)

    def unit(self, lines):
        r = self.reader
        if r.section is None and r.seen_header and self.globals is not None:
            self.globals.append(("unit", lines))
            return None
        text = b"".join(lines)
        if r.section is not None:
            text = own_name(text, r.section)
        if not self.keep:
            m = _CLOSE_DB.match(text) if r.complete and self.only is not None else None
            if m and ident_name(m.group(1)) == self.only:
                # The one database restored allows no connections.
                return self._write(self._closed(text, m))
            return self._blank(text)
        if r.complete:
            m = _CLOSE_DB.match(text)
            if m:
                return self._write(self._closed(text, m))
        if r.section is not None and self.beside is not None:
            if _CREATE_DB.match(text):
                self.section_created = True
                self.beside.rebuilt(r.section)
            elif _DROP_DB.match(text):
                # A --clean dump's drop: the live database is replaced by the swap.
                return self._write(b"".join(b"-- aimms-ops: replaced by the swap: " + ln
                                            for ln in lines))
            text = self.preface.versioned(text, r.section)
            return self._write(rename_statement(text, r.section, new_name(r.section),
                                                ident_name))
        if r.section is not None:
            m = _CREATE_DB.match(text)
            if m:
                self.section_created = True
                name = m.group(1)
                # Same line: the dump's line numbers stay as they are.
                lead = b"DROP DATABASE IF EXISTS " + name + b" WITH (FORCE); "
                if ident_name(name) == b"template1":
                    lead = _NOT_TEMPLATE + b" " + lead
                return self._write(lead + text)
            m = _DROP_DB.match(text)
            if m:
                return self._write(self._forced(text, m))
        return self._write(text)

    def copy(self, data, start, end):
        if self.keep:
            self.out.write(memoryview(data)[start:end])
            self.out_lines += data.count(b"\n", start, end)
        else:
            self._write(b"\n" * data.count(b"\n", start, end))

    def end(self, reader):
        self._flush_globals()
        if reader.in_copy:
            self.log("the dump stream ended inside the data of a table", kind="error")
            # A row of more columns than any table has: the COPY fails and rolls back.
            self._write(b"aimms-ops: stream cut short" + b"\t" * 1700 + b"\n")
        if not reader.complete:
            self.log("the dump ended before its completion marker: the restore is "
                     "incomplete", kind="error")

    # -- the pieces
    def _closed(self, text, m):
        """The dump's closing of a database that allows no connections: built beside, it
        closes the rebuilt copy (the swap gives it the name), never the live one."""
        if self.beside is None:
            return text
        name = ident_name(m.group(1))
        return rename_statement(text, name, new_name(name), ident_name)

    def _forced(self, text, m):
        rest = m.group(2)
        if b"FORCE" in rest:
            return text
        semi = text.rstrip().rfind(b";")
        return text[:semi] + b" WITH (FORCE)" + text[semi:]

    def _tag(self, text):
        while True:
            self.tag_n += 1
            tag = b"$aimms_ops%d$" % self.tag_n
            if tag not in text:
                return tag

    def _flush_globals(self):
        if self.globals is None:
            return
        items, self.globals = self.globals, None
        if self.only is not None:
            for kind, item in items:
                self._blank(item if kind == "line" else b"".join(item))
            return
        if self.beside is not None:
            return self._globals_beside(items)
        roles = []
        tablespace = False
        for kind, item in items:
            if kind == "unit":
                text = b"".join(item)
                m = _CREATE_ROLE.match(text)
                if m:
                    roles.append(ident_name(m.group(1)))
                if _TABLESPACE.match(text):
                    tablespace = True
        first = next((i for i, (k, it) in enumerate(items)
                      if k == "unit" and _CREATE_ROLE.match(b"".join(it))), None)
        last = max((i for i, (k, _) in enumerate(items) if k == "unit"), default=None)
        for i, (kind, item) in enumerate(items):
            if i == first:
                self._insert(self._prelude(roles, transaction=not tablespace))
            if kind == "line":
                self._write(item)
                continue
            text = b"".join(item)
            if _CREATE_ROLE.match(text):
                tag = self._tag(text)
                body = text.rstrip(b"\r\n")
                text = (b"DO " + tag + b"BEGIN " + body +
                        b" EXCEPTION WHEN duplicate_object THEN NULL; END" + tag + b";\n")
            elif _DROP_ROLE.match(text):
                text = b"".join(b"-- aimms-ops kept the role: " + ln for ln in item)
            self._write(text)
            if i == last and first is not None and not tablespace:
                self._insert(b"COMMIT;\n")

    def _globals_beside(self, items):
        """The globals of a restore built beside: new roles and tablespaces made now (the
        rebuilt databases need them), the rest kept for the swap's transaction."""
        roles = [ident_name(m.group(1)) for m in (
            _CREATE_ROLE.match(b"".join(it)) for k, it in items if k == "unit") if m]
        deferred = [self._prelude(roles, transaction=False)]
        for kind, item in items:
            if kind == "line":
                self._write(item)
                continue
            text = b"".join(item)
            m = _CREATE_ROLE.match(text)
            if m:
                self.beside.role(ident_name(m.group(1)))
                tag = self._tag(text)
                self._write(b"DO " + tag + b"BEGIN " + text.rstrip(b"\r\n") +
                            b" EXCEPTION WHEN duplicate_object THEN NULL; END" + tag + b";\n")
            elif _TABLESPACE.match(text):
                self._tablespace(text, item)
            elif _DROP_ROLE.match(text) or _DROP_DB.match(text):
                self._write(b"".join(b"-- aimms-ops kept it: " + ln for ln in item))
            elif _SET.match(text):
                self._write(text)
                deferred.append(text)
            else:
                self._blank(text)
                deferred.append(text)
        deferred.append(self.preface.role_all_sql())
        self.beside.deferred(b"".join(deferred))

    def _tablespace(self, text, item):
        """CREATE TABLESPACE, left out when the cluster has it (``tablespaces``); its owner
        and grants are set by the swap, with the roles."""
        name = ident_name(_TABLESPACE_NAME.match(text).group(1))
        if name in self.beside.tablespaces:
            return self._write(b"".join(b"-- aimms-ops: the cluster has it: " + ln
                                        for ln in item))
        return self._write(text)

    def _prelude(self, roles, transaction):
        names = b", ".join(sql_literal(r) for r in roles) or b"NULL"
        tag = self._tag(names)
        begin = b"BEGIN;\n" if transaction else b""
        return begin + (
            b"DO " + tag + b"\nDECLARE r text; m record;\nBEGIN\n"
            b"  FOREACH r IN ARRAY ARRAY[" + names + b"]::text[] LOOP\n"
            b"    IF r IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN\n"
            b"      EXECUTE format('ALTER ROLE %I RESET ALL', r);\n"
            b"      EXECUTE format('ALTER ROLE %I PASSWORD NULL', r);\n"
            b"      EXECUTE format('COMMENT ON ROLE %I IS NULL', r);\n"
            b"      EXECUTE format('ALTER ROLE %I CONNECTION LIMIT -1', r);\n"
            b"    END IF;\n  END LOOP;\n"
            b"  FOR m IN SELECT g.rolname AS grp, u.rolname AS mem FROM pg_auth_members a\n"
            b"      JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles u ON u.oid = a.member\n"
            b"      WHERE u.rolname = ANY (ARRAY[" + names + b"]::text[]) LOOP\n"
            b"    EXECUTE format('REVOKE %I FROM %I', m.grp, m.mem);\n"
            b"  END LOOP;\nEND " + tag + b";\n")

    def _recreate(self, db):
        """Drop template1 or postgres and create it again with its own properties; built
        beside, create it under its new name instead (the live one is left as it is)."""
        props = self.props.get(db)
        beside = self.beside is not None
        if beside:
            self.beside.rebuilt(db)
            to = new_name(db)
            text = b""
        else:
            to = db
            lead = _NOT_TEMPLATE + b"\n" if db == b"template1" else b""
            text = lead + b"DROP DATABASE IF EXISTS " + db + b" WITH (FORCE);\n"
        if props:
            for ln in property_lines(props):
                if beside and ln.lstrip().startswith(b"\\connect"):
                    ln = connect_line(ln, to) + _WRITABLE
                elif beside:
                    ln = rename_statement(ln, db, to, ident_name)
                text += ln
            where = "the dump" if db in self.preface_dbs else "the live cluster"
        else:
            text += b"CREATE DATABASE " + to + b" WITH TEMPLATE = template0" + (
                b" IS_TEMPLATE = true" if db == b"template1" else b"") + b";\n"
            where = "nowhere: created with defaults"
        self.log("properties of database %s from %s" % (db.decode(), where))
        self._insert(text)

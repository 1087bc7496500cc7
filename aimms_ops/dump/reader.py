"""A push parser over a plain pg_dumpall dump that says what each part is."""

import re

from .lexer import _COPY, Lexer

HEADER = b"-- PostgreSQL database cluster dump"
MARKER = b"-- PostgreSQL database cluster dump complete"
SECTION_PREFIX = b'-- Database "'
SECTION_SUFFIX = b'" dump'
#: Lines of the preface: a title per database, then that database's properties as
#: pg_dump --create wrote them, each line behind this prefix.
PREFACE_TITLE = b"-- aimms-ops: properties of database "
PREFACE_LINE = b"-- | "
#: More of the preface: ``DBHEX NAMEHEX VERSION`` of each extension of each database
#: (pg_dump's CREATE EXTENSION names no version, so the default one would be made), and
#: the settings of ``ALTER ROLE ALL`` (pg_dumpall leaves them out): a title line, then
#: one ``HEX`` line each (``name=value`` as pg_db_role_setting holds it).
PREFACE_EXTENSION = b"-- aimms-ops: extension "
PREFACE_ROLE_ALL = b"-- aimms-ops: settings of ALTER ROLE ALL"
PREFACE_ROLE_ALL_LINE = b"-- aimms-ops: role all "
_PREFACE = (PREFACE_TITLE, PREFACE_LINE, PREFACE_EXTENSION, PREFACE_ROLE_ALL,
            PREFACE_ROLE_ALL_LINE)
READ_CHUNK = 1024 * 1024
_TOC = re.compile(rb"^-- (?:Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$")


#: After this many backslashes that end no COPY data, closer than one a ``_DENSE``
#: bytes, ``end_of_copy`` looks for the end line itself instead (rows full of ``\\N``).
_TRIES = 64
_DENSE = 4096


def end_of_copy(data, pos):
    """Where the ``\\.`` line that ends COPY data starts in ``data``, searched from
    ``pos`` (the start of a line); -1 when the data holds none.

    The search follows the backslashes (memchr's speed: rows seldom hold one), each a
    candidate when it starts a line and ``.`` and a line end follow it; where they are
    dense it searches for the whole ``\\n\\\\.\\n`` instead.
    """
    i = data.find(b"\\", pos)
    tries = 0
    while i >= 0:
        if data.startswith(b".\n", i + 1) and (i == pos or data[i - 1] == 10):
            return i
        tries += 1
        if tries > _TRIES and i - pos < tries * _DENSE:
            j = data.find(b"\n\\.\n", max(i - 1, pos))
            return j + 1 if j >= 0 else -1
        i = data.find(b"\\", i + 1)
    return -1


class Reader:
    """A push parser over a dump's bytes that tells a handler what each part is.

    The handler gets: ``line(line, kind)`` for a line at a statement boundary (kind
    ``blank``, ``comment``, ``meta``, ``section``, ``complete``, ``header`` or
    ``preface``), ``unit(lines)`` for whole lines holding one or more complete
    statements, ``copy(data, start, end)`` for COPY rows, ``data[start:end]`` (the ``\\.``
    line included; given so, not sliced, so that a gigabyte of rows is not copied), and
    ``end(reader)`` when the input is over. ``section`` is the current database
    (None in the globals), ``toc`` the last TOC header (name, type), ``in_copy``
    whether the input stopped inside COPY data.
    """

    def __init__(self, handler):
        self.handler = handler
        self.lexer = Lexer()
        self.carry = []  # the input not consumed yet: the start of one line, in pieces
        self.pending = []  # lines of the statement being read
        self.in_copy = False
        self.section = None
        self.sections = []
        self.seen_header = False
        self.complete = False
        self.toc = (b"", b"")
        self.copy_rows_cut = False

    def feed(self, data):
        """Read the next chunk of the dump; a line may be cut anywhere between chunks."""
        pos, n = 0, len(data)
        if self.carry:
            # An unfinished line is only put together once its end has come: a row
            # of many megabytes read 1 MiB at a time is copied once, not once a chunk;
            # and only that line is (the rest of the chunk is read where it is).
            nl = data.find(b"\n")
            if nl < 0:
                self.carry.append(data)
                return
            self.carry.append(data[:nl + 1])
            line = b"".join(self.carry)
            self.carry = []
            pos = nl + 1
            if self.in_copy:
                self._copy(line, 0)
            else:
                self._line(line)
        while pos < n:
            if self.in_copy:
                pos = self._copy(data, pos)
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self.carry = [data[pos:]]
                return
            self._line(data[pos:nl + 1])
            pos = nl + 1

    def _copy(self, data, pos):
        """Pass COPY rows through up to and including the ``\\.`` line.

        Only whole lines are passed on; the unfinished last line is kept in ``carry``,
        from where it starts (``pos`` when the chunk holds no line end after it).
        """
        j = end_of_copy(data, pos)
        if j < 0:
            cut = data.rfind(b"\n", pos) + 1 or pos
            if cut > pos:
                self.handler.copy(data, pos, cut)
            if cut < len(data):
                self.carry = [data[cut:]]
            return len(data)
        end = j + 3
        self.handler.copy(data, pos, end)
        self.in_copy = False
        return end

    def _line(self, line):
        lex = self.lexer
        if lex.at_boundary and not self.pending:
            body = line.rstrip(b"\r\n")
            stripped = body.strip()
            if not stripped:
                return self.handler.line(line, "blank")
            if stripped.startswith(b"\\"):
                return self.handler.line(line, "meta")
            if stripped.startswith(b"--"):
                return self.handler.line(line, self._comment(body))
        self.pending.append(line)
        ends = lex.feed(line)
        if ends and lex.at_boundary:
            unit, self.pending = self.pending, []
            if _COPY.match(b"".join(unit)):
                self.in_copy = True
            self.handler.unit(unit)

    def _comment(self, body):
        if not self.seen_header:
            if body == HEADER:
                self.seen_header = True
                return "header"
            if body.startswith(_PREFACE):
                return "preface"
            return "comment"
        if body.startswith(SECTION_PREFIX) and body.endswith(SECTION_SUFFIX):
            self.section = body[len(SECTION_PREFIX):-len(SECTION_SUFFIX)]
            self.sections.append(self.section)
            self.toc = (b"", b"")
            return "section"
        if body == MARKER:
            self.complete = True
            self.section = None
            return "complete"
        m = _TOC.match(body)
        if m:
            self.toc = (m.group(1), m.group(2))
        return "comment"

    def close(self):
        if self.carry:
            rest, self.carry = b"".join(self.carry), []
            if self.in_copy:
                self.handler.copy(rest, 0, len(rest))
            else:
                self._line(rest)
        if self.pending:
            unit, self.pending = self.pending, []
            self.handler.unit(unit)
        self.handler.end(self)


def preface_extra(body):
    """A preface line that is not a database's properties: ("extension", DB, NAME,
    VERSION), ("role_all",) for the title, ("role_all", SETTING); else None."""
    try:
        if body.startswith(PREFACE_EXTENSION):
            db, name, version = body[len(PREFACE_EXTENSION):].split(b" ")
            return ("extension", bytes.fromhex(db.decode()), bytes.fromhex(name.decode()),
                    version)
        if body == PREFACE_ROLE_ALL:
            return ("role_all",)
        if body.startswith(PREFACE_ROLE_ALL_LINE):
            return ("role_all", bytes.fromhex(body[len(PREFACE_ROLE_ALL_LINE):].decode()))
    except ValueError:
        return ("bad",)
    return None


class Tee:
    """Hands every event of a Reader to several handlers (a filter that also inspects)."""

    def __init__(self, *handlers):
        self.handlers = handlers

    def line(self, line, kind):
        for h in self.handlers:
            h.line(line, kind)

    def unit(self, lines):
        for h in self.handlers:
            h.unit(lines)

    def copy(self, data, start, end):
        for h in self.handlers:
            h.copy(data, start, end)

    def end(self, reader):
        for h in self.handlers:
            h.end(reader)

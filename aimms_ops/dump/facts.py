"""What a dump holds: its databases, roles, header, completion marker and preface."""

from .lexer import _CREATE_ROLE, ident_name
from .reader import PREFACE_LINE, PREFACE_TITLE, Reader, preface_extra

#: The command whose ``facts`` event holds :func:`fields` (``dump inspect``).
INSPECT = "dump-inspect"


class Facts:
    """What a dump holds: its databases and roles, its header and marker, its preface."""

    def __init__(self):
        self.size = 0  # bytes of the dump (decompressed)
        self.databases = []
        self.roles = []
        self.preface = {}  # database name -> its properties as pg_dump wrote them
        self.header = False
        self.complete = False
        self.cut_in_copy = False
        self.first = b""  # the first line that is not blank
        self.before_header = False  # a statement came before the cluster header
        self._reader = None
        self._preface_db = None

    def attach(self, reader):
        self._reader = reader
        return self

    def line(self, line, kind):
        if not self.first and line.strip():
            self.first = line.rstrip(b"\r\n")
        if kind == "preface":
            body = line.rstrip(b"\r\n")
            if preface_extra(body) is not None:
                pass  # the restore filter's (extension versions, ALTER ROLE ALL)
            elif body.startswith(PREFACE_TITLE):
                name = body[len(PREFACE_TITLE):].split(b" (", 1)[0]
                self._preface_db = name
                self.preface[name] = []
            elif self._preface_db is not None:
                self.preface[self._preface_db].append(line[len(PREFACE_LINE):])
        elif kind == "header":
            self.header = True
        elif kind == "section":
            self.databases.append(self._reader.section)

    def unit(self, lines):
        if not self.first:
            self.first = lines[0].rstrip(b"\r\n")
        if not self._reader.seen_header:
            self.before_header = True
        if self._reader.section is None and self._reader.seen_header:
            m = _CREATE_ROLE.match(b"".join(lines))
            if m:
                self.roles.append(ident_name(m.group(1)))

    def copy(self, data, start, end):
        pass

    def end(self, reader):
        self.complete = reader.complete
        self.cut_in_copy = reader.in_copy


def read_facts(chunks):
    """The Facts of a dump given as an iterable of byte chunks."""
    facts = Facts()
    reader = Reader(facts)
    facts.attach(reader)
    for chunk in chunks:
        facts.size += len(chunk)
        reader.feed(chunk)
    reader.close()
    return facts


class FactsFeeder:
    """Facts of a dump fed piece by piece (for a reader that also hashes and inflates)."""

    def __init__(self):
        self.facts = Facts()
        self.reader = Reader(self.facts)
        self.facts.attach(self.reader)

    def feed(self, data):
        self.facts.size += len(data)
        self.reader.feed(data)

    def close(self):
        self.reader.close()
        return self.facts


def _hex(name):
    return name.hex() if hasattr(name, "hex") else "".join("%02x" % c for c in name)


def fields(facts):
    """What a dump holds, as the fields of a ``facts`` event: names as hex, since they may
    hold newlines and bytes that are not UTF-8."""
    return {
        "header": bool(facts.header and not facts.before_header),
        "bytes": facts.size,
        "complete": bool(facts.complete),
        "cut_in_copy": bool(facts.cut_in_copy),
        "first": _hex(facts.first[:200]),
        "db": [_hex(db) for db in facts.databases],
        "role": [_hex(role) for role in facts.roles],
        "preface": [_hex(db) for db in facts.preface],
    }

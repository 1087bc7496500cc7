"""psql's lexer, as far as a dump needs it: where statements end, what names are.

Plain Python 3.6 (no f-strings, no annotations): this module also runs on the host, as
part of the script built from this package (see ``aimms_ops.dump``).
"""

import re

# In plain text: the next character that can change the lexer's state.
_SPECIAL = re.compile(rb"[;'\"$]|--|/\*|[Ee]'")
_DOLLAR = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_IDENT_CHAR = re.compile(rb"[A-Za-z0-9_$\x80-\xff]")
_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s";]+)'
_CREATE_ROLE = re.compile(rb"\s*CREATE ROLE (" + _IDENT + rb");\s*$", re.S)
_CREATE_DB = re.compile(rb"\s*CREATE DATABASE (" + _IDENT + rb")", re.S)
_DROP_DB = re.compile(rb"\s*DROP DATABASE (?:IF EXISTS )?(" + _IDENT + rb")(.*);\s*$", re.S)
_DROP_ROLE = re.compile(rb"\s*DROP ROLE ", re.S)
_COPY = re.compile(rb"\s*COPY .* FROM stdin;\s*$", re.S)
_TABLESPACE = re.compile(rb"\s*CREATE TABLESPACE ", re.S)
#: What the backup writes after the completion marker for a database that allows no
#: connections (aimms_ops/agent/cluster.py): pg_dump --create does not carry datallowconn.
_CLOSE_DB = re.compile(rb"\s*ALTER DATABASE (" + _IDENT + rb") ALLOW_CONNECTIONS false;\s*$", re.S)


def ident_name(ident):
    """The name an SQL identifier stands for (``"a""b"`` is ``a"b``)."""
    if ident.startswith(b'"') and ident.endswith(b'"') and len(ident) >= 2:
        return ident[1:-1].replace(b'""', b'"')
    return ident


def dump_ident(name):
    """``name`` quoted as pg_dump writes it (fmtId): a byte that starts no valid UTF-8
    character is written as the invalid pair 0xC0 0x20 (PostgreSQL 15.11 and later, the
    fix of CVE-2025-1094), so a name that is not valid UTF-8 is not written as it is."""
    out = bytearray(b'"')
    i, n = 0, len(name)
    while i < n:
        c = name[i]
        if c < 0x80:
            out += b'""' if c == 0x22 else name[i:i + 1]
            i += 1
            continue
        size = 2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
        char = name[i:i + size]
        try:
            valid = size > 1 and len(char) == size and bool(char.decode("utf-8"))
        except UnicodeDecodeError:
            valid = False
        if valid:
            out += char
            i += size
        else:
            out += b"\xc0 "
            i += 1
    return bytes(out + b'"')


def sql_literal(name):
    """``name`` as one line of SQL: an E'' literal with newlines escaped."""
    out = name.replace(b"\\", b"\\\\").replace(b"'", b"\\'")
    out = out.replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return b"E'" + out + b"'"


def shown(name):
    """A name for a message: decoded, with newlines and the like escaped (a byte that is
    not UTF-8 as ``\\xe9``)."""
    text = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    return text.encode("unicode_escape").decode("ascii", "replace").replace("\\\\", "\\")


class Lexer:
    """Where a line leaves psql's lexer: inside a statement, a literal, a comment."""

    def __init__(self):
        self.mode = "N"  # N plain, S '…', E E'…', Q "…", D $tag$…, C /* */
        self.tag = b""
        self.depth = 0
        self.in_stmt = False
        self.escaped = False  # an E'' string's backslash ended the previous line

    @property
    def at_boundary(self):
        return self.mode == "N" and not self.in_stmt

    def feed(self, line):
        """Advance over one line; returns the number of statements that ended in it."""
        ends = 0
        i, n = 0, len(line)
        while i < n:
            mode = self.mode
            if mode == "N":
                m = _SPECIAL.search(line, i)
                stop = m.start() if m else n
                if not self.in_stmt and line[i:stop].strip():
                    self.in_stmt = True
                if m is None:
                    return ends
                tok = m.group()
                i = m.end()
                if tok == b";":
                    self.in_stmt = False
                    ends += 1
                elif tok == b"--":
                    return ends
                elif tok == b"/*":
                    self.mode, self.depth = "C", 1
                elif tok == b"'":
                    self.in_stmt, self.mode = True, "S"
                elif tok in (b"E'", b"e'"):
                    self.in_stmt = True
                    prev = line[m.start() - 1:m.start()]
                    self.mode = "S" if prev and _IDENT_CHAR.match(prev) else "E"
                elif tok == b'"':
                    self.in_stmt, self.mode = True, "Q"
                else:  # "$"
                    self.in_stmt = True
                    prev = line[m.start() - 1:m.start()]
                    d = _DOLLAR.match(line, m.start())
                    if d and not (prev and _IDENT_CHAR.match(prev)):
                        self.mode, self.tag = "D", d.group()
                        i = d.end()
            elif mode == "S" or mode == "Q":
                quote = b"'" if mode == "S" else b'"'
                j = line.find(quote, i)
                if j < 0:
                    return ends
                if line[j + 1:j + 2] == quote:
                    i = j + 2
                else:
                    self.mode, i = "N", j + 1
            elif mode == "E":
                if self.escaped:
                    self.escaped = False
                    i += 1
                    continue
                j = _next_of(line, i, b"'", b"\\")
                if j < 0:
                    return ends
                if line[j:j + 1] == b"\\":
                    if j + 1 >= n:
                        self.escaped = True
                        return ends
                    i = j + 2
                elif line[j + 1:j + 2] == b"'":
                    i = j + 2
                else:
                    self.mode, i = "N", j + 1
            elif mode == "D":
                j = line.find(self.tag, i)
                if j < 0:
                    return ends
                self.mode, i = "N", j + len(self.tag)
            else:  # C
                a = line.find(b"/*", i)
                b = line.find(b"*/", i)
                if b < 0 and a < 0:
                    return ends
                if a >= 0 and (b < 0 or a < b):
                    self.depth += 1
                    i = a + 2
                else:
                    self.depth -= 1
                    i = b + 2
                    if self.depth == 0:
                        self.mode = "N"
        return ends


def _next_of(line, i, a, b):
    x, y = line.find(a, i), line.find(b, i)
    if x < 0:
        return y
    if y < 0:
        return x
    return min(x, y)

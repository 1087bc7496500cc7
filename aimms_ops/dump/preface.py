"""What an aimms-ops backup's preface tells a restore beyond the dump itself: the
properties of template1 and postgres, extension versions, ALTER ROLE ALL's settings."""

import re

from .lexer import _IDENT, ident_name, sql_literal
from .reader import Reader

#: What of a preface block is a property of the database itself (pg_dump's TOC types).
_PROPERTY_TYPES = (b"DATABASE", b"DATABASE PROPERTIES")
_PROPERTY_OF_DB = (b"COMMENT", b"ACL", b"SECURITY LABEL")
_CREATE_EXT = re.compile(rb"(\s*CREATE EXTENSION IF NOT EXISTS (" + _IDENT + rb")"
                         rb" WITH SCHEMA " + _IDENT + rb");\s*$", re.S)


class Preface:
    """Extension versions and ALTER ROLE ALL's settings, as the preface says them."""

    def __init__(self):
        self.extensions = {}  # database -> extension -> version
        self.role_all = None  # None: the dump does not say

    def take(self, extra):
        """One line of the preface, as reader.preface_extra reads it."""
        if extra[0] == "extension":
            self.extensions.setdefault(extra[1], {})[extra[2]] = extra[3]
        elif extra[0] == "role_all":
            self.role_all = self.role_all or []
            if len(extra) == 2:
                self.role_all.append(extra[1])

    def versioned(self, text, section):
        """CREATE EXTENSION with the version the backed-up database had (pg_dump names
        none, so the image's default would be made)."""
        m = _CREATE_EXT.match(text)
        version = m and self.extensions.get(section, {}).get(ident_name(m.group(2)))
        if not version:
            return text
        return m.group(1) + b" VERSION " + sql_literal(version) + text[m.end(1):]

    def role_all_sql(self):
        """ALTER ROLE ALL's settings as the dump's preface says (nothing when it does not
        say: older backups leave the live ones as they are)."""
        if self.role_all is None:
            return b""
        out = [b"ALTER ROLE ALL RESET ALL;\n"]
        for setting in self.role_all:
            name, _, value = setting.partition(b"=")
            values = split_list(value) if name.lower() in _LIST_QUOTE else [value]
            out.append(b'ALTER ROLE ALL SET "' + name.replace(b'"', b'""') + b'" TO ' +
                       b", ".join(sql_literal(v) for v in values) + b";\n")
        return b"".join(out)


#: Settings whose value is a list of names, each quoted as an identifier where needed
#: (PostgreSQL's GUC_LIST_QUOTE): given as one literal they would be one name.
_LIST_QUOTE = (b"search_path", b"temp_tablespaces", b"session_preload_libraries",
               b"shared_preload_libraries", b"local_preload_libraries",
               b"unix_socket_directories")


def split_list(value):
    """The names of a list setting as pg_db_role_setting holds it (``a, "b c"``), as
    pg_dump's SplitGUCList reads it."""
    items, cur, quoted, i = [], b"", False, 0
    while i < len(value):
        ch = value[i:i + 1]
        if quoted:
            if ch == b'"' and value[i + 1:i + 2] == b'"':
                cur += b'"'
                i += 1
            elif ch == b'"':
                quoted = False
            else:
                cur += ch
        elif ch == b'"':
            quoted = True
        elif ch == b",":
            items.append(cur.strip())
            cur = b""
        else:
            cur += ch
        i += 1
    items.append(cur.strip())
    return items


def property_lines(props):
    """Of pg_dump --create output for one database, only the database's own properties.

    Extensions and other objects it may carry are left out: the dump's section makes
    those. Meta-commands (``\\connect``, ``\\restrict``) are kept. One item a line or a
    whole statement (a name in it may span lines).
    """
    keep = []

    class _Pick:
        def line(self, line, kind):
            if kind == "meta":
                keep.append(line)

        def unit(self, lines):
            name, typ = reader.toc
            if not typ or typ in _PROPERTY_TYPES or (
                    typ in _PROPERTY_OF_DB and name.startswith(b"DATABASE ")):
                keep.append(b"".join(lines))  # whole: a name may span lines

        def copy(self, data, start, end):
            pass

        def end(self, r):
            pass

    reader = Reader(_Pick())
    reader.seen_header = True
    reader.section = b"?"
    for ln in props:
        reader.feed(ln)
    reader.close()
    return keep

"""A restore built beside the live cluster: the names it builds under, the ones it keeps
the replaced databases under, and the rewrite of a dump's statements that name a database.

A database ``X`` of the dump is rebuilt as ``new_name(X)``, a name no application uses;
once every database of the restore is rebuilt, the live ``X`` is renamed to
``aside_name(X, stamp)`` and the rebuilt one to ``X``, in one transaction (swap.py).
Names are at most 63 bytes, whatever ``X`` is: a digest of ``X`` stands for it, and
the original name is kept as a setting of the database set aside (``REPLACED_SETTING``).
"""

import hashlib
import re

from .lexer import dump_ident

#: What every name this restore makes starts with: never in a backup, never a target.
NEW_PREFIX = b"aimms_ops_new_"
OLD_PREFIX = b"aimms_ops_old_"
#: The database psql runs the swap from (none of the renamed ones can be connected to).
SWAP_DB = NEW_PREFIX + b"swap"
#: How long a database a restore replaced is kept aside: the next restore or backup
#: after that drops it (fab drop-replaced any time before).
KEEP_REPLACED_DAYS = 7
#: The setting on a database set aside: ``HEXNAME STAMP ISTEMPLATE ALLOWCONN``.
REPLACED_SETTING = "aimms_ops.replaced"

_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s";]+)'
#: Statements of pg_dump that name the database they are in; group 2 is its name.
_NAMES_DB = [re.compile(p, re.S) for p in (
    rb"(\s*CREATE DATABASE )(" + _IDENT + rb")",
    rb"(\s*ALTER DATABASE )(" + _IDENT + rb")",
    rb"(\s*COMMENT ON DATABASE )(" + _IDENT + rb")",
    rb"(\s*SECURITY LABEL (?:FOR \S+ )?ON DATABASE )(" + _IDENT + rb")",
    rb"(\s*(?:GRANT|REVOKE) [^;]*? ON DATABASE )(" + _IDENT + rb")",
    rb"(\s*ALTER ROLE " + _IDENT + rb" IN DATABASE )(" + _IDENT + rb")",
)]


def _digest(name):
    return hashlib.sha1(name).hexdigest()[:16].encode()  # noqa: S324 - a name, not a secret


def new_name(name):
    """The name database ``name`` is rebuilt under."""
    return NEW_PREFIX + _digest(name)


def aside_name(name, stamp):
    """The name the live ``name`` is kept under once replaced (``stamp``: YYYYmmdd_HHMMSS,
    UTC)."""
    return OLD_PREFIX + stamp + b"_" + _digest(name)[:12]


def is_ours(name):
    """Whether a database is one a restore made (being rebuilt, or set aside)."""
    return name.startswith((NEW_PREFIX, OLD_PREFIX))


def rename_statement(text, name, to, ident_name):
    """``text`` (one statement) with the database ``name`` it names replaced by ``to``;
    a statement that names no database, or another one, as it is."""
    for pattern in _NAMES_DB:
        m = pattern.match(text)
        if m and ident_name(m.group(2)) == name:
            return text[:m.start(2)] + to + text[m.end(2):]
    return text


def own_name(text, name):
    """``text`` (one statement of the section of database ``name``) with the name pg_dump
    wrote for that database given back its own bytes: pg_dump cannot write a name that is
    not valid UTF-8 (``lexer.dump_ident``); any other statement as it is."""
    try:
        name.decode("utf-8")
        return text
    except UnicodeDecodeError:
        pass
    written = dump_ident(name)
    for pattern in _NAMES_DB:
        m = pattern.match(text)
        if m and m.group(2) == written:
            return text[:m.start(2)] + b'"' + name.replace(b'"', b'""') + b'"' + text[m.end(2):]
    return text


def connect_line(line, to):
    """A ``\\connect`` meta-command to database ``to`` (a plain identifier)."""
    end = line[len(line.rstrip(b"\r\n")):]
    return b"\\connect " + to + (end or b"\n")


class Beside:
    """What a stream built beside writes for the swap, in the state directory: the
    databases it rebuilt and the roles of the dump (``manifest``: ``db HEX`` and
    ``role HEX`` lines) and the globals kept for the swap's transaction (``deferred.sql``)."""

    def __init__(self, state, tablespaces=()):
        self.state = state
        #: The tablespaces the live cluster has: the dump's CREATE of those is left out.
        self.tablespaces = set(tablespaces)
        self._manifest = open(state + "/manifest", "wb")
        self._seen = set()

    def rebuilt(self, name):
        if name not in self._seen:
            self._seen.add(name)
            self._manifest.write(b"db " + name.hex().encode() + b"\n")
            self._manifest.flush()

    def role(self, name):
        self._manifest.write(b"role " + name.hex().encode() + b"\n")
        self._manifest.flush()

    def deferred(self, sql):
        with open(self.state + "/deferred.sql", "wb") as fh:
            fh.write(sql)

    def close(self):
        self._manifest.close()

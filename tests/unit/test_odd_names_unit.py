"""A database name that is not valid UTF-8: as pg_dump writes it, as the restore filter
gives it back, as a command line carries it to the container, as messages show it."""

from __future__ import annotations

import io
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimms_ops.core import printf as core_printf
from aimms_ops.core.errors import shown
from aimms_ops.dump.beside import Beside, new_name, own_name
from aimms_ops.dump.lexer import dump_ident
from aimms_ops.dump.lexer import shown as host_shown
from aimms_ops.dump.reader import Reader
from aimms_ops.dump.restore_filter import RestoreFilter
from aimms_ops.restore.plan import printf_format

RAW = b"caf\xe9 'x'"


@pytest.mark.parametrize(("name", "written"), [
    (b"plain", b'"plain"'),
    (b'a"b', b'"a""b"'),
    ("caf\u00e9".encode(), '"caf\u00e9"'.encode()),
    (b"caf\xe9", b'"caf\xc0 "'),            # a lone Latin-1 byte
    (b"\xe2\x82", b'"\xc0 \xc0 "'),         # a character cut short
    (b"\xff\xfeok", b'"\xc0 \xc0 ok"'),
])
def test_dump_ident_writes_what_pg_dump_writes(name, written):
    assert dump_ident(name) == written


def test_own_name_gives_the_section_database_its_bytes_back():
    assert own_name(b'CREATE DATABASE "caf\xc0  \'x\'" WITH TEMPLATE = template0;\n', RAW) \
        == b'CREATE DATABASE "caf\xe9 \'x\'" WITH TEMPLATE = template0;\n'
    assert own_name(b'ALTER DATABASE "caf\xc0  \'x\'" OWNER TO postgres;', RAW) \
        == b'ALTER DATABASE "caf\xe9 \'x\'" OWNER TO postgres;'
    # Another database, another statement, a valid name: as they are.
    other = b'ALTER DATABASE "other" OWNER TO postgres;'
    assert own_name(other, RAW) == other
    assert own_name(b"SELECT 1;", RAW) == b"SELECT 1;"
    assert own_name(b'CREATE DATABASE "x";', b"x") == b'CREATE DATABASE "x";'


def test_a_restore_built_beside_renames_the_database_pg_dump_could_not_name(tmp_path):
    dump = (b"--\n-- PostgreSQL database cluster dump\n--\n\n"
            b"--\n-- Databases\n--\n\n"
            b'--\n-- Database "caf\xe9 \'x\'" dump\n--\n\n'
            b'CREATE DATABASE "caf\xc0  \'x\'" WITH TEMPLATE = template0;\n'
            b'ALTER DATABASE "caf\xc0  \'x\'" OWNER TO postgres;\n'
            b"\\encoding SQL_ASCII\n"
            b"\\connect -reuse-previous=on \"dbname='caf\xe9 \\'x\\''\"\n"
            b"CREATE TABLE t (a int);\n"
            b"--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    out = io.BytesIO()
    beside = Beside(str(tmp_path))
    filt = RestoreFilter(out, lambda msg, **_: None, beside=beside)
    reader = Reader(filt)
    filt.attach(reader)
    reader.feed(dump)
    reader.close()
    beside.close()
    text = out.getvalue()
    assert b"CREATE DATABASE " + new_name(RAW) + b" WITH" in text
    assert b"ALTER DATABASE " + new_name(RAW) + b" OWNER TO postgres;" in text
    assert b"\xc0" not in text
    assert (tmp_path / "manifest").read_bytes().startswith(b"db " + RAW.hex().encode())


@pytest.mark.parametrize("text", ["dbname='caf\udce9 \\'x\\''", "a%b\\c d", "x\ny"])
def test_printf_format_is_ascii_and_prints_the_bytes(text):
    fmt = printf_format(text)
    assert fmt.isascii() and "\n" not in fmt
    out = subprocess.run(["sh", "-c", 'printf "$1"', "sh", fmt], capture_output=True,
                         check=True).stdout
    assert out == text.encode("utf-8", "surrogateescape")


def test_a_byte_that_is_not_utf8_is_shown_as_the_host_shows_it():
    assert shown(RAW.decode("utf-8", "surrogateescape")) == '"caf\\xe9 \'x\'"'
    assert host_shown(RAW) == "caf\\xe9 'x'"
    assert shown("a\\udce9") == "'a\\\\udce9'"  # a backslash of the name stays one


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=64).filter(lambda b: b"\0" not in b))
def test_any_bytes_cross_docker_exec_as_a_printf_format(data):
    """The backup's trailer (ALTER DATABASE … ALLOW_CONNECTIONS false of a name that is not
    UTF-8) crosses docker exec's arguments this way: ASCII, and printf gives it back."""
    fmt = core_printf.printf_format(data)
    assert fmt.isascii() and fmt.isprintable()
    out = subprocess.run(["sh", "-c", 'printf -- "$1"', "sh", fmt], capture_output=True,
                         check=True).stdout
    assert out == data

"""The dump scanner: structure found as psql reads it, and the restore filter's rewrites.

Pure logic: the filter is run as the host runs it (``python3 aimms-ops.pyz dump filter``), on
dumps written here that hold what breaks a line-pattern filter.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from aimms_ops.dump import facts as dumpfacts
from aimms_ops.dump.lexer import Lexer
from tests.hostprog import HOST

BODY = (
    "CREATE FUNCTION public.tricky() RETURNS void\n"
    "    LANGUAGE plpgsql\n"
    "    AS $_$\n"
    "BEGIN\n"
    "CREATE ROLE reporting_tmp;\n"
    "CREATE DATABASE x;\n"
    "DROP DATABASE y;\n"
    "\\connect postgres\n"
    "COPY app.people FROM stdin;\n"
    '-- Database "regression" dump\n'
    "/* not /* closed */ here\n"
    "END $_$;\n"
)
COMMENT = ("COMMENT ON TABLE app.people IS E'it''s\\nCOPY app.people FROM stdin;\\n"
           "-- Database \"regression\" dump\\n\\\\.\\n';\n")
LITERAL = ("CREATE TABLE app.t (\n    note text DEFAULT '\n"
           "-- PostgreSQL database cluster dump complete\nCOPY x FROM stdin;\n'::text\n);\n")


def dump(*, preface: str = "", roles: str = "", sections: dict[str, str]) -> str:
    """A pg_dumpall-shaped dump: header, globals, one section per database, marker."""
    out = [preface, "--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict K\n",
           "SET default_transaction_read_only = off;\n\n", roles, "\\unrestrict K\n\n"]
    for name, body in sections.items():
        out.append(f'--\n-- Database "{name}" dump\n--\n\n{body}\n')
    out.append("--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    return "".join(out)


ROLES = ('CREATE ROLE "report\nreader";\nALTER ROLE "report\nreader" WITH NOLOGIN;\n'
         'CREATE ROLE "Odd ""Role""";\nCREATE ROLE postgres;\n'
         'ALTER ROLE postgres WITH SUPERUSER;\nGRANT "Odd ""Role""" TO "report\nreader";\n')
APP = ("CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8';\n"
       "\\connect app\n\\restrict K2\n" + BODY + COMMENT + LITERAL +
       "\n--\n-- Data for Name: people; Type: TABLE DATA; Schema: app; Owner: postgres\n--\n\n"
       "COPY app.people (name) FROM stdin;\n-- Database \"postgres\" dump\nCREATE ROLE x;\n"
       "\\\\.\n\\.\n\\unrestrict K2\n")
ODD = ("CREATE DATABASE \"odd \"\"db\"\" 'x' ü ; name\" WITH TEMPLATE = template0;\n"
       "\\connect -reuse-previous=on \"dbname='odd \"db\" ''x'' ü ; name'\"\n"
       "CREATE TABLE t (a int);\n")
AWKWARD = dump(roles=ROLES, sections={
    "template1": "\\connect template1\n\\restrict K3\nCREATE FUNCTION dba_helper() "
                 "RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n\\unrestrict K3\n",
    "app": APP, "odd \"db\" 'x' ü ; name": ODD,
    "postgres": "\\connect postgres\nCREATE TABLE public.kept (x int);\n"})


def run_filter(text: str, *args: str, rc: int = 0) -> tuple[str, str]:
    proc = subprocess.run([*HOST, "dump", "filter", *args], input=text.encode(),
                          capture_output=True, check=False)
    assert proc.returncode == rc, proc.stderr.decode()
    return proc.stdout.decode(), proc.stderr.decode()


def dropping_inserted(out: str, err: str) -> list[str]:
    """The filter's output lines with its reported inserted blocks taken out."""
    lines = out.split("\n")
    for line in reversed(err.splitlines()):
        if line.startswith("aimms-ops: inserted "):
            n, after = int(line.split()[2]), int(line.split()[-1])
            del lines[after:after + n]
    return lines


def test_facts_follow_the_structure_not_the_look():
    facts = dumpfacts.read_facts([AWKWARD.encode()])
    assert facts.header and facts.complete and not facts.before_header
    assert [d.decode() for d in facts.databases] == [
        "template1", "app", "odd \"db\" 'x' ü ; name", "postgres"]
    assert [r.decode() for r in facts.roles] == ["report\nreader", 'Odd "Role"', "postgres"]


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_facts_are_the_same_whatever_the_chunks(size):
    data = AWKWARD.encode()
    facts = dumpfacts.read_facts(data[i:i + size] for i in range(0, len(data), size))
    assert len(facts.databases) == 4 and len(facts.roles) == 3 and facts.complete


def test_function_bodies_literals_comments_and_rows_pass_byte_for_byte():
    out, _err = run_filter(AWKWARD)
    for piece in (BODY, COMMENT, LITERAL, '-- Database "postgres" dump\nCREATE ROLE x;\n\\\\.\n'):
        assert piece in out
    # Nothing in them was taken for structure: one drop per real CREATE DATABASE.
    assert out.count("DROP DATABASE IF EXISTS app WITH (FORCE); CREATE DATABASE app") == 1
    assert "DROP DATABASE y;" in out and "DROP DATABASE y WITH" not in out


def test_every_dump_line_keeps_its_number_outside_the_reported_blocks():
    out, err = run_filter(AWKWARD)
    src = AWKWARD.split("\n")
    got = dropping_inserted(out, err)
    assert len(got) == len(src)
    for g, s in zip(got, src, strict=True):
        assert s in g, (g, s)  # the same line, or the line kept inside its rewrite


def test_roles_with_newlines_and_quotes_tolerate_existing_ones_in_one_transaction():
    out, _err = run_filter(AWKWARD)
    assert 'BEGIN CREATE ROLE "report\nreader"; EXCEPTION WHEN duplicate_object' in out
    assert 'BEGIN CREATE ROLE "Odd ""Role"""; EXCEPTION WHEN duplicate_object' in out
    prelude = out[out.index("BEGIN;\n"):out.index("COMMIT;\n")]
    assert "ARRAY[E'report\\nreader', E'Odd \"Role\"', E'postgres']" in prelude
    assert "RESET ALL" in prelude and "REVOKE %I FROM %I" in prelude
    # The prelude is one reported block before the first CREATE ROLE.
    assert out.index("BEGIN;\n") < out.index('CREATE ROLE "report')
    assert 'GRANT "Odd ""Role""" TO "report\nreader";\nCOMMIT;' in out


def test_template1_and_postgres_are_recreated_with_the_properties_the_dump_carries():
    props = {
        "template1": "\\restrict P\nSET x = 1;\n\n--\n-- Name: template1; Type: DATABASE; "
                     "Schema: -; Owner: postgres\n--\n\nCREATE DATABASE template1 WITH "
                     "TEMPLATE = template0 ENCODING = 'UTF8';\n\\unrestrict P\n"
                     "\\connect template1\n--\n-- Name: pgcrypto; Type: EXTENSION; Schema: -; "
                     "Owner: -\n--\n\nCREATE EXTENSION pgcrypto;\n"
                     "--\n-- Name: DATABASE template1; Type: ACL; Schema: -; Owner: postgres\n"
                     "--\n\nREVOKE TEMPORARY ON DATABASE template1 FROM PUBLIC;\n",
        "postgres": "--\n-- Name: postgres; Type: DATABASE; Schema: -; Owner: postgres\n--\n\n"
                    "CREATE DATABASE postgres WITH TEMPLATE = template0;\n\\connect postgres\n"
                    "--\n-- Name: DATABASE postgres; Type: COMMENT; Schema: -; Owner: x\n--\n\n"
                    "COMMENT ON DATABASE postgres IS 'two\nlines';\n"
                    "--\n-- Name: postgres; Type: DATABASE PROPERTIES; Schema: -; Owner: x\n"
                    "--\n\nALTER DATABASE postgres SET work_mem TO '7MB';\n"}
    preface = "".join(f"-- aimms-ops: properties of database {db} (pg_dump --create)\n" +
                      "".join(f"-- | {ln}\n" for ln in text.split("\n")[:-1])
                      for db, text in props.items())
    text = preface + AWKWARD
    facts = dumpfacts.read_facts([text.encode()])
    assert facts.header and not facts.before_header
    assert sorted(facts.preface) == [b"postgres", b"template1"]
    out, err = run_filter(text)
    t1 = out.index('-- Database "template1" dump')
    block = out[t1:out.index("\\connect template1\n\\restrict K3")]
    assert "datistemplate = false WHERE datname = 'template1'" in block
    assert "DROP DATABASE IF EXISTS template1 WITH (FORCE);" in block
    assert "CREATE DATABASE template1 WITH TEMPLATE = template0 ENCODING = 'UTF8';" in block
    assert "REVOKE TEMPORARY ON DATABASE template1 FROM PUBLIC;" in block
    assert "CREATE EXTENSION" not in block  # the section makes its objects, not the preface
    pg = out[out.index('-- Database "postgres" dump'):]
    assert "DROP DATABASE IF EXISTS postgres WITH (FORCE);" in pg
    assert "COMMENT ON DATABASE postgres IS 'two\nlines';" in pg
    assert "ALTER DATABASE postgres SET work_mem TO '7MB';" in pg
    assert "properties of database postgres from the dump" in err
    assert len(dropping_inserted(out, err)) == len(text.split("\n"))


def test_without_a_preface_the_live_properties_are_used(tmp_path):
    live = tmp_path / "postgres.props"
    live.write_text("CREATE DATABASE postgres WITH TEMPLATE = template0;\n"
                    "REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC;\n")
    out, err = run_filter(AWKWARD, "--props", f"postgres={live}")
    assert "REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC;" in out
    assert "properties of database postgres from the live cluster" in err
    assert "properties of database template1 from nowhere" in err
    assert "CREATE DATABASE template1 WITH TEMPLATE = template0 IS_TEMPLATE = true;" in out


def test_one_database_by_its_exact_name_and_nothing_else():
    name = "odd \"db\" 'x' ü ; name"
    out, err = run_filter(AWKWARD, "--only", name.encode().hex())
    src = AWKWARD.split("\n")
    lines = out.split("\n")
    assert len(lines) == len(src) and "inserted" not in err
    kept = [ln for ln in lines if ln.strip() and not ln.startswith("--")]
    assert kept == [
        "DROP DATABASE IF EXISTS \"odd \"\"db\"\" 'x' ü ; name\" WITH (FORCE); "
        "CREATE DATABASE \"odd \"\"db\"\" 'x' ü ; name\" WITH TEMPLATE = template0;",
        "\\connect -reuse-previous=on \"dbname='odd \"db\" ''x'' ü ; name'\"",
        "CREATE TABLE t (a int);"]


def test_clean_dump_drops_are_forced_and_roles_kept():
    clean = dump(roles="DROP ROLE IF EXISTS app;\nDROP ROLE IF EXISTS postgres;\n"
                 "CREATE ROLE app;\n", sections={
                     "template1": "UPDATE pg_catalog.pg_database SET datistemplate = false "
                                  "WHERE datname = 'template1';\nDROP DATABASE template1;\n"
                                  "CREATE DATABASE template1 WITH TEMPLATE = template0;\n"
                                  "\\connect template1\n",
                     "postgres": "DROP DATABASE postgres;\nCREATE DATABASE postgres WITH "
                                 "TEMPLATE = template0;\n\\connect postgres\n"})
    out, err = run_filter(clean)
    assert "-- aimms-ops kept the role: DROP ROLE IF EXISTS app;" in out
    assert "DROP DATABASE template1 WITH (FORCE);" in out
    assert "DROP DATABASE postgres WITH (FORCE);" in out
    # The dump recreates them itself: no second, inserted recreation.
    assert "properties of database" not in err


def test_a_stream_cut_in_copy_data_fails_the_copy_and_the_restore():
    cut = AWKWARD[:AWKWARD.index("CREATE ROLE x;\n\\\\.")]
    out, err = run_filter(cut, rc=3)
    assert out.endswith("\t" * 1700 + "\n")
    assert "ended inside the data of a table" in err
    assert "ended before its completion marker" in err


@pytest.mark.parametrize("sql, closes", [
    ("SELECT $a$ ; $b$ ; $a$;\n", True),
    ("SELECT a$b$ FROM t;\n", True),  # an identifier with $ is no dollar quote
    ("SELECT E'\\' ;' ;\n", True),
    ("SELECT 'a'' ;' ;\n", True),
    ('SELECT "a"";" ;\n', True),
    ("SELECT /* a /* b */ ; */ 1;\n", True),
    ("SELECT 1 -- ;\n", False),
    ("SELECT 'open ;\n", False),
])
def test_lexer_ends_statements_only_outside_quotes_and_comments(sql, closes):
    lex = Lexer()
    lex.feed(sql.encode())
    assert lex.at_boundary is closes


def test_the_filter_stops_the_stream_once_the_operators_session_is_gone():
    """--session PID: while PID lives the stream is the same as without it; once it is gone
    the filter ends the stream as a cut one (the restore fails, psql replays no more)."""
    alive, _ = run_filter(AWKWARD, "--session", str(os.getpid()))
    assert alive == run_filter(AWKWARD)[0]
    gone = subprocess.Popen(["true"])
    gone.wait()
    out, err = run_filter(AWKWARD, "--session", str(gone.pid), rc=3)
    assert "the operator's session ended" in err and "completion marker" in err
    assert "CREATE TABLE" not in out


def test_the_host_script_widens_the_pipes_it_reads_and_writes(tmp_path):
    """A gigabyte through a 64 KiB pipe costs a wake-up per 64 KiB: the scanner asks for 1 MiB."""
    import fcntl
    import os

    from aimms_ops.dump import cli

    r, w = os.pipe()
    plain = tmp_path / "f"
    plain.write_bytes(b"")
    with open(plain, "rb") as fh:
        try:
            cli._widen_pipes(r, w, fh.fileno())  # a file is left as it is, without an error
            assert fcntl.fcntl(r, 1032) == cli.PIPE_SIZE  # F_GETPIPE_SZ
        finally:
            os.close(r)
            os.close(w)

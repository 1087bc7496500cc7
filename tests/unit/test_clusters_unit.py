"""Unit: normalize_dump's masks, and the look-alike lines it must leave alone."""

from __future__ import annotations

from ..clusters import conninfo, normalize_dump, qi, ql

CHILD_ORIGINAL = """\
--
-- Name: gtestxx_4; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.gtestxx_4 (
    b integer,
    a integer NOT NULL
)
INHERITS (public.gtest1);


\\restrict abc123
COPY public.gtestxx_4 (b, a) FROM stdin;
2	1
4	3
\\.
\\unrestrict abc123
"""

CHILD_RESTORED = """\
--
-- Name: gtestxx_4; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.gtestxx_4 (
    a integer NOT NULL,
    b integer
)
INHERITS (public.gtest1);

\\restrict zzz999
COPY public.gtestxx_4 (a, b) FROM stdin;
3	4
1	2
\\.
\\unrestrict zzz999
"""


def test_child_column_order_row_order_keys_and_blank_lines_are_masked():
    assert normalize_dump(CHILD_ORIGINAL) == normalize_dump(CHILD_RESTORED)
    assert "restrict" not in normalize_dump(CHILD_ORIGINAL)


def test_a_real_difference_still_shows():
    changed = CHILD_RESTORED.replace("1\t2", "1\t5")
    assert normalize_dump(CHILD_ORIGINAL) != normalize_dump(changed)
    plain = "CREATE TABLE public.t (\n    b integer,\n    a integer\n);\n"
    assert normalize_dump(plain) != normalize_dump(plain.replace("b integer,\n    a integer",
                                                                 "a integer,\n    b integer"))


BODY = """\
CREATE FUNCTION app.f() RETURNS text
    LANGUAGE plpgsql
    AS $_$
DECLARE s text := $x$
COPY app.people (id, name) FROM stdin;
2	b
1	a
\\.
$x$;
BEGIN /* a /* nested */ comment;
COPY app.people (id, name) FROM stdin;
*/ RETURN s; END
$_$;

COMMENT ON TABLE app.people IS 'it''s
COPY app.people (id, name) FROM stdin;
2	b
1	a
';

COPY app.people (id, name) FROM stdin;
2	b
1	a
\\.
"""


def test_look_alikes_in_bodies_comments_and_literals_are_left_alone():
    out = normalize_dump(BODY).splitlines()
    # the two look-alikes keep their row order; only the real COPY block is sorted
    assert out.count("2\tb") == 3 and out.count("1\ta") == 3
    last_copy = len(out) - 1 - out[::-1].index("COPY app.people (id, name) FROM stdin;")
    assert out[last_copy + 1:last_copy + 4] == ["1\ta", "2\tb", "\\."]
    first_copy = out.index("COPY app.people (id, name) FROM stdin;")
    assert out[first_copy + 1:first_copy + 3] == ["2\tb", "1\ta"]


def test_copy_of_a_table_whose_name_has_a_newline():
    dump = 'COPY app."odd\ntable" ("col\numn", b) FROM stdin;\nz\t1\na\t2\n\\.\nSELECT 1;\n'
    out = normalize_dump(dump)
    assert out == 'COPY app."odd\ntable" ("col\numn", b) FROM stdin;\na\t2\nz\t1\n\\.\nSELECT 1;\n'


def test_quoting_helpers():
    assert qi('a "b"\nc') == '"a ""b""\nc"'
    assert ql("it's") == "'it''s'"
    assert conninfo("odd \"db\" 'x' ü ; name") == "dbname='odd \"db\" \\'x\\' ü ; name'"
    assert conninfo("a\\b=c") == "dbname='a\\\\b=c'"


def test_the_seed_tables_are_those_sandbox_up_seeds():
    """What drop_extra_tables keeps is what sandbox/up.sh checks for and makes."""
    from tests.sandbox_client import REPO, SEED_TABLES

    up = (REPO / "sandbox" / "up.sh").read_text()
    assert "tablename in (" + ", ".join(f"'{t}'" for t in SEED_TABLES) + ")" in up
    assert f"DROP TABLE IF EXISTS {', '.join(reversed(SEED_TABLES))} CASCADE;" in up
    for t in SEED_TABLES:
        assert f"CREATE TABLE {t} (" in up, t

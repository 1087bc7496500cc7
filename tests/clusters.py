"""Test clusters that are not ours: PostgreSQL's regression database and awkward objects.

Plain functions of the :class:`tests.conftest.Sandbox` object, for the restore tests of
issue 12 (a restore must be exact on real clusters, not only on tidy ones).

What each cluster holds
=======================

``ensure_regression_db(sandbox)``: database ``regression``, made by PostgreSQL's own
regression suite (``apt-get source postgresql-15``: 15.18's ``src/test/regress``;
``pg_regress`` of ``postgresql-client-15``; ``regress.so`` built from ``regress.c``
against the installed 15.x server headers), run by ``sandbox/regression.sh`` INSIDE the
postgres container against its socket with ``--schedule=parallel_schedule``. 9 of 217
tests fail from the 15.18 source / 15.20 server skew (copy, copyselect, triggers,
privileges, rowsecurity, generated, rules, copy2, alter_table): not ours. Left behind:

- database ``regression`` (about 96 MB, 617 tables and partitioned tables, 414,026
  rows, 3 large objects, rules, triggers, policies, 5 publications), its own settings
  (lc_messages etc., made by pg_regress), marked complete by ``COMMENT ON DATABASE
  regression IS 'aimms-ops regression fixture: <source and header versions>;
  tables=N'``;
- 7 roles: ``regress_rls_alice``, ``_bob``, ``_carol``, ``_dave``, ``_exempt_user``,
  ``_group1``, ``_group2`` (the rowsecurity test does not drop them; see
  ``REGRESSION_ROLES``); no other database, no tablespace (the tablespace test drops its
  in-place tablespace); all of it survives a pg_dumpall replay (see below);
- ``/usr/lib/postgresql/15/lib/regress.so`` in the postgres container: the C functions
  the suite makes refer to it by that absolute path (``pg_proc.probin``), so a dump of
  the regression database replays only where that file exists. A container that is
  recreated (``compose down/up``, ``fab rebuild-volume``) loses it: call
  :func:`install_regress_lib` on the new container before replaying (the throwaway of
  :func:`replay_into_empty_cluster` gets it too).

``ensure_awkward_db(sandbox)``: objects that break line-pattern dump filters, each item
of issue 12 (see ``AWKWARD_DB``, ``EQ_DB``, ``ROLE_*`` and ``_awkward_sql``):

- database ``odd "db" 'x' ü ; name`` (owner ``odd role 'q' "x"``, its own
  ``search_path`` setting, a role-in-database setting) and database ``key=value db``;
- in the first: a plpgsql function whose body holds the lines ``CREATE ROLE
  reporting_tmp;``, ``CREATE DATABASE x;``, ``DROP DATABASE y;``, ``\\connect postgres``,
  ``COPY app.people FROM stdin;``, a fake pg_dump TOC header and ``\\.`` (tags ``$body$``
  and ``$x$``), a function with nested ``/* /* */ */`` comments, a ``COMMENT ON TABLE``
  and a view whose literals hold such lines, a column default and a CHECK constraint
  holding them, rows that look like dump markers (``-- Database "x" dump``, ``\\.``,
  ``\\\\.``, ``\\connect postgres``), a table and column whose names hold newlines,
  quotes and non-ASCII, an inheritance parent with two children (``count(*)`` and
  ``ONLY`` differ), a partitioned table with a default partition, a sequence in use,
  two large objects (owner, comment, grant);
- roles ``report<newline>reader`` (login, password, VALID UNTIL, connection limit,
  member of ``awk_readers`` WITH ADMIN OPTION, role settings, role-in-database
  settings), ``odd role 'q' "x"`` (comment, CREATEDB, role-in-database setting) and
  ``awk_readers``;
- cluster-level state pg_dumpall does not show: ``ALTER DATABASE postgres SET work_mem =
  '7MB'``, ``CONNECTION LIMIT 50``, a comment, ``REVOKE TEMP ... FROM PUBLIC``, ``GRANT
  CONNECT`` to the odd role``, ``ALTER ROLE ... IN DATABASE postgres SET``; a
  table ``public.dba_notes`` in ``postgres``; ``public.dba_helper()`` and the table
  ``public.dba_audit`` in template1.

Both are idempotent (a second call checks and changes nothing: about 0.3 s and 1 s) and
rebuild what a killed run left half-made (no completion comment or a table count that
differs from it; for the awkward fixture any missing piece). Timings of
``ensure_regression_db`` (2026-12-01, 2 shared cores): cold (nothing cached: apt-get
source, headers, regress.so, the run) 93 s at load 8.7, of which the run 68 s; about 38 s
on a quiet machine (12 s prepare, 26 s run); warm 0.3-0.4 s.

Replaying a pg_dumpall of the whole cluster into an EMPTY cluster
=================================================================

``replay_into_empty_cluster`` (a throwaway container of the sandbox image, ``--network
none``, on the sandbox engine, the image's ``aimms_web``/``aimms_user`` dropped first so
that only postgres, template0 and template1 are left) with ``psql -X -v ON_ERROR_STOP=0
-U postgres -d postgres``; measured 2026-12-01 on 15.20, a 17.6 MB dump of aimms_web +
regression + the awkward objects, 2-6 s:

- exactly one error: ``ERROR:  role "postgres" already exists`` (pg_dumpall always writes
  ``CREATE ROLE postgres;``), plus 5 times ``WARNING:  wal_level is insufficient to
  publish logical changes`` / ``HINT:  Set wal_level to "logical" before creating
  subscriptions.`` (the suite's publications; wal_level is replica). The awkward objects
  replay fine with plain psql: its lexer knows quotes, dollar quotes and comments; only
  line filters trip on them.
- without ``regress.so`` in the target: 56 errors: 21 times ``ERROR:  could not access
  file "/usr/lib/postgresql/15/lib/regress.so": No such file or directory`` and 34 that
  follow from it (``function public.widget_in(cstring) does not exist``, ``type
  "public.widget" is only a shell``, ``relation "public.city" does not exist``, ...).
- what pg_dumpall (without ``--clean``) does NOT carry, seen in :func:`catalog_state`
  of the target: every property of ``postgres`` (its ``work_mem`` setting, connection
  limit 50, comment, the ACL: PUBLIC has TEMP again, the grant of CONNECT, the
  role-in-database settings for it), and the same holds for template1 (its properties
  are not set by this fixture); the objects of template1 and the
  table in ``postgres`` do come back (their sections are in the dump). Every other
  database's properties come back (they are in its section: ``DATABASE PROPERTIES``).
  The regression database's explicit ACL ``{=Tc/postgres,postgres=CTc/postgres}`` (equal
  to the default) comes back as NULL: pg_dump writes no GRANT for a default ACL, so
  catalog_state shows a NULL ACL as the default it means.
- pg_dump's fixed point: the dump of the replayed cluster differs from the original only
  in the artefacts :func:`normalize_dump` masks (column order of gtestxx_4,
  test_type_diff2_c1/_c2; COPY column order of b_star, c_star, d_star, e_star, f_star,
  renamecolumnanother, renamecolumnchild, test_type_diff_c, test_type_diff2_c1/_c2;
  the heap order of
  brintest_bloom); normalized, they are equal. Replayed again into an empty cluster, it
  dumps identically, without any mask (but the ``\\restrict`` keys).
- dump layout worth knowing for a scanner: a database whose name is not plain ASCII
  identifier-ish is entered with ``\\encoding SQL_ASCII`` then ``\\connect
  -reuse-previous=on "dbname='odd ""db"" \\'x\\' ü ; name'"``; ``CREATE ROLE
  "report`` / ``reader";`` spans two lines; pg_dump's TOC comments show newlines in
  names as spaces (``-- Name: odd table "q" ü; Type: TABLE; ...``); the function body
  of the fixture holds a fake TOC header, a fake ``COPY ... FROM stdin;``, data and
  ``\\.`` at column 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .conftest import REPO, Sandbox

REGRESSION_SH = REPO / "sandbox" / "regression.sh"
#: The roles the regression suite leaves in the cluster (15.18's parallel_schedule).
REGRESSION_ROLES = ("regress_rls_alice", "regress_rls_bob", "regress_rls_carol",
                    "regress_rls_dave", "regress_rls_exempt_user", "regress_rls_group1",
                    "regress_rls_group2")

AWKWARD_DB = "odd \"db\" 'x' ü ; name"
EQ_DB = "key=value db"
ROLE_NL = "report\nreader"
ROLE_Q = "odd role 'q' \"x\""
ROLE_GROUP = "awk_readers"
AWKWARD_ROLES = (ROLE_GROUP, ROLE_NL, ROLE_Q)
#: Written last by ensure_awkward_db (COMMENT ON DATABASE of AWKWARD_DB): the build ended.
AWKWARD_MARK = "aimms-ops awkward fixture v1"
#: Fixed SCRAM verifiers (of 'reader-secret' and 'odd-secret'): a rebuild gives the same
#: catalog, where a plain PASSWORD 'x' would draw a new salt each time.
PASSWORD_NL = ("SCRAM-SHA-256$4096:5doKnt3O2yKq1PhD3V/1qg==$KsYOOZfaF0MwM6Db3NW1MR0xCSSmwf/y1m"
               "N+5Ix5Qi0=:MqNFlnY8jBfFM/rhF3FmBrrLq9nqDQqil8Dkmdm8IiQ=")
PASSWORD_Q = ("SCRAM-SHA-256$4096:9l+O25FmqGvS7hTvufEYOw==$Ry6/Bd370WWittjOjZnBTsP6/uOqLQszZM8u"
              "mFrMYJ8=:aCJsmtgm069W1CSJvxN8+jqHoAwGOVjkcwvM0MR2fc8=")
#: Odd table and column names in AWKWARD_DB (schema app).
ODD_TABLE = "odd\ntable \"q\" ü"
ODD_COLUMN = "col\numn 'x' ü"


# ---------------------------------------------------------------- quoting and psql
def qi(name: str) -> str:
    """An SQL identifier, always double-quoted (any name, newlines included)."""
    return '"' + name.replace('"', '""') + '"'


def ql(text: str) -> str:
    """An SQL string literal (standard_conforming_strings: only ' is doubled)."""
    return "'" + text.replace("'", "''") + "'"


def conninfo(db: str) -> str:
    """A libpq connection string naming ``db`` exactly: psql treats a ``-d`` value with
    ``=`` in it as a connection string, so every database is named this way."""
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def psql(sandbox: Sandbox, sql: str, db: str = "postgres", *, check: bool = True,
         container: str | None = None, timeout: float = 300) -> str:
    """Run ``sql`` as postgres in ``db`` (any name) of the sandbox cluster (or of
    ``container``); unaligned, tuples only, stops at the first error; NOTICEs hidden."""
    quiet = "PGOPTIONS='-c client_min_messages=warning'"
    command = f"psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d {shlex.quote(conninfo(db))}"
    if container:
        proc = sandbox.ssh(f"docker exec -i -e {quiet} {container} {command}",
                           input=sql.encode(), check=check, timeout=timeout)
    else:
        proc = sandbox.in_postgres(command, env={"PGOPTIONS": "-c client_min_messages=warning"},
                                   input=sql.encode(), check=check, timeout=timeout)
    return proc.stdout.decode().strip()


def psql_json(sandbox: Sandbox, sql: str, db: str = "postgres", **kw) -> object:
    """The one JSON value ``sql`` selects (names of any kind survive JSON intact)."""
    return json.loads(psql(sandbox, sql, db, **kw) or "null")


def _regression_sh(sandbox: Sandbox, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "SANDBOX_NAME": sandbox.env.get("SANDBOX_NAME", "aidset")}
    proc = subprocess.run(["bash", str(REGRESSION_SH), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"sandbox/regression.sh {' '.join(args)} failed "
                             f"({proc.returncode}): {proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- the regression database
def ensure_regression_db(sandbox: Sandbox) -> str:
    """Make database ``regression`` from PostgreSQL's regression suite, unless it is there
    and complete; returns the script's last line (``regression: ready ...`` or
    ``regression: built in N s ...``). Cold (nothing cached): apt + source + build + the
    run; warm: about 0.2 s. A half-built database of a killed run is rebuilt."""
    return _regression_sh(sandbox)


def prepare_regression(sandbox: Sandbox) -> None:
    """Step 1 of ``ensure_regression_db`` alone: the regression suite's tree, regress.so
    and pg_regress on this machine (cached), the database left as it is."""
    _regression_sh(sandbox, "--prepare-only")


def drop_replaced(sandbox: Sandbox) -> None:
    """Drop the databases restores set aside (``fab drop-replaced``): they hold objects of
    the fixtures' roles, which could not be dropped while they are there."""
    proc = sandbox.fab("drop-replaced", "--yes")
    assert proc.returncode == 0, proc.stderr


def remove_regression_db(sandbox: Sandbox) -> None:
    """Drop database ``regression`` and the ``regress_*`` roles (and end a pg_regress a
    killed run left running): the cluster as tidy as the other tests expect."""
    drop_replaced(sandbox)
    _regression_sh(sandbox, "--remove")


def remove_leftovers(sandbox: Sandbox) -> list[str]:
    """What a killed run of tests/integration/test_clusters.py left in the cluster (the
    regression database and its roles, the awkward fixture, template1's objects), removed:
    every other file's whole-cluster restore and deep verify expect the tidy cluster (the
    regression database's functions need regress.so, which a throwaway container lacks).
    Returns what was found; one query when nothing is."""
    found = psql(sandbox, f"""
SELECT string_agg(x, ',') FROM (
  SELECT datname::text AS x FROM pg_database
   WHERE datname IN ('regression', {ql(AWKWARD_DB)}, {ql(EQ_DB)})
  UNION ALL SELECT rolname FROM pg_roles
   WHERE rolname LIKE 'regress\\_%' OR rolname IN ({", ".join(ql(r) for r in AWKWARD_ROLES)})
  UNION ALL SELECT 'template1.' || relname FROM pg_class
   WHERE relname = 'dba_audit' AND relnamespace = 'public'::regnamespace) t""",
                 "template1")
    if not found:
        return []
    remove_regression_db(sandbox)
    remove_awkward_db(sandbox)
    return found.split(",")


def install_regress_lib(sandbox: Sandbox, container: str | None = None) -> None:
    """Put ``regress.so`` into the pkglibdir of ``container`` (default: the sandbox's
    postgres container), where the regression database's C functions expect it."""
    _regression_sh(sandbox, "--install-lib", container or sandbox.container())


# ---------------------------------------------------------------- the awkward objects
_TRAP_LINES = ("CREATE ROLE reporting_tmp;\nCREATE DATABASE x;\nDROP DATABASE y;\n"
               "\\connect postgres\nCOPY app.people FROM stdin;\n")


def _cluster_sql() -> str:
    """Roles, postgres's properties, the databases (run in ``postgres``)."""
    nl, q, grp = qi(ROLE_NL), qi(ROLE_Q), qi(ROLE_GROUP)
    role_comment = ql("a role\nwith a two-line comment")
    return f"""
CREATE ROLE {grp} NOLOGIN;
COMMENT ON ROLE {grp} IS 'readers of the awkward fixture';
CREATE ROLE {nl} LOGIN PASSWORD {ql(PASSWORD_NL)} VALID UNTIL '2031-01-01 00:00:00+00'
  CONNECTION LIMIT 5;
GRANT {grp} TO {nl} WITH ADMIN OPTION;
ALTER ROLE {nl} SET search_path = app, public;
ALTER ROLE {nl} SET statement_timeout = '41s';
CREATE ROLE {q} LOGIN CREATEDB PASSWORD {ql(PASSWORD_Q)};
GRANT {grp} TO {q};
COMMENT ON ROLE {q} IS {role_comment};
ALTER DATABASE postgres SET work_mem = '7MB';
ALTER DATABASE postgres CONNECTION LIMIT 50;
COMMENT ON DATABASE postgres IS 'maintenance database (aimms-ops awkward fixture)';
REVOKE TEMP ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE postgres TO {q};
ALTER ROLE {nl} IN DATABASE postgres SET statement_timeout = '42s';
ALTER ROLE {q} IN DATABASE postgres SET work_mem = '3MB';
CREATE TABLE public.dba_notes (id int PRIMARY KEY, note text NOT NULL);
INSERT INTO public.dba_notes VALUES (1, 'kept in the postgres database'), (2, 'ü');
CREATE DATABASE {qi(AWKWARD_DB)} OWNER {q} TEMPLATE template0 ENCODING 'UTF8';
CREATE DATABASE {qi(EQ_DB)} TEMPLATE template0;
ALTER DATABASE {qi(AWKWARD_DB)} SET search_path = app, public;
ALTER ROLE {nl} IN DATABASE {qi(AWKWARD_DB)} SET work_mem = '5MB';
COMMENT ON DATABASE {qi(EQ_DB)} IS 'a name with = in it';
"""


TEMPLATE1_DROP_SQL = """
DROP FUNCTION IF EXISTS public.dba_helper();
DROP TABLE IF EXISTS public.dba_audit;
"""
TEMPLATE1_SQL = TEMPLATE1_DROP_SQL + """
CREATE FUNCTION public.dba_helper() RETURNS text LANGUAGE sql
  AS $$ SELECT 'a DBA helper kept in template1'::text $$;
CREATE TABLE public.dba_audit (at timestamptz NOT NULL, what text NOT NULL);
INSERT INTO public.dba_audit VALUES ('2026-01-01 00:00:00+00', 'helper installed');
"""

EQ_DB_SQL = """
CREATE TABLE public.kv (k text PRIMARY KEY, v text);
INSERT INTO public.kv VALUES ('a=b', 'c=d'), ('-- Database "key=value db" dump', '\\.');
"""


def _awkward_sql() -> str:
    """The objects of AWKWARD_DB (run in it)."""
    nl, q, grp = qi(ROLE_NL), qi(ROLE_Q), qi(ROLE_GROUP)
    t, c = qi(ODD_TABLE), qi(ODD_COLUMN)
    comment = ("people of the fixture\nCOPY app.people FROM stdin;\n"
               '-- Database "regression" dump\n\\.\n\\connect postgres\n'
               "CREATE ROLE reporting_tmp;\n-- PostgreSQL database cluster dump complete")
    markers = ['-- Database "x" dump', "\\.", "\\\\.", "\\connect postgres",
               "CREATE ROLE x;", "COPY app.people FROM stdin;",
               "-- PostgreSQL database cluster dump complete", "tab\there", "\n\\.\n",
               "--", "", "$x$", "/* not a comment */", "'; DROP DATABASE y; --"]
    marker_rows = ",\n".join(f"({i}, {ql(v)})" for i, v in enumerate(markers, 1))
    lit = {k: ql(v) for k, v in {
        "two_lines": "two\nlines", "check": "DROP DATABASE y;\nCREATE DATABASE x;\n",
        "view": "x\nCREATE DATABASE x;\n\\connect postgres", "v1": "v\n1",
        "col_comment": "a column\nwith a newline", "lo2": "two\nCOPY app.people FROM stdin;",
        "lo_comment": "a large object\n\\."}.items()}
    return f"""
CREATE SCHEMA app AUTHORIZATION {q};
CREATE TABLE app.people (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO app.people (name) VALUES ('Ann'), ('Bob'), ({lit["two_lines"]}), ('ü'),
  ('\\.'), ('-- Database "x" dump');
COMMENT ON TABLE app.people IS {ql(comment)};
CREATE FUNCTION app.trap_body() RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
  s text := $x$
{_TRAP_LINES}--
-- Name: people; Type: TABLE DATA; Schema: app; Owner: postgres
--

COPY app.people (id, name) FROM stdin;
1	fake
\\.
$x$;
BEGIN
  /* outer /* nested */ still a comment;
CREATE ROLE reporting_tmp;
  */
  RETURN s;
END
$body$;
CREATE FUNCTION app.nested_comments() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  /* level 1 /* level 2 /* level 3 */ 2 */ 1 ' " $ */
  RETURN 1; -- CREATE DATABASE x;
END
$$;
CREATE TABLE app.notes (
  id int PRIMARY KEY,
  body text NOT NULL DEFAULT {ql(_TRAP_LINES)}
    CHECK (body <> {lit["check"]}));
INSERT INTO app.notes (id) VALUES (1);
INSERT INTO app.notes VALUES (2, 'other');
CREATE VIEW app.trap_view AS SELECT {lit["view"]}::text AS t;
CREATE TABLE app.markers (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO app.markers VALUES
{marker_rows};
CREATE TABLE app.{t} ({c} text, "ü" int);
INSERT INTO app.{t} VALUES ({lit["v1"]}, 1), ('v2', 2);
COMMENT ON COLUMN app.{t}.{c} IS {lit["col_comment"]};
CREATE TABLE app.parent (id int NOT NULL, v text);
CREATE TABLE app.child_a (extra int) INHERITS (app.parent);
CREATE TABLE app.child_b () INHERITS (app.parent);
INSERT INTO app.parent VALUES (1, 'parent');
INSERT INTO app.child_a VALUES (2, 'child a', 20), (3, 'child a', 30);
INSERT INTO app.child_b VALUES (4, 'child b'), (5, 'child b'), (6, 'child b');
CREATE TABLE app.measure (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE app.measure_2026a PARTITION OF app.measure
  FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE app.measure_2026b PARTITION OF app.measure
  FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
CREATE TABLE app.measure_other PARTITION OF app.measure DEFAULT;
INSERT INTO app.measure SELECT d::date, n
  FROM generate_series(1, 400) n, LATERAL (SELECT '2025-11-01'::date + n AS d) x;
CREATE SEQUENCE app.counter START 100;
SELECT nextval('app.counter') FROM generate_series(1, 3);
SELECT lo_from_bytea(424242, '\\x6c61726765206f626a656374206f6e65'::bytea);
SELECT lo_from_bytea(424243, convert_to({lit["lo2"]}, 'UTF8'));
COMMENT ON LARGE OBJECT 424242 IS {lit["lo_comment"]};
ALTER LARGE OBJECT 424242 OWNER TO {q};
GRANT SELECT ON LARGE OBJECT 424243 TO {nl};
GRANT USAGE ON SCHEMA app TO {grp};
GRANT SELECT ON ALL TABLES IN SCHEMA app TO {grp};
GRANT INSERT (v) ON app.markers TO {nl};
"""


def _awkward_missing(sandbox: Sandbox) -> list[str]:
    """What of the awkward fixture is not there (empty: complete); three quick queries."""
    names = ", ".join(ql(r) for r in AWKWARD_ROLES)
    q = ql(ROLE_Q)
    out = psql(sandbox, f"""
SELECT concat_ws(',',
  CASE WHEN NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = {ql(AWKWARD_DB)}
    AND shobj_description(oid, 'pg_database') = {ql(AWKWARD_MARK)}) THEN 'awkward db' END,
  CASE WHEN NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = {ql(EQ_DB)})
    THEN 'eq db' END,
  CASE WHEN (SELECT count(*) FROM pg_roles WHERE rolname IN ({names})) <> 3
    THEN 'roles' END,
  CASE WHEN (SELECT count(*) FROM pg_auth_members
    WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = {ql(ROLE_GROUP)})) <> 2
    THEN 'memberships' END,
  CASE WHEN (SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = 0
    AND setrole = (SELECT oid FROM pg_roles WHERE rolname = {ql(ROLE_NL)})) <> 1
    THEN 'role settings' END,
  CASE WHEN NOT EXISTS (SELECT 1 FROM pg_database d WHERE datname = 'postgres'
    AND datconnlimit = 50
    AND shobj_description(oid, 'pg_database') LIKE 'maintenance database%'
    AND NOT EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
      WHERE a.grantee = 0 AND a.privilege_type = 'TEMPORARY')
    AND EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
      WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = {q})
      AND a.privilege_type = 'CONNECT')) THEN 'postgres properties' END,
  CASE WHEN (SELECT count(*) FROM pg_db_role_setting s
    JOIN pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = 'postgres') <> 3 THEN 'postgres settings' END,
  CASE WHEN to_regclass('public.dba_notes') IS NULL THEN 'postgres table' END)
""")
    missing = [m for m in out.split(",") if m]
    t1 = psql(sandbox, "SELECT to_regprocedure('public.dba_helper()') IS NOT NULL "
                       "AND to_regclass('public.dba_audit') IS NOT NULL", "template1")
    if t1 != "t":
        missing.append("template1 objects")
    return missing


def remove_awkward_db(sandbox: Sandbox) -> None:
    """Remove whatever of the awkward fixture exists (a killed run's half too), giving
    ``postgres`` back initdb's properties; template1's objects go too."""
    drop_replaced(sandbox)
    _drop_awkward(sandbox)
    psql(sandbox, TEMPLATE1_DROP_SQL, "template1")


def _drop_awkward(sandbox: Sandbox) -> None:
    """Remove the fixture's databases, roles and postgres's properties."""
    names = ", ".join(ql(r) for r in AWKWARD_ROLES)
    psql(sandbox, f"""
DROP DATABASE IF EXISTS {qi(AWKWARD_DB)} WITH (FORCE);
DROP DATABASE IF EXISTS {qi(EQ_DB)} WITH (FORCE);
DROP TABLE IF EXISTS public.dba_notes;
SELECT format('DROP OWNED BY %I', rolname) FROM pg_roles WHERE rolname IN ({names}) \\gexec
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname IN ({names}) \\gexec
ALTER DATABASE postgres RESET ALL;
ALTER DATABASE postgres CONNECTION LIMIT -1;
COMMENT ON DATABASE postgres IS 'default administrative connection database';
GRANT TEMP ON DATABASE postgres TO PUBLIC;
""")


def ensure_awkward_db(sandbox: Sandbox) -> str:
    """Make the awkward fixture (see the module's docstring) unless all of it is there;
    returns ``awkward: ready`` or ``awkward: built in N s (was missing: ...)``."""
    missing = _awkward_missing(sandbox)
    if not missing:
        return "awkward: ready"
    t0 = time.monotonic()
    _drop_awkward(sandbox)
    psql(sandbox, _cluster_sql())
    psql(sandbox, TEMPLATE1_SQL, "template1")
    psql(sandbox, EQ_DB_SQL, EQ_DB)
    psql(sandbox, _awkward_sql(), AWKWARD_DB)
    psql(sandbox, f"COMMENT ON DATABASE {qi(AWKWARD_DB)} IS {ql(AWKWARD_MARK)}")
    left = _awkward_missing(sandbox)
    assert not left, f"the awkward fixture is incomplete after building it: {left}"
    return f"awkward: built in {time.monotonic() - t0:.1f} s (was missing: {', '.join(missing)})"


# ---------------------------------------------------------------- catalog facts
CATALOG_SQL = r"""
SELECT json_build_object(
 'databases', (SELECT json_object_agg(quote_ident(d.datname), json_build_object(
    'owner', quote_ident(pg_get_userbyid(d.datdba)),
    'encoding', pg_encoding_to_char(d.encoding),
    'collate', d.datcollate, 'ctype', d.datctype,
    'locale_provider', d.datlocprovider, 'icu_locale', d.daticulocale,
    'istemplate', d.datistemplate, 'allowconn', d.datallowconn,
    'connlimit', d.datconnlimit,
    'acl', (SELECT json_agg(a::text ORDER BY a::text)
      FROM unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a),
    'comment', shobj_description(d.oid, 'pg_database'),
    'settings', (SELECT json_agg(json_build_object(
        'role', CASE WHEN s.setrole = 0 THEN NULL ELSE quote_ident(pg_get_userbyid(s.setrole)) END,
        'config', s.setconfig) ORDER BY s.setrole <> 0, pg_get_userbyid(s.setrole) COLLATE "C")
      FROM pg_db_role_setting s WHERE s.setdatabase = d.oid))
    ORDER BY d.datname COLLATE "C") FROM pg_database d),
 'roles', (SELECT json_object_agg(quote_ident(r.rolname), json_build_object(
    'super', r.rolsuper, 'inherit', r.rolinherit, 'createrole', r.rolcreaterole,
    'createdb', r.rolcreatedb, 'login', r.rolcanlogin, 'replication', r.rolreplication,
    'bypassrls', r.rolbypassrls, 'connlimit', r.rolconnlimit,
    'password', r.rolpassword,
    'valid_until', to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'settings', (SELECT s.setconfig FROM pg_db_role_setting s
      WHERE s.setdatabase = 0 AND s.setrole = r.oid),
    'member_of', (SELECT json_agg(json_build_object(
        'role', quote_ident(pg_get_userbyid(m.roleid)), 'admin', m.admin_option,
        'grantor', quote_ident(pg_get_userbyid(m.grantor)))
        ORDER BY pg_get_userbyid(m.roleid) COLLATE "C")
      FROM pg_auth_members m WHERE m.member = r.oid),
    'comment', shobj_description(r.oid, 'pg_authid'))
    ORDER BY r.rolname COLLATE "C") FROM pg_authid r WHERE r.rolname !~ '^pg_'),
 'tablespaces', (SELECT json_object_agg(quote_ident(t.spcname), json_build_object(
    'owner', quote_ident(pg_get_userbyid(t.spcowner)),
    'acl', (SELECT json_agg(a::text ORDER BY a::text)
      FROM unnest(coalesce(t.spcacl, acldefault('t', t.spcowner))) a),
    'options', t.spcoptions, 'comment', shobj_description(t.oid, 'pg_tablespace'))
    ORDER BY t.spcname COLLATE "C") FROM pg_tablespace t))
"""


def catalog_state(sandbox: Sandbox, container: str | None = None) -> dict:
    """Catalog facts pg_dumpall does not show (or shows only in part), for before/after
    comparisons: per database (``quote_ident`` names) its owner, encoding and locale,
    template/allowconn flags, connection limit, ACL (a NULL ACL shown as the default it
    means: pg_dump writes no GRANT for an ACL equal to the default, so an explicit default
    ACL comes back as NULL), comment and pg_db_role_setting rows
    (the database's own, then role-in-database ones); per role (not the predefined pg_*)
    its attributes, password hash, VALID UNTIL (UTC), settings, memberships (with admin
    option and grantor) and comment; per tablespace owner, ACL, options, comment. Keys
    are ordered by name (C collation); JSON keeps newlines in names unambiguous."""
    state = psql_json(sandbox, CATALOG_SQL, container=container)
    assert isinstance(state, dict)
    return state


ROW_COUNTS_SQL = r"""
SELECT json_object_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname),
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I',
    n.nspname, c.relname), false, true, '')))[1]::text::bigint
  ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C")
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""


def row_counts(sandbox: Sandbox, db: str, container: str | None = None) -> dict[str, int]:
    """Exact rows of every table of ``db`` (partitions and inheritance children included,
    each counted with ``SELECT count(*) FROM ONLY t``, so a parent never counts its
    children), keyed ``quote_ident(schema).quote_ident(table)``."""
    counts = psql_json(sandbox, ROW_COUNTS_SQL, db, container=container)
    return dict(counts) if isinstance(counts, dict) else {}


# ---------------------------------------------------------------- the dump, normalized
_COPY_START = re.compile(r"^COPY (.+?) \((.*)\) FROM stdin;$", re.S)
_CREATE_TABLE = re.compile(r"^CREATE (?:UNLOGGED )?TABLE (\S+(?: \S+)*?) \($")


class _Lexer:
    """Where a line of pg_dump's SQL ends: inside a quote, a dollar quote, a quoted
    identifier or a block comment, or between statements. Just enough to tell the
    dump's own COPY and CREATE TABLE lines from look-alikes in bodies and literals."""

    def __init__(self) -> None:
        self.state: str | None = None  # None, "'", "E'", '"', "$tag$", "/*"
        self.depth = 0
        self.at_start = True            # the next line begins a statement

    def feed(self, line: str) -> None:
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            st = self.state
            if st is None:
                if ch == "-" and line.startswith("--", i):
                    break
                if ch == "/" and line.startswith("/*", i):
                    self.state, self.depth = "/*", 1
                    i += 2
                    continue
                if ch == "'":
                    escape = i > 0 and line[i - 1] in "eE" and (
                        i == 1 or not (line[i - 2].isalnum() or line[i - 2] == "_"))
                    self.state = "E'" if escape else "'"
                elif ch == '"':
                    self.state = '"'
                elif ch == "$":
                    m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", line[i:])
                    if m and not (i > 0 and (line[i - 1].isalnum() or line[i - 1] == "_")):
                        self.state = m.group(0)
                        i += len(m.group(0))
                        self.at_start = False
                        continue
                elif ch == ";":
                    self.at_start = True
                    i += 1
                    continue
                if not ch.isspace():
                    self.at_start = False
            elif st == "/*":
                if line.startswith("/*", i):
                    self.depth += 1
                    i += 1
                elif line.startswith("*/", i):
                    self.depth -= 1
                    i += 1
                    if self.depth == 0:
                        self.state = None
            elif st in ("'", "E'"):
                if st == "E'" and ch == "\\":
                    i += 1
                elif ch == "'":
                    if line.startswith("''", i):
                        i += 1
                    else:
                        self.state = None
            elif st == '"':
                if ch == '"':
                    if line.startswith('""', i):
                        i += 1
                    else:
                        self.state = None
            elif line.startswith(st, i):
                i += len(st)
                self.state = None
                continue
            i += 1

    @property
    def between_statements(self) -> bool:
        return self.state is None and self.at_start


def normalize_dump(text: str) -> str:
    """pg_dumpall text with its known artefacts masked, the idea of PostgreSQL's own
    src/test/perl/PostgreSQL/Test/AdjustDump.pm (written anew, generic instead of by
    table name). Each mask:

    1. ``\\restrict KEY`` / ``\\unrestrict KEY`` lines are removed: the key is random per
       dump (pg_dump 15.14+).
    2. The column lines of ``CREATE TABLE ... INHERITS (...)`` are sorted: a child whose
       inherited columns were in another order than its parent's (columns added to the
       parent after the child, or a child created with the columns first) is recreated
       with the parent's columns first, so a plain dump cannot reproduce the order
       (regression: gtestxx_4, test_type_diff2_c1/_c2; AdjustDump reorders them).
    3. For the same reason the COPY of every table listed in a ``CREATE TABLE ...
       INHERITS`` of the dump has its columns put in name order, each data row's fields
       moved with them (AdjustDump deletes these COPY blocks: b_star, c_star, d_star,
       e_star, f_star, renamecolumnchild, ...; here the data is still compared).
    4. The data rows of every COPY block are sorted: heap order is physical, not part of
       the data, and a replay can change it (regression: brintest_bloom).
    5. Runs of blank lines become one (pg_dump emits more or fewer in places; AdjustDump
       does the same), and ``\\r\\n`` becomes ``\\n``.

    COPY blocks and CREATE TABLE statements are recognised only between statements (a
    small lexer follows quotes, dollar quotes, quoted identifiers and nested comments),
    so look-alike lines in function bodies, comments and literals are left alone.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    lines = [ln for ln in lines if not ln.startswith(("\\restrict ", "\\unrestrict "))]
    children = _inheritance_children(lines)
    out: list[str] = []
    lex = _Lexer()
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if lex.between_statements and line.startswith("\\"):
            out.append(line)      # a psql meta-command: a line of its own
            i += 1
            continue
        m = None
        if lex.between_statements and line.startswith("COPY "):
            # The statement may span lines (a name with a newline): read it whole.
            head, j = _Lexer(), i
            while j < n:
                head.feed(lines[j])
                j += 1
                if head.between_statements:
                    break
            m = _COPY_START.match("\n".join(lines[i:j]))
            if m is None:  # not a COPY ... FROM stdin (COPY TO, say): ordinary SQL
                for ln in lines[i:j]:
                    lex.feed(ln)
                out.extend(lines[i:j])
                i = j
                continue
            i = j - 1
        if m:
            j = i + 1
            while j < n and lines[j] != "\\.":
                j += 1
            out.extend(_copy_block(m.group(1), m.group(2), lines[i + 1:j],
                                   reorder=m.group(1) in children))
            out.append("\\.")
            i = j + 1
            continue
        t = _CREATE_TABLE.match(line) if lex.between_statements else None
        if t and t.group(1) in children:
            j = i + 1
            while j < n and not lines[j].startswith(")"):
                j += 1
            cols = sorted(c.rstrip(",") for c in lines[i + 1:j])
            out.append(line)
            out.extend(c + ("," if k < len(cols) - 1 else "") for k, c in enumerate(cols))
            for ln in lines[i:j]:
                lex.feed(ln)
            i = j
            continue
        lex.feed(line)
        out.append(line)
        i += 1
    return re.sub(r"\n\n+", "\n\n", "\n".join(out))


def _inheritance_children(lines: list[str]) -> set[str]:
    """Tables whose ``CREATE TABLE name (`` statement closes with ``)`` then
    ``INHERITS (...)`` (pg_dump's layout)."""
    children: set[str] = set()
    current: str | None = None
    for k, line in enumerate(lines):
        t = _CREATE_TABLE.match(line)
        if t:
            current = t.group(1)
        elif current and line.startswith(")"):
            if line.startswith(")\nINHERITS") or (k + 1 < len(lines)
                                                   and lines[k + 1].startswith("INHERITS (")):
                children.add(current)
            current = None
    return children


def _copy_block(table: str, columns: str, rows: list[str], *, reorder: bool) -> list[str]:
    cols = columns.split(", ")
    if reorder and len(cols) > 1:
        order = sorted(range(len(cols)), key=lambda k: cols[k])
        cols = [cols[k] for k in order]
        rows = ["\t".join(f[k] for k in order) if len(f := r.split("\t")) == len(order) else r
                for r in rows]
    return [f"COPY {table} ({', '.join(cols)}) FROM stdin;", *sorted(rows)]


def normalized_dumpall(sandbox: Sandbox, container: str | None = None) -> str:
    """``pg_dumpall`` of the sandbox cluster (or of ``container``), normalized by
    :func:`normalize_dump`."""
    if container:
        return normalize_dump(sandbox.sh(f"docker exec {container} pg_dumpall -U postgres",
                                         timeout=600))
    return normalize_dump(sandbox.in_postgres("pg_dumpall -U postgres", timeout=600)
                          .stdout.decode())


# ---------------------------------------------------------------- replay into an empty cluster
@dataclass
class Replay:
    """What replaying a dump into an empty cluster did."""

    errors: list[str]        # psql's ERROR lines (with their first continuation lines)
    stderr: str              # all of psql's stderr
    dumpall: str             # pg_dumpall of the cluster after the replay (not normalized)
    catalog: dict            # catalog_state of it
    seconds: float           # the replay alone


def replay_into_empty_cluster(sandbox: Sandbox, dump: str, *, regress_lib: bool = True,
                              keep: bool = False) -> Replay:
    """Replay ``dump`` with ``psql -X -v ON_ERROR_STOP=0 -U postgres -d postgres`` into a
    fresh throwaway container of the sandbox image (``--network none``, on the sandbox
    docker engine, the environment of the production container, as verify-backup.sh
    starts its own), emptied first of the image's ``aimms_web`` and ``aimms_user``;
    ``regress_lib`` puts regress.so in it first. The container is removed afterwards."""
    prod = sandbox.container()
    image = sandbox.sh(f"docker inspect -f '{{{{.Config.Image}}}}' {prod}").strip()
    name = f"aimms-ops-replay-{uuid.uuid4().hex[:8]}"
    env_file = f"/tmp/{name}.env"
    sandbox.ssh(f"docker inspect --format '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' "
                f"{prod} | sed '/^$/d' > {env_file}")
    try:
        sandbox.ssh(f"docker run --detach --name {name} --label org.aimms-ops.test=replay "
                    f"--network none --env-file {env_file} {shlex.quote(image)} >/dev/null")
        deadline = time.monotonic() + 180
        ready = "[ \"$(cat /proc/1/comm)\" = postgres ] && pg_isready -q -U postgres"
        while sandbox.ssh(f"docker exec {name} sh -c {shlex.quote(ready)}",
                          check=False).returncode != 0:
            assert time.monotonic() < deadline, "the throwaway server did not start"
            time.sleep(0.5)
        psql(sandbox, "DROP DATABASE aimms_web; DROP ROLE aimms_user;", container=name)
        if regress_lib:
            install_regress_lib(sandbox, name)
        t0 = time.monotonic()
        proc = sandbox.ssh(f"docker exec -i {name} psql -X -q -v ON_ERROR_STOP=0 -U postgres "
                           "-d postgres >/dev/null", input=dump.encode(), check=False,
                           timeout=1800)
        seconds = time.monotonic() - t0
        stderr = proc.stderr.decode(errors="replace")
        after = sandbox.sh(f"docker exec {name} pg_dumpall -U postgres", timeout=600)
        catalog = catalog_state(sandbox, container=name)
    finally:
        if not keep:
            sandbox.ssh(f"docker rm -f -v {name} >/dev/null 2>&1; rm -f {env_file}", check=False)
        else:
            sandbox.ssh(f"rm -f {env_file}", check=False)
    return Replay(errors=_error_lines(stderr), stderr=stderr, dumpall=after, catalog=catalog,
                  seconds=seconds)


def _error_lines(stderr: str) -> list[str]:
    """psql's ERROR messages without the line numbers (``psql:<stdin>:N: ERROR: ...``)."""
    return [re.sub(r"^psql:<stdin>:\d+: ", "", ln) for ln in stderr.splitlines()
            if "ERROR:" in ln]


def save(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (for looking at a difference by hand)."""
    path.write_text(text)
    return path

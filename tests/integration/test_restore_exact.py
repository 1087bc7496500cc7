"""Integration: restores exact on clusters that are not tidy (each item of the restore issue).

Every test makes the state it needs (awkward objects, properties of template1 and
postgres, roles with odd names), backs it up with ``fab backup``, changes it, restores
with ``fab restore`` while a session is open, and proves the result with PostgreSQL's
own catalogs and pg_dumpall. What a test adds it removes again, so the suite's other
tests see the sandbox as they expect it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from .conftest import dump_difference, fab_error_line

pytestmark = pytest.mark.integration

ODD_DB = "odd \"db\" 'x' ü ; name"
EQ_DB = "a=b c"
NL_ROLE = "report\nreader"

SETUP = '''
DROP ROLE IF EXISTS late_role;
DO $$BEGIN CREATE ROLE "report
reader" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE "Odd ""Role""" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
GRANT "Odd ""Role""" TO "report
reader";
ALTER ROLE "report
reader" SET work_mem = '3MB';
ALTER DATABASE postgres SET work_mem = '7MB';
ALTER DATABASE postgres CONNECTION LIMIT 50;
COMMENT ON DATABASE postgres IS 'kept by aimms-ops';
REVOKE TEMP ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE postgres TO "Odd ""Role""";
ALTER ROLE "Odd ""Role""" IN DATABASE postgres SET statement_timeout = '42s';
DROP DATABASE IF EXISTS "odd ""db"" 'x' ü ; name";
CREATE DATABASE "odd ""db"" 'x' ü ; name";
DROP DATABASE IF EXISTS "a=b c";
CREATE DATABASE "a=b c";
'''

IN_TEMPLATE1 = """
DROP FUNCTION IF EXISTS dba_helper();
CREATE OR REPLACE FUNCTION dba_helper() RETURNS int LANGUAGE sql AS $$ SELECT 41 + 1 $$;
CREATE TABLE IF NOT EXISTS dba_notes (note text);
"""

# Lines that a line-pattern filter takes for the dump's own, inside a body and a comment.
IN_APP = """
CREATE SCHEMA IF NOT EXISTS app;
CREATE TABLE IF NOT EXISTS app.people (name text);
TRUNCATE app.people;
INSERT INTO app.people VALUES ('-- Database "postgres" dump'), (E'\\\\.'), ('CREATE ROLE x;');
CREATE OR REPLACE FUNCTION app.tricky() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
CREATE ROLE reporting_tmp;
DROP DATABASE y;
-- Database "regression" dump
END $body$;
COMMENT ON TABLE app.people IS E'one\\nCOPY app.people FROM stdin;\\n-- Database "x" dump\\n';
CREATE TABLE IF NOT EXISTS app.parent (id int);
CREATE TABLE IF NOT EXISTS app.child () INHERITS (app.parent);
TRUNCATE app.parent, app.child;
INSERT INTO app.parent VALUES (1);
INSERT INTO app.child VALUES (2), (3);
"""

CLEANUP = '''
DROP DATABASE IF EXISTS "odd ""db"" 'x' ü ; name" WITH (FORCE);
DROP DATABASE IF EXISTS "a=b c" WITH (FORCE);
ALTER DATABASE postgres RESET ALL;
ALTER DATABASE postgres CONNECTION LIMIT -1;
COMMENT ON DATABASE postgres IS 'default administrative connection database';
GRANT TEMP ON DATABASE postgres TO PUBLIC;
REVOKE CONNECT ON DATABASE postgres FROM "Odd ""Role""";
ALTER ROLE "Odd ""Role""" IN DATABASE postgres RESET ALL;
DROP ROLE IF EXISTS "report
reader";
DROP ROLE IF EXISTS "Odd ""Role""";
DROP ROLE IF EXISTS late_role;
'''

#: What pg_dumpall does not show: the properties of postgres and template1, role
#: settings and memberships. Names as hex, so newlines compare exactly; an ACL as the
#: set it is (a replay may order its items differently).
CATALOG = """
SELECT 'db', encode(convert_to(d.datname, 'UTF8'), 'hex'), d.datconnlimit,
       (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a),
       d.datistemplate, d.datallowconn, pg_catalog.shobj_description(d.oid, 'pg_database'),
       pg_get_userbyid(d.datdba)
  FROM pg_database d
UNION ALL
SELECT 'setting', coalesce(encode(convert_to(r.rolname, 'UTF8'), 'hex'), '-'),
       0, coalesce(d.datname, '-'), null, null, s.setconfig::text, null
  FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_database d ON d.oid = s.setdatabase
UNION ALL
SELECT 'member', encode(convert_to(g.rolname, 'UTF8'), 'hex'), 0,
       encode(convert_to(u.rolname, 'UTF8'), 'hex'), m.admin_option, null, null, null
  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
ORDER BY 1, 2, 3, 4, 5;
"""


def catalog(sandbox) -> list[str]:
    return sandbox.psql(CATALOG, "template1").splitlines()


def template1_objects(sandbox) -> str:
    return sandbox.psql("SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc "
                        "WHERE proname = 'dba_helper'", "template1")


@pytest.fixture(scope="module")
def awkward(sandbox):
    """The awkward state, backed up once; removed again after the module (with the
    databases restores set aside, which hold objects of its roles)."""
    assert sandbox.fab("install-backups").returncode == 0
    assert sandbox.fab("drop-replaced", "--yes").returncode == 0
    sandbox.psql(SETUP, "postgres")
    sandbox.psql(IN_TEMPLATE1, "template1")
    sandbox.psql(IN_APP, "aimms_web")
    proc = sandbox.fab("backup")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    backup = next(b for b in listing if b["location"] == "remote" and not b["safety"])
    state = {"name": backup["name"], "catalog": catalog(sandbox), "dump": sandbox.dumpall(),
             "body": sandbox.psql("SELECT pg_get_functiondef('app.tricky'::regproc)")}
    yield state
    assert sandbox.fab("drop-replaced", "--yes").returncode == 0
    sandbox.psql("DROP FUNCTION IF EXISTS dba_helper(); DROP TABLE IF EXISTS dba_notes;",
                 "template1")
    sandbox.psql("DROP SCHEMA IF EXISTS app CASCADE", "aimms_web")
    sandbox.psql(CLEANUP, "template1")


def _restore(sandbox, *args: str) -> subprocess.CompletedProcess:
    """fab restore with an application session open, then the databases it replaced
    dropped (fab drop-replaced), so that the catalogs compare with the backup's."""
    session = sandbox.app_session()
    try:
        proc = sandbox.fab("restore", *args, "--yes", "--no-safety-backup")
    finally:
        session.kill()
    dropped = sandbox.fab("drop-replaced", "--yes")
    assert dropped.returncode == 0, dropped.stderr
    return proc


def test_whole_cluster_restore_is_exact_in_what_pg_dumpall_shows_and_does_not(awkward, sandbox):
    # Damage every kind of state the backup holds: postgres' properties, role settings
    # and memberships (added ones too), template1's objects, the application's rows.
    sandbox.psql('''
        ALTER DATABASE postgres SET work_mem = '1MB';
        ALTER DATABASE postgres CONNECTION LIMIT 3;
        GRANT TEMP ON DATABASE postgres TO PUBLIC;
        COMMENT ON DATABASE postgres IS 'changed';
        CREATE ROLE late_role;
        GRANT late_role TO "report
reader";
        ALTER ROLE "Odd ""Role""" SET search_path = 'nowhere';
    ''', "postgres")
    sandbox.psql("CREATE OR REPLACE FUNCTION dba_helper() RETURNS int LANGUAGE sql "
                 "AS $$ SELECT 0 $$", "template1")
    sandbox.psql("DELETE FROM app.child; UPDATE app.people SET name = 'x'", "aimms_web")
    assert catalog(sandbox) != awkward["catalog"]

    proc = _restore(sandbox, "--file=latest")
    assert proc.returncode == 0, proc.stderr
    got = catalog(sandbox)
    # late_role is not in the dump: left alone, and named in the plan; its grant is gone.
    assert "late_role" in proc.stdout
    late = b"late_role".hex()
    assert [ln for ln in got if late not in ln] == [ln for ln in awkward["catalog"]
                                                     if late not in ln]
    assert sandbox.psql("SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON "
                        "g.oid = m.roleid WHERE g.rolname = 'late_role'", "postgres") == "0"
    assert sandbox.psql("SELECT dba_helper()", "template1") == "42"
    assert sandbox.psql("SELECT pg_get_functiondef('app.tricky'::regproc)") == awkward["body"]
    after = _without_late_role(sandbox.dumpall())
    assert after == awkward["dump"], dump_difference(after, awkward["dump"])
    assert "template1: from the dump, postgres: from the dump" in proc.stdout


def _without_late_role(dump: str) -> str:
    return "\n".join(ln for ln in dump.split("\n") if "late_role" not in ln)


def test_a_cluster_without_its_postgres_database_is_restored(awkward, sandbox):
    sandbox.psql("DROP DATABASE postgres WITH (FORCE)", "template1")
    proc = _restore(sandbox, f"--file={awkward['name']}")
    assert proc.returncode == 0, proc.stderr
    assert catalog(sandbox) == awkward["catalog"]


def test_the_plan_knows_databases_whose_names_have_spaces_and_equals(awkward, sandbox):
    proc = sandbox.fab("restore", f"--file={awkward['name']}", input="no\n")
    assert proc.returncode != 0
    plan = proc.stdout
    for name in (ODD_DB, EQ_DB):
        line = next(ln for ln in plan.splitlines() if "rebuilt beside" in ln)
        assert repr(name) in plan
        assert f"{name!r} (new)" not in line


def test_one_database_by_any_name_the_dump_holds(awkward, sandbox):
    sandbox.psql("CREATE TABLE IF NOT EXISTS t (a int)", ODD_DB)
    proc = _restore(sandbox, f"--file={awkward['name']}", f"--database={ODD_DB}")
    assert proc.returncode == 0, proc.stderr
    assert sandbox.psql("SELECT count(*) FROM pg_tables WHERE tablename = 't'", ODD_DB) == "0"
    # A name the dump does not hold is refused with the list of what it holds.
    bad = sandbox.fab("restore", f"--file={awkward['name']}", "--database=odd", "--yes")
    assert bad.returncode != 0
    line = fab_error_line(bad)
    assert "the dump holds no database 'odd'" in line and repr(ODD_DB) in line


def test_latest_after_a_restore_is_still_the_backup_restored(awkward, sandbox):
    before = json.loads(sandbox.fab("list-backups", "--json").stdout)
    regular = next(b["name"] for b in before if b["location"] == "remote" and not b["safety"])
    proc = sandbox.fab("restore", f"--file={regular}", "--yes")  # with its safety copy
    assert proc.returncode == 0, proc.stderr
    after = json.loads(sandbox.fab("list-backups", "--json").stdout)
    safety = [b for b in after if b["location"] == "remote" and b["safety"]]
    assert safety and safety[0]["name"].endswith("_pre-restore.sql.gz")
    verify = sandbox.fab("verify", "--file=latest", "--json")
    assert json.loads(verify.stdout)["file"] == regular, verify.stdout
    status = json.loads(sandbox.fab("status", "--json").stdout)
    assert status["newest_backup"]["name"] == regular
    # A user cannot make a backup that passes for a safety copy.
    bad = sandbox.fab("backup", "--label=pre-restore")
    assert bad.returncode != 0 and "reserved" in fab_error_line(bad)


def test_a_backup_started_during_a_restore_waits_for_it(awkward, sandbox):
    """Cron's backup during a restore: never a dump of a half-restored cluster."""
    home = sandbox.home
    conf = f"{home}/backup-postgres.sh.conf"
    lock = f"{home}/postgres-backups/.cluster.lock"
    # Hold the cluster lock as a restore does, then run the installed script as cron does.
    holder = subprocess.Popen(
        ["ssh", "-F", str(sandbox.ssh_config), "aidset",
         f"exec 9>>{lock}; flock -x 9; echo 'restore pid '$$ > {lock}.owner.$$; sleep 6; "
         f"rm -f {lock}.owner.$$"], stdin=subprocess.DEVNULL)
    time.sleep(1.5)
    started = time.monotonic()
    run = sandbox.ssh(f"{home}/backup-postgres.sh --config {shlex.quote(conf)} "
                      "--lock-timeout 2 --no-prune", check=False)
    holder.wait(timeout=30)
    assert run.returncode != 0
    log = sandbox.sh(f"tail -n 3 {home}/postgres-backup.log")
    assert "restore or rebuild of the cluster is still running" in log
    assert "restore pid" in log  # the holder is named
    assert time.monotonic() - started < 30
    # With a longer bound the same backup waits for the restore and then succeeds.
    holder = subprocess.Popen(
        ["ssh", "-F", str(sandbox.ssh_config), "aidset",
         f"exec 9>>{lock}; flock -x 9; sleep 3"], stdin=subprocess.DEVNULL)
    time.sleep(1)
    run = sandbox.ssh(f"{home}/backup-postgres.sh --config {shlex.quote(conf)} "
                      "--lock-timeout 60 --no-prune", check=False)
    holder.wait(timeout=30)
    assert run.returncode == 0, run.stderr
    assert "waiting up to 60s for a restore or rebuild" in sandbox.sh(
        f"tail -n 40 {home}/postgres-backup.log")


def test_an_interrupted_restore_names_the_exact_file_to_rerun(awkward, sandbox):
    from aimms_ops.restore import RestorePlan, rerun_command
    from aimms_ops.restore.source import DumpInfo

    dump = DumpInfo(f"{sandbox.home}/postgres-backups/{awkward['name']}", "remote", 1, "gz",
                    "x", None, ("aimms_web",))
    cmd = rerun_command(RestorePlan("aidset", "c", dump, None, True))
    assert cmd == f"fab restore --file={awkward['name']} --no-safety-backup"
    assert "latest" not in cmd


def test_deep_verify_replays_twice_and_counts_rows_exactly(awkward, sandbox):
    proc = sandbox.fab("verify", f"--file={awkward['name']}", "--deep", "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["live restore"]["state"] == "OK", checks
    tables = {(db["name"], t["name"]): t["rows"] for db in data["databases"]
              for t in db["tables"] or []}
    assert tables[("aimms_web", "app.parent")] == 1  # ONLY: its children not counted
    assert tables[("aimms_web", "app.child")] == 2

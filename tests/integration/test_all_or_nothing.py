"""Integration: a restore is all or nothing, and the application never writes into a
half-built database.

Each failing case is one that once stopped a restore half-way, after it had dropped
databases and reset roles: a CHECK constraint that reads another table (pg_dump loads
data in name order), an event trigger that forbids the REFRESH of a materialized view.
Now a failure must leave ``pg_dumpall`` and the shared catalogs (roles with their
passwords, memberships, settings, databases, tablespaces) exactly as they were, and
name the database and psql's error. Cases that used to fail and must now restore
exactly: a database marked IS_TEMPLATE, a tablespace the cluster has. A restore onto a
cluster the application keeps writing to (a writer that reconnects for each INSERT, an
idle transaction, pgbench) ends with exactly the backup's rows plus what the
application wrote after the swap, and what it wrote during the rebuild kept aside.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import fab_error_line
from .faults import wait_until

pytestmark = pytest.mark.integration

#: Every shared catalog a restore may touch, names in hex (newlines compare exactly).
SHARED = """
SELECT 'role', encode(convert_to(rolname, 'UTF8'), 'hex'), rolsuper::text || rolinherit::text
       || rolcreaterole::text || rolcreatedb::text || rolcanlogin::text
       || rolreplication::text || rolbypassrls::text, rolconnlimit::text,
       coalesce(rolpassword, '-'), coalesce(rolvaliduntil::text, '-'),
       coalesce(shobj_description(oid, 'pg_authid'), '-')
  FROM pg_authid
UNION ALL
SELECT 'member', encode(convert_to(g.rolname, 'UTF8'), 'hex'),
       encode(convert_to(u.rolname, 'UTF8'), 'hex'), m.admin_option::text, '', '', ''
  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
UNION ALL
SELECT 'setting', coalesce(r.rolname, '-'), coalesce(d.datname, '-'), s.setconfig::text,
       '', '', ''
  FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_database d ON d.oid = s.setdatabase
UNION ALL
SELECT 'db', encode(convert_to(datname, 'UTF8'), 'hex'), datistemplate::text,
       datallowconn::text, datconnlimit::text,
       -- a NULL ACL is the default one: pg_dump writes no GRANT for either
       (SELECT string_agg(a::text, ',' ORDER BY a::text)
          FROM unnest(coalesce(datacl, acldefault('d', datdba))) a),
       pg_get_userbyid(datdba)
  FROM pg_database
UNION ALL
SELECT 'tablespace', spcname, pg_get_userbyid(spcowner),
       (SELECT string_agg(a::text, ',' ORDER BY a::text)
          FROM unnest(coalesce(spcacl, acldefault('t', spcowner))) a), '', '', ''
  FROM pg_tablespace
ORDER BY 1, 2, 3, 4;
"""

CHECK_DB = "aon check"
TRIGGER_DB = "aon_trigger"
TEMPLATE_DB = "aon template"


def state(sandbox) -> tuple[list[str], str]:
    """The shared catalogs and pg_dumpall of the whole cluster."""
    return sandbox.psql(SHARED, "template1").splitlines(), sandbox.dumpall()


def drop_dbs(sandbox, *names: str) -> None:
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        sandbox.psql(f"ALTER DATABASE {quoted} IS_TEMPLATE false", "postgres", check=False)
        sandbox.psql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)", "postgres")


def backup(sandbox, label: str) -> str:
    proc = sandbox.fab("backup", f"--label={label}", timeout=900)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    return next(b["name"] for b in listing if b["location"] == "remote" and label in b["name"])


def stop_load(sandbox) -> None:
    """End the busy test's writer loop and pgbench in the container (a killed run's
    too): by the loop's own command line and pgbench's name, nothing else."""
    sandbox.ssh(f"c={sandbox.container()}; docker exec $c pkill -f '^sh -c while :; do psql';"
                " docker exec $c pkill -x pgbench; true", check=False)


@pytest.fixture
def clean(sandbox):
    """Nothing set aside before; the test's databases, roles and backups removed after."""
    def remove() -> None:
        stop_load(sandbox)
        assert sandbox.fab("drop-replaced", "--yes").returncode == 0
        drop_dbs(sandbox, CHECK_DB, TRIGGER_DB, TEMPLATE_DB, "aon_copy")
        sandbox.psql("DROP ROLE IF EXISTS aon_gone; DROP ROLE IF EXISTS aon_kept", "postgres")
        sandbox.ssh(f"rm -f {sandbox.home}/postgres-backups/*_aon-*", check=False)

    assert sandbox.fab("install-backups").returncode == 0
    remove()  # what a run that was killed left
    yield
    remove()


def test_a_restore_that_fails_in_any_database_changes_nothing(sandbox, clean):
    # Roles the dump changes, one it creates (gone from the live cluster by then), and
    # two databases whose replay fails: each failure must undo everything.
    sandbox.psql('CREATE ROLE aon_gone LOGIN PASSWORD \'one\'; CREATE ROLE aon_kept; '
                 'GRANT aon_kept TO aon_gone', "postgres")
    sandbox.psql(f'CREATE DATABASE "{CHECK_DB}"; CREATE DATABASE {TRIGGER_DB}', "postgres")
    sandbox.psql("""
        CREATE TABLE b_ref (x int);
        CREATE FUNCTION in_ref(int) RETURNS bool LANGUAGE sql AS
            'SELECT EXISTS (SELECT 1 FROM public.b_ref WHERE x = $1)';
        CREATE TABLE a_main (x int CHECK (public.in_ref(x)));
        INSERT INTO b_ref VALUES (1), (2); INSERT INTO a_main VALUES (1), (2);
    """, CHECK_DB)
    name = backup(sandbox, "aon-check")
    # The live cluster moves on: its state is what a failed restore must leave.
    sandbox.psql("ALTER ROLE aon_kept LOGIN CONNECTION LIMIT 4; DROP ROLE aon_gone; "
                 "ALTER ROLE aimms_user SET work_mem = '5MB'", "postgres")
    sandbox.psql("INSERT INTO audit_log (at, actor, action) VALUES (now(), 'late', 'x')",
                 "aimms_web")
    before = state(sandbox)
    proc = sandbox.fab("restore", f"--file={name}", "--yes", "--no-safety-backup")
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "in_ref" in line or "a_main" in line, line
    assert repr(CHECK_DB) in line, line  # the database is named
    assert "nothing was changed" in line, line
    assert state(sandbox) == before

    # The same for one database, and for an event trigger that forbids the REFRESH of
    # a materialized view (pg_dump creates event triggers before it refreshes).
    sandbox.psql("""
        CREATE TABLE t AS SELECT 1 AS a;
        CREATE MATERIALIZED VIEW mv AS SELECT a FROM t;
        CREATE FUNCTION no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
            $$BEGIN RAISE EXCEPTION 'no DDL here'; END$$;
        CREATE EVENT TRIGGER no_ddl ON ddl_command_start EXECUTE FUNCTION no_ddl();
    """, TRIGGER_DB)
    name = backup(sandbox, "aon-trigger")
    before = state(sandbox)
    proc = sandbox.fab("restore", f"--file={name}", f"--database={TRIGGER_DB}", "--yes",
                       "--no-safety-backup")
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "no DDL here" in line and repr(TRIGGER_DB) in line, line
    assert state(sandbox) == before


def test_what_once_stopped_a_restore_now_restores_exactly(sandbox, clean):
    """A database marked IS_TEMPLATE in a tablespace the cluster has, one whose sessions
    are read only by default, a role connection limit set after the backup."""
    cid = sandbox.container()
    sandbox.ssh(f"docker exec -u postgres {cid} mkdir -p /var/lib/postgresql/aon_ts")
    sandbox.psql("CREATE TABLESPACE aon_ts LOCATION '/var/lib/postgresql/aon_ts'", "postgres",
                 check=False)
    try:
        sandbox.psql(f'CREATE DATABASE "{TEMPLATE_DB}" TABLESPACE aon_ts IS_TEMPLATE true',
                     "postgres")
        sandbox.psql("CREATE TABLE kept AS SELECT 42 AS answer", TEMPLATE_DB)
        # A database whose sessions are read only by default, and a role's connection
        # limit set after the backup (reset like its other attributes).
        sandbox.psql(f"CREATE DATABASE {TRIGGER_DB}; CREATE ROLE aon_kept", "postgres")
        sandbox.psql("CREATE TABLE t AS SELECT 7 AS a", TRIGGER_DB)
        # What pg_dumpall does not carry: an extension's version (CREATE EXTENSION makes
        # the default one), settings made with ALTER ROLE ALL.
        sandbox.psql("CREATE EXTENSION hstore VERSION '1.6'", TRIGGER_DB)
        sandbox.psql("ALTER ROLE ALL SET aon.kept = 'yes'", "postgres")
        sandbox.psql(f"ALTER DATABASE {TRIGGER_DB} SET default_transaction_read_only = on",
                     "postgres")
        name = backup(sandbox, "aon-template")
        after_backup = state(sandbox)
        sandbox.psql("INSERT INTO kept VALUES (0)", TEMPLATE_DB)
        sandbox.psql("ALTER ROLE aon_kept CONNECTION LIMIT 4; ALTER ROLE ALL RESET aon.kept; "
                     "ALTER ROLE ALL SET aon.later = 'no'", "postgres")
        sandbox.psql("BEGIN READ WRITE; ALTER EXTENSION hstore UPDATE; COMMIT", TRIGGER_DB)
        proc = sandbox.fab("restore", f"--file={name}", "--yes", "--no-safety-backup")
        assert proc.returncode == 0, proc.stderr
        assert sandbox.psql("SELECT string_agg(answer::text, ',') FROM kept", TEMPLATE_DB) \
            == "42"
        assert sandbox.fab("drop-replaced", "--yes").returncode == 0
        assert state(sandbox) == after_backup
        assert sandbox.psql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'",
                            TRIGGER_DB) == "1.6"
    finally:
        sandbox.psql("ALTER ROLE ALL RESET ALL", "postgres")
        drop_dbs(sandbox, TEMPLATE_DB, TRIGGER_DB)
        sandbox.psql("DROP TABLESPACE IF EXISTS aon_ts", "postgres", check=False)


WRITER = ("while :; do psql -X -q -U aimms_user -d aimms_web -c \"INSERT INTO aon_writes "
          "(at) VALUES (clock_timestamp())\" >/dev/null 2>&1; sleep 0.02; done")


def test_a_busy_cluster_never_mixes_the_applications_writes_into_the_restore(sandbox, clean):
    sandbox.psql("DROP TABLE IF EXISTS aon_writes; CREATE TABLE aon_writes "
                 "(id serial PRIMARY KEY, at timestamptz); "
                 "GRANT ALL ON aon_writes, aon_writes_id_seq TO aimms_user", "aimms_web")
    cid = sandbox.container()
    writer = subprocess.Popen(["ssh", "-F", str(sandbox.ssh_config), "aidset",
                               f"docker exec {cid} sh -c '{WRITER}'"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    idle = subprocess.Popen(["ssh", "-F", str(sandbox.ssh_config), "aidset",
                             f"docker exec -i {cid} psql -U aimms_user -d aimms_web"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert idle.stdin is not None
    idle.stdin.write(b"BEGIN; SELECT count(*) FROM customers;\n")
    idle.stdin.flush()
    bench = None

    def sessions(where: str) -> int:
        return int(sandbox.psql(f"SELECT count(*) FROM pg_stat_activity WHERE {where}",
                                "postgres"))

    try:
        # The writer writes, and the idle session holds its transaction open.
        wait_until(lambda: sessions("state = 'idle in transaction'") >= 1
                   and int(sandbox.psql("SELECT count(*) FROM aon_writes", "aimms_web")) > 0,
                   timeout=60, every=0.2)
        name = backup(sandbox, "aon-busy")
        # Read-only load (a script of its own: the demo data has no pgbench tables).
        bench = subprocess.Popen(["ssh", "-F", str(sandbox.ssh_config), "aidset",
                                  "echo 'SELECT count(*) FROM customers;' | "
                                  f"docker exec -i {cid} pgbench -n -U postgres -c 2 -T 600 "
                                  "-f - aimms_web"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        wait_until(lambda: sessions("application_name = 'pgbench'") >= 2, timeout=60,
                   every=0.2)
        plan = sandbox.fab("restore", f"--file={name}", "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "aimms_user@local" in plan.stdout  # the sessions it will end are named
        proc = sandbox.fab("restore", f"--file={name}", "--database=aimms_web", "--yes",
                           "--no-safety-backup")
        assert proc.returncode == 0, proc.stderr
        # The writer goes on, into the restored database: a row more than it had.
        rows = int(sandbox.psql("SELECT count(*) FROM aon_writes", "aimms_web"))
        wait_until(lambda: int(sandbox.psql("SELECT count(*) FROM aon_writes", "aimms_web"))
                   > rows, timeout=60, every=0.2)
    finally:
        writer.kill()
        idle.kill()
        if bench is not None:
            bench.kill()
        stop_load(sandbox)  # they run on in the container without their ssh client
    restored = _writes(sandbox, "aimms_web")
    assert len({i for i, _ in restored}) == len(restored)  # no id twice: the key held
    # The backup's rows, as a restore of it beside production shows them.
    copy = sandbox.fab("restore", f"--file={name}", "--database=aimms_web", "--as=aon_copy",
                       "--yes", "--no-safety-backup")
    assert copy.returncode == 0, copy.stderr
    backed_up = _writes(sandbox, "aon_copy")
    # Every row of the backup is there, and besides them only what the application wrote
    # after the swap: nothing it wrote while the databases were being rebuilt.
    assert set(backed_up) <= set(restored)
    rebuilt_at = max(at for _, at in backed_up)
    later = [at for _, at in set(restored) - set(backed_up)]
    assert later and all(at > rebuilt_at for at in later)
    # What it wrote during the rebuild went to the live database, which is kept aside.
    status = json.loads(sandbox.fab("status", "--json").stdout)
    assert any(a["original"] == "aimms_web" for a in status["replaced"]), status["replaced"]


def _writes(sandbox, db: str) -> list[tuple[int, str]]:
    out = sandbox.psql("SELECT id, to_char(at, 'YYYY-MM-DD HH24:MI:SS.US') FROM aon_writes", db)
    return [(int(i), at) for i, at in (ln.split("|") for ln in out.splitlines())]


def test_as_restores_beside_production_and_undo_puts_back_what_was_replaced(sandbox, clean):
    backed_up = sandbox.checksums("aimms_web")
    name = backup(sandbox, "aon-as")
    sandbox.psql("DELETE FROM orders WHERE id = (SELECT max(id) FROM orders)", "aimms_web")
    live = sandbox.checksums("aimms_web")
    assert live != backed_up
    restore = ["restore", f"--file={name}", "--database=aimms_web", "--yes",
               "--no-safety-backup"]
    proc = sandbox.fab(*restore, "--as=aon_copy")
    assert proc.returncode == 0, proc.stderr
    assert sandbox.checksums("aimms_web") == live  # untouched
    assert sandbox.checksums("aon_copy") == backed_up
    again = sandbox.fab(*restore, "--as=aon_copy")
    assert again.returncode != 0 and "exists already" in fab_error_line(again)

    # A restore, then undo: the live database is as it was before it.
    proc = sandbox.fab(*restore)
    assert proc.returncode == 0, proc.stderr
    assert sandbox.checksums("aimms_web") == backed_up
    undo = sandbox.fab("restore-undo", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert sandbox.checksums("aimms_web") == live
    assert "no database" in sandbox.fab("drop-replaced", "--yes").stderr
    # The sandbox's data as the test found it.
    assert sandbox.fab(*restore).returncode == 0
    assert sandbox.checksums("aimms_web") == backed_up


def test_dry_runs_change_nothing(sandbox, clean):
    name = backup(sandbox, "aon-dry")
    sandbox.psql("UPDATE customers SET name = name || '!' WHERE id = 1", "aimms_web")
    before = state(sandbox)
    for args in (["restore", f"--file={name}", "--dry-run"],
                 ["--dry", "restore", f"--file={name}", "--yes"],
                 ["restore-undo", "--dry-run"], ["drop-replaced", "--dry-run"]):
        proc = sandbox.fab(*args)
        assert state(sandbox) == before, args
        assert "Traceback" not in proc.stderr

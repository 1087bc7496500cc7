"""Integration: a database whose name is not valid UTF-8 is backed up, verified and
restored exactly, the whole cluster and alone (issue 22, item 6).

A UTF8 cluster can hold such a name: made from a connection to a SQL_ASCII database,
whose server takes a statement's bytes as they are. pg_dump (15.11 and later) cannot
write it in ``CREATE DATABASE``: it writes the invalid pair 0xC0 0x20 in place of the
byte (the fix of CVE-2025-1094), so the restore gives the name its bytes back; the
swap runs from a SQL_ASCII database for the same reason. Proof of "exactly": the
database's row of pg_database (its ACL too), its settings and a role's settings in it,
its comment, extension version and pg_dump of it, before the backup and after each
restore. (A name with a line break is refused at backup:
test_backup_coverage.py.)
"""

from __future__ import annotations

import json
import shlex

import pytest

pytestmark = pytest.mark.integration

#: The database: its bytes, and as argv carries them (surrogateescape).
RAW = b"caf\xe9 'x'"
ARG = RAW.decode("utf-8", "surrogateescape")
#: The SQL_ASCII database it is made from.
ASCII_DB = "odd_names_ascii"
LABEL = "oddnames"


def quoted(name: bytes) -> bytes:
    return b'"' + name.replace(b'"', b'""') + b'"'


def printf_arg(name: bytes) -> str:
    """``name`` as a printf format, ASCII only (docker exec would turn the byte to
    U+FFFD)."""
    return "".join(f"\\{b:03o}" if b >= 0x80 or b in b"\\%'" else chr(b) for b in name)


def run_sql(sandbox, sql: bytes, db: str = ASCII_DB, *, check: bool = True) -> bytes:
    """``sql`` (bytes, as they are) in ``db``, client and server taking bytes as they are
    when ``db`` is SQL_ASCII; output unaligned, tuples only."""
    cid = sandbox.container()
    proc = sandbox.ssh(f"docker exec -i -e PGCLIENTENCODING=SQL_ASCII {cid} psql -X -q -A -t "
                       f"-v ON_ERROR_STOP=1 -U postgres -d {shlex.quote(db)}",
                       input=sql, check=check)
    return proc.stdout.strip()


def in_odd_db(sandbox, sql: bytes) -> bytes:
    """``sql`` in the odd database (reached by \\connect: its name goes through stdin)."""
    return run_sql(sandbox, b"\\connect " + quoted(RAW) + b"\n" + sql)


def facts(sandbox) -> dict[str, bytes]:
    """What the catalogs and pg_dump say of the odd database (names as hex)."""
    catalog = run_sql(sandbox, b"""
        SELECT encode(textsend(d.datname::text), 'hex'), pg_encoding_to_char(d.encoding),
               d.datcollate, d.datctype, pg_get_userbyid(d.datdba), d.datconnlimit,
               d.datallowconn, d.datistemplate,
               -- the ACL's items in order (a restore may grant them in another)
               (SELECT string_agg(a::text, ',' ORDER BY a::text)
                  FROM unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a),
               coalesce(shobj_description(d.oid, 'pg_database'), '-'),
               (SELECT string_agg(c, ',' ORDER BY c) FROM pg_db_role_setting s,
                  unnest(s.setconfig) c WHERE s.setdatabase = d.oid AND s.setrole = 0),
               (SELECT string_agg(pg_get_userbyid(s.setrole) || ':' || c, ',' ORDER BY c)
                  FROM pg_db_role_setting s, unnest(s.setconfig) c
                 WHERE s.setdatabase = d.oid AND s.setrole <> 0)
          FROM pg_database d WHERE encode(textsend(d.datname::text), 'hex') = '""" +
                       RAW.hex().encode() + b"'")
    cid = sandbox.container()
    dump = sandbox.ssh(f"docker exec {cid} sh -c 'pg_dump -U postgres -d "
                       f"\"$(printf \"$1\")\"' sh "
                       f"{shlex.quote(printf_arg(b'dbname=' + conninfo_value(RAW)))}").stdout
    dump = b"\n".join(ln for ln in dump.splitlines()
                      if not ln.startswith((b"\\restrict", b"\\unrestrict")))
    rows = in_odd_db(sandbox, b"SELECT md5(string_agg(t::text, ',' ORDER BY id)), count(*), "
                              b"(SELECT extversion FROM pg_extension WHERE extname = 'hstore') "
                              b"FROM odd.t")
    return {"catalog": catalog, "dump": dump, "rows": rows}


def conninfo_value(name: bytes) -> bytes:
    return b"'" + name.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"


def drop_all(sandbox) -> None:
    """What this test makes (also what a killed run left)."""
    assert sandbox.fab("drop-replaced", "--yes").returncode == 0
    cid = sandbox.container()
    sandbox.ssh(f"docker exec {cid} psql -X -q -U postgres -d postgres -c "
                f"\"CREATE DATABASE {ASCII_DB} ENCODING SQL_ASCII TEMPLATE template0 "
                f"LC_COLLATE 'C' LC_CTYPE 'C'\"", check=False)
    run_sql(sandbox, b"DROP DATABASE IF EXISTS " + quoted(RAW) + b" WITH (FORCE)")
    sandbox.psql(f"DROP DATABASE IF EXISTS {ASCII_DB} WITH (FORCE)", "postgres")
    sandbox.ssh(f"rm -f {sandbox.home}/postgres-backups/*_{LABEL}.*", check=False)


@pytest.fixture
def odd_db(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    drop_all(sandbox)
    sandbox.psql(f"CREATE DATABASE {ASCII_DB} ENCODING SQL_ASCII TEMPLATE template0 "
                 "LC_COLLATE 'C' LC_CTYPE 'C'", "postgres")
    run_sql(sandbox, b"CREATE DATABASE " + quoted(RAW) + b" TEMPLATE template0 ENCODING UTF8;\n"
            b"COMMENT ON DATABASE " + quoted(RAW) + b" IS 'named in Latin-1';\n"
            b"ALTER DATABASE " + quoted(RAW) + b" SET work_mem = '6MB';\n"
            b"ALTER ROLE aimms_user IN DATABASE " + quoted(RAW) + b" SET work_mem = '5MB';\n"
            b"REVOKE CONNECT ON DATABASE " + quoted(RAW) + b" FROM PUBLIC;\n"
            b"GRANT CONNECT ON DATABASE " + quoted(RAW) + b" TO aimms_user;\n")
    in_odd_db(sandbox, "SET client_encoding = 'UTF8';\nCREATE SCHEMA odd; "
                       "CREATE TABLE odd.t (id int PRIMARY KEY, v text NOT NULL); "
                       "INSERT INTO odd.t SELECT g, repeat('é ü ' || g, g % 7) "
                       "FROM generate_series(1, 500) g; "
                       "CREATE EXTENSION hstore VERSION '1.6';".encode())
    yield
    drop_all(sandbox)


def test_a_database_name_that_is_not_utf8_is_backed_up_and_restored_exactly(sandbox, odd_db):
    before = facts(sandbox)
    assert before["catalog"].startswith(RAW.hex().encode() + b"|UTF8|"), before["catalog"]
    assert before["catalog"].endswith(b"|work_mem=6MB|aimms_user:work_mem=5MB")
    # The extension's version comes back from the backup's preface, not as the default.
    assert before["rows"].endswith(b"|500|1.6"), before["rows"]

    proc = sandbox.fab("backup", f"--label={LABEL}", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "caf\\xe9 'x'" in proc.stderr, proc.stderr  # the log shows the byte as \xe9
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    name = next(b["name"] for b in listing if b["location"] == "remote" and LABEL in b["name"])
    report = json.loads(sandbox.fab("verify", f"--file={name}", "--json").stdout)
    assert report["state"] == "OK", report
    coverage = next(c for c in report["checks"] if c["name"] == "databases")
    assert coverage["state"] == "OK", coverage

    # The whole cluster, after the database changed.
    in_odd_db(sandbox, b"DELETE FROM odd.t WHERE id > 100; ALTER TABLE odd.t ADD c int")
    run_sql(sandbox, b"ALTER DATABASE " + quoted(RAW) + b" RESET work_mem; "
            b"ALTER ROLE aimms_user IN DATABASE " + quoted(RAW) + b" RESET ALL; "
            b"GRANT ALL ON DATABASE " + quoted(RAW) + b" TO PUBLIC")
    proc = sandbox.fab("restore", f"--file={name}", "--yes", "--no-safety-backup", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert facts(sandbox) == before
    assert sandbox.fab("drop-replaced", "--yes").returncode == 0

    # That database alone, named on the command line by its bytes (argv: surrogateescape).
    in_odd_db(sandbox, b"DROP SCHEMA odd CASCADE")
    proc = sandbox.fab("restore", f"--file={name}", f"--database={ARG}", "--yes",
                       "--no-safety-backup", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert facts(sandbox) == before
    aside = sandbox.fab("drop-replaced", "--yes")
    assert aside.returncode == 0 and "caf\\xe9 'x'" in aside.stdout + aside.stderr, aside


def test_a_deep_verify_replays_a_database_name_that_is_not_utf8(sandbox, odd_db):
    """The trial restore brings the name back with its bytes, and counts its rows; the
    database allows no connections, so the trial opens it by that name."""
    run_sql(sandbox, b"ALTER DATABASE " + quoted(RAW) + b" ALLOW_CONNECTIONS false")
    proc = sandbox.fab("backup", f"--label={LABEL}", timeout=900)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    name = next(b["name"] for b in listing if b["location"] == "remote" and LABEL in b["name"])
    deep = sandbox.fab("verify", f"--file={name}", "--deep", "--json", timeout=900)
    assert "Traceback" not in deep.stderr, deep.stderr
    report = json.loads(deep.stdout)
    assert deep.returncode == 0 and report["state"] == "OK", (report, deep.stderr)
    assert "odd.t" in json.dumps(report), report
    # The drill restores the host's newest backup (no offsite target here) and compares
    # it with the live cluster, that database included.
    drill = sandbox.fab("drill", "--json", timeout=900)
    assert "Traceback" not in drill.stderr, drill.stderr
    found = json.loads(drill.stdout)
    assert drill.returncode == 0 and found["state"] == "OK", (found, drill.stderr)
    assert "odd.t" in json.dumps(found), found

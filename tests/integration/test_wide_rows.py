"""Integration: rows wider than the dump reader's 1 MiB buffer, through backup, verify
and restore, proven with pg_dump of the database before and after.

A first row of 3 MB in a table of one text column once made the reader pass bytes on
twice: ``fab restore --database`` brought back 3,481 rows for 101, exit 0, and
``fab verify --deep`` said ``ok``. Rows of tens of MB (text, bytea, jsonb) must come back
exactly, wherever they fall in the reader's buffer.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

DB = "wide rows"

SETUP = """
CREATE TABLE aaa_notes (body text);
INSERT INTO aaa_notes SELECT repeat('w', 3 * 1024 * 1024);
INSERT INTO aaa_notes SELECT 'note ' || g FROM generate_series(1, 100) g;
CREATE TABLE bbb (a integer PRIMARY KEY, b text);
INSERT INTO bbb SELECT g, md5(g::text) FROM generate_series(1, 50) g;
CREATE TABLE docs (id integer, doc jsonb, blob bytea, body text);
INSERT INTO docs SELECT 1, jsonb_build_object('k', repeat('j', 12 * 1024 * 1024)),
       decode(repeat('00ff', 6 * 1024 * 1024), 'hex'), repeat(E'a\\tb\\nc', 4 * 1024 * 1024);
INSERT INTO docs SELECT g, '{}', '\\x00', 'row' FROM generate_series(2, 20) g;
"""


def _dump(sandbox) -> str:
    # Without the random \\restrict keys of each pg_dump run.
    out = sandbox.in_postgres("pg_dump -U postgres -d 'wide rows' "
                              "| grep -Ev '^.(un)?restrict ' | sha256sum")
    return out.stdout.decode().split()[0]


def _counts(sandbox) -> str:
    return sandbox.psql("SELECT (SELECT count(*) FROM aaa_notes), (SELECT count(*) FROM bbb),"
                        " (SELECT count(*) FROM docs), (SELECT sum(length(body)) FROM docs)",
                        DB)


@pytest.fixture(scope="module")
def wide(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    sandbox.psql('DROP DATABASE IF EXISTS "wide rows" WITH (FORCE); '
                 'CREATE DATABASE "wide rows" TEMPLATE template0', "postgres")
    sandbox.psql(SETUP, DB)
    proc = sandbox.fab("backup", "--label=wide", timeout=900)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sandbox.fab("list-backups", "--json").stdout)
    name = next(b["name"] for b in listing if b["location"] == "remote" and "wide" in b["name"])
    yield {"name": name, "dump": _dump(sandbox), "counts": _counts(sandbox)}
    sandbox.psql('DROP DATABASE IF EXISTS "wide rows" WITH (FORCE)', "postgres")
    sandbox.ssh(f"rm -f {sandbox.home}/postgres-backups/{name} "
                f"{sandbox.home}/postgres-backups/{name}.sha256", check=False)


def test_deep_verify_of_a_backup_with_wide_rows_counts_them_exactly(wide, sandbox):
    proc = sandbox.fab("verify", f"--file={wide['name']}", "--deep", "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    tables = {t["name"]: t["rows"] for db in data["databases"] if db["name"] == DB
              for t in db["tables"] or []}
    assert tables == {"public.aaa_notes": 101, "public.bbb": 50, "public.docs": 20}


def test_a_database_with_wide_rows_is_restored_exactly(wide, sandbox):
    sandbox.psql("DELETE FROM aaa_notes WHERE body LIKE 'note 1%'; "
                 "DELETE FROM docs WHERE id > 10", DB)
    assert _counts(sandbox) != wide["counts"]
    proc = sandbox.fab("restore", f"--file={wide['name']}", f"--database={DB}", "--yes",
                       "--no-safety-backup", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert _counts(sandbox) == wide["counts"]
    assert _dump(sandbox) == wide["dump"]

"""Pure parts of restore: the awk filter (run with the machine's awk), inspection, errors."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from aimms_ops import restore
from aimms_ops.shell import SCRIPTS_DIR

FILTER = SCRIPTS_DIR / "restore-filter.awk"

DUMP = (Path(__file__).parent / "data" / "cluster-dump.sql").read_text()

CLEAN = ('DROP DATABASE IF EXISTS aimms_web;\nDROP ROLE IF EXISTS aimms_user;\n'
         'CREATE DATABASE "a""b c" WITH TEMPLATE = template0;\n')

awk_needed = pytest.mark.skipif(shutil.which("awk") is None, reason="needs awk")


def _filter(text: str, only: str = "", rc: int = 0) -> tuple[list[str], str]:
    proc = subprocess.run(["awk", "-v", f"only={only}", "-f", str(FILTER)], input=text,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == rc, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "completion marker" not in ln]
    return proc.stdout.split("\n"), "\n".join(lines)


@awk_needed
def test_full_restore_transformations():
    out, err = _filter(DUMP)
    src = DUMP.split("\n")
    assert len(out) == len(src) + 1  # one line inserted, and reported
    inserted = int(err.strip().rsplit(" ", 1)[1])
    assert out[inserted - 1].startswith("\\connect template1 \\\\ DROP DATABASE IF EXISTS "
                                        "postgres WITH (FORCE); CREATE DATABASE postgres")
    assert out[inserted] == "\\connect postgres"
    assert ("DO $aimms_ops$BEGIN CREATE ROLE aimms_user; EXCEPTION WHEN duplicate_object "
            "THEN NULL; END$aimms_ops$;") in out
    assert any('CREATE ROLE "Odd Role";' in ln and ln.startswith("DO ") for ln in out)
    assert ('DROP DATABASE IF EXISTS "My DB" WITH (FORCE); CREATE DATABASE "My DB" '
            "WITH TEMPLATE = template0 ENCODING = 'UTF8';") in out
    assert ("DROP DATABASE IF EXISTS aimms_web WITH (FORCE); CREATE DATABASE aimms_web WITH "
            "TEMPLATE = template0 ENCODING = 'UTF8';") in out
    # COPY data is never touched, even when it looks like a marker or a statement.
    assert "CREATE ROLE not_a_role;" in out
    assert out.count('-- Database "postgres" dump') == 2
    # Before the inserted line, every line keeps its number.
    for got, want in zip(out[: inserted - 1], src, strict=False):
        assert want in got  # unchanged, or the original kept inside the transformed line
    assert out[inserted:] == src[inserted - 1:]


@awk_needed
def test_clean_dump_lines():
    out, _ = _filter(CLEAN, rc=3)
    assert out[0] == "DROP DATABASE IF EXISTS aimms_web WITH (FORCE);"
    assert out[1].startswith("-- aimms-ops kept the role: DROP ROLE")
    assert out[2].startswith('DROP DATABASE IF EXISTS "a""b c" WITH (FORCE); CREATE DATABASE')


@awk_needed
def test_a_stream_cut_short_fails():
    cut = DUMP[: DUMP.index("-- PostgreSQL database cluster dump complete")]
    proc = subprocess.run(["awk", "-f", str(FILTER)], input=cut, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 3
    assert "ended before its completion marker" in proc.stderr


@awk_needed
def test_one_database_keeps_line_numbers_and_drops_the_rest():
    out, err = _filter(DUMP, only="aimms_web")
    src = DUMP.split("\n")
    assert err == ""
    assert len(out) == len(src)
    for got, want in zip(out, src, strict=True):
        if got:
            assert got == want or got.startswith("DROP DATABASE IF EXISTS aimms_web")
    kept = [ln for ln in out if ln and not ln.startswith("--")]
    assert kept == ["DROP DATABASE IF EXISTS aimms_web WITH (FORCE); CREATE DATABASE aimms_web "
                    "WITH TEMPLATE = template0 ENCODING = 'UTF8';",
                    "\\connect aimms_web", "CREATE TABLE public.orders (id int);"]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_inspect_local_good_gz_lists_databases(tmp_path):
    p = _write(tmp_path, "d.sql.gz", gzip.compress(DUMP.encode()))
    info = restore.inspect_local(p)
    assert info.ok, info.problems
    assert info.databases == ("template1", "My DB", "aimms_web", "postgres")
    assert info.format == "gz" and info.sha256_recorded is None


def test_inspect_local_multi_member_gzip(tmp_path):
    half = len(DUMP) // 2
    data = gzip.compress(DUMP[:half].encode()) + gzip.compress(DUMP[half:].encode())
    info = restore.inspect_local(_write(tmp_path, "d.sql.gz", data))
    assert info.ok, info.problems


@pytest.mark.parametrize("make, problem", [
    (lambda: gzip.compress(DUMP.encode())[:-20], "damaged or truncated"),
    (lambda: b"not gzip at all", "damaged or truncated"),
    (lambda: gzip.compress(b"just text\n"), "not a pg_dumpall dump"),
    (lambda: gzip.compress(DUMP.split("-- PostgreSQL database cluster dump complete")[0]
                           .encode()), "completion marker is missing"),
    (lambda: b"", "empty"),
])
def test_inspect_local_refusals(tmp_path, make, problem):
    info = restore.inspect_local(_write(tmp_path, "d.sql.gz", make()))
    assert not info.ok
    assert any(problem in p for p in info.problems), info.problems


def test_inspect_local_checks_recorded_sha(tmp_path):
    p = _write(tmp_path, "d.sql.gz", gzip.compress(DUMP.encode()))
    (tmp_path / "d.sql.gz.sha256").write_text("f" * 64 + "  d.sql.gz\n")
    info = restore.inspect_local(p)
    assert any("sha256 mismatch" in x for x in info.problems)


def test_inspect_plain_sql(tmp_path):
    info = restore.inspect_local(_write(tmp_path, "d.sql", DUMP.encode()))
    assert info.ok and info.format == "plain"


@pytest.mark.parametrize("stderr, expected", [
    ("aimms-ops: inserted line 50\npsql:<stdin>:80: ERROR:  syntax error at or near \"X\"\n"
     "aimms-ops: status 141 141 141 3\n",
     'psql stopped at line 79 of the dump: ERROR: syntax error at or near "X"'),
    ("psql:<stdin>:12: ERROR:  relation \"t\" already exists\n",
     'psql stopped at line 12 of the dump: ERROR: relation "t" already exists'),
    ("aimms-ops: the postgres container of compose project p is not running\n",
     "the postgres container of compose project p is not running"),
    ("aimms-ops: status 0 1 0 0\n", "decompressing exited 1"),
])
def test_explain_failure(stderr, expected):
    assert restore.explain_failure(stderr) == expected

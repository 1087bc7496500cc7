"""A restore built beside the live cluster: the filter's rewrite, the names it uses, the
facts the plan reads. Pure logic; the swap itself is proven on the sandbox
(tests/integration/test_all_or_nothing.py)."""

from __future__ import annotations

import subprocess

from aimms_ops.dump.beside import SWAP_DB, aside_name, is_ours, new_name, rename_statement
from aimms_ops.dump.lexer import ident_name
from aimms_ops.dump.preface import split_list
from aimms_ops.host import events as host_events
from aimms_ops.monitor.copies import check_copies, parse_copies
from aimms_ops.restore.plan import parse_cluster_facts
from tests.hostprog import HOST
from tests.unit.test_dumpscan_unit import AWKWARD, ODD

ODD_NAME = "odd \"db\" 'x' ü ; name".encode()


def beside_filter(tmp_path, text: str, *args: str) -> tuple[str, str, str, str]:
    proc = subprocess.run([*HOST, "dump", "filter", "--beside", str(tmp_path),
                           *args], input=text.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    manifest = (tmp_path / "manifest").read_text()
    deferred = (tmp_path / "deferred.sql").read_bytes().decode() \
        if (tmp_path / "deferred.sql").exists() else ""
    return proc.stdout.decode(), proc.stderr.decode(), manifest, deferred


def test_names_fit_postgres_and_are_the_restores_own():
    for name in (b"x", ODD_NAME, "é".encode() * 40):
        assert len(new_name(name)) <= 63 and len(aside_name(name, b"20261206_010203")) <= 63
        assert is_ours(new_name(name)) and is_ours(aside_name(name, b"20261206_010203"))
        assert new_name(name) == new_name(name) and new_name(name) != new_name(name + b"1")
        # Lower case digits and underscores: the same name whether quoted or not.
        assert new_name(name) == new_name(name).lower()
    assert not is_ours(b"aimms_web")


def test_only_statements_that_name_the_database_itself_are_renamed():
    to = b"aimms_ops_new_x"
    q = b'"odd ""db"" \'x\' \xc3\xbc ; name"'
    for stmt in (b"ALTER DATABASE " + q + b" SET work_mem TO '7MB';\n",
                 b"COMMENT ON DATABASE " + q + b" IS 'c';\n",
                 b"GRANT CONNECT ON DATABASE " + q + b" TO PUBLIC;\n",
                 b"REVOKE CONNECT,TEMPORARY ON DATABASE " + q + b" FROM PUBLIC;\n",
                 b"ALTER ROLE aimms_user IN DATABASE " + q + b" SET x TO '1';\n",
                 b"CREATE DATABASE " + q + b" WITH TEMPLATE = template0;\n"):
        out = rename_statement(stmt, ODD_NAME, to, ident_name)
        assert q not in out and to in out, out
    for stmt in (b"ALTER DATABASE other SET work_mem TO '7MB';\n",
                 b"CREATE FUNCTION f() RETURNS void AS $$ ALTER DATABASE " + q + b" $$;\n",
                 b"ALTER TABLE t OWNER TO postgres;\n"):
        assert rename_statement(stmt, ODD_NAME, to, ident_name) == stmt


def test_every_database_is_built_under_its_new_name_and_the_live_one_is_untouched(tmp_path):
    out, err, manifest, _deferred = beside_filter(tmp_path, AWKWARD)
    assert "DROP DATABASE IF EXISTS app" not in out  # the live one is never dropped
    assert f"CREATE DATABASE {new_name(b'app').decode()} WITH" in out
    assert f"\\connect {new_name(ODD_NAME).decode()}\n" in out
    assert f"\\connect {new_name(b'template1').decode()}\n" in out
    assert f"\\connect {new_name(b'postgres').decode()}\n" in out
    assert "\\connect app\n" not in out
    assert ODD.splitlines()[0] not in out
    dbs = [bytes.fromhex(ln.split()[1]) for ln in manifest.splitlines() if ln.startswith("db ")]
    assert dbs == [b"template1", b"app", ODD_NAME, b"postgres"]
    # Where each database starts, for the message of a failure: on stderr for a person,
    # as events (core.events) for the restore stream, names that are not UTF-8 too.
    assert "aimms-ops: database app from line " in err
    said = tmp_path / "said"
    out2, err2, _, _ = beside_filter(tmp_path, AWKWARD, "--events", str(said))
    assert (out2, err2) == (out, "")
    found = host_events.parse(said.read_text())
    sections = [(e["database"].encode("utf-8", "surrogateescape"), e["line"])
                for e in found.of("section")]
    assert [db for db, _ in sections] == dbs
    lines = out.splitlines()
    assert all(lines[n - 1].startswith("\\connect ") or "CREATE DATABASE" in lines[n - 1]
               or lines[n - 1].startswith("--") for _, n in sections), sections
    assert {e["event"] for e in found.all} <= {"section", "inserted", "note"}
    assert all(e["text"] for e in found.all)


def test_roles_are_made_now_and_changed_in_the_swap(tmp_path):
    out, _err, manifest, deferred = beside_filter(tmp_path, AWKWARD)
    # New roles are made before the databases that need them, tolerating existing ones.
    assert 'BEGIN CREATE ROLE "report\nreader"; EXCEPTION WHEN duplicate_object' in out
    # Everything else of the globals waits for the swap's transaction.
    assert "ALTER ROLE postgres WITH SUPERUSER" not in out
    assert "ALTER ROLE postgres WITH SUPERUSER;" in deferred
    assert 'GRANT "Odd ""Role""" TO "report\nreader";' in deferred
    assert "REVOKE %I FROM %I" in deferred and "CONNECTION LIMIT -1" in deferred
    assert "BEGIN;" not in deferred and "COMMIT;" not in deferred  # the swap adds them
    roles = [bytes.fromhex(ln.split()[1]) for ln in manifest.splitlines()
             if ln.startswith("role ")]
    assert roles == [b"report\nreader", b'Odd "Role"', b"postgres"]


def test_one_database_and_its_new_name(tmp_path):
    out, _err, manifest, deferred = beside_filter(tmp_path, AWKWARD, "--only", b"app".hex())
    assert manifest.splitlines() == [f"db {b'app'.hex()}"]
    # Roles are left alone: no role is made, none changed.
    assert deferred == "" and "duplicate_object" not in out and "ALTER ROLE postgres" not in out


def test_a_tablespace_is_made_only_when_the_cluster_lacks_it(tmp_path):
    text = AWKWARD.replace("CREATE ROLE postgres;\n", "CREATE ROLE postgres;\nCREATE TABLESPACE "
                           "\"t s\" OWNER postgres LOCATION '/x';\n")
    out, _err, _m, _d = beside_filter(tmp_path, text)
    assert "\nCREATE TABLESPACE \"t s\"" in out
    out, _err, _m, _d = beside_filter(tmp_path, text, "--tablespaces", b"t s".hex())
    assert "\n-- aimms-ops: the cluster has it: CREATE TABLESPACE \"t s\"" in out


def test_the_plan_reads_databases_roles_sessions_and_free_space():
    h = bytes.hex
    text = (f"db 100 {h(b'aimms_web')}\nrole 0 {h(b'a b')}\n"
            f"session {h(b'psql')} {h(b'aimms_web')} {h(b'local')} {h(b'aimms_user')}\n"
            f"session  {h(b'aimms_web')} {h(b'127.0.0.1')} {h(b'app')}\nfree 2048\n")
    live = parse_cluster_facts("c", text)
    assert live.sizes == {"aimms_web": 100} and live.roles == ("a b",)
    assert [(s.database, s.application, s.client, s.user) for s in live.sessions] == [
        ("aimms_web", "psql", "local", "aimms_user"), ("aimms_web", "", "127.0.0.1", "app")]
    assert live.free == 2048 * 1024


def test_status_shows_copies_kept_aside_and_half_built_ones():
    h = bytes.hex
    aside = aside_name(b"aimms_web", b"20261206_010203")
    setting = b"aimms_ops.replaced=" + h(b"aimms_web").encode() + b" 20261206_010203 f t"
    copies = parse_copies([
        {"name": aside.decode(), "size": 1048576, "setting": setting.decode()},
        {"name": new_name(b"x").decode(), "size": 2048, "setting": None},
        {"name": "no size"}, "not a copy"])
    assert [(c.original, c.stamp) for c in copies] == [("aimms_web", "20261206_010203"),
                                                       (None, None)]
    check = check_copies(copies)
    assert check is not None and check.state.name == "WARNING"
    assert "aimms_web" in check.detail and "half-built" in check.detail
    assert check_copies(copies[:1]).state.name == "OK"
    assert check_copies([]) is None


def test_extension_versions_and_alter_role_all_come_from_the_preface(tmp_path):
    h = bytes.hex
    preface = (f"-- aimms-ops: extension {h(b'app')} {h(b'hstore')} 1.6\n"
               "-- aimms-ops: settings of ALTER ROLE ALL\n"
               f"-- aimms-ops: role all {h(b'work_mem=5MB')}\n"
               f"-- aimms-ops: role all {h(b'search_path=a, b')}\n")
    assert split_list(b'"$user", public, "a ""b"", c"') == [b"$user", b"public", b'a "b", c']
    text = preface + AWKWARD.replace(
        "\\connect app\n", "\\connect app\nCREATE EXTENSION IF NOT EXISTS hstore "
        "WITH SCHEMA public;\nCREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;\n")
    out, _err, _m, deferred = beside_filter(tmp_path, text)
    assert "CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public VERSION E'1.6';" in out
    assert "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;" in out  # not recorded
    assert deferred.endswith("ALTER ROLE ALL RESET ALL;\nALTER ROLE ALL SET \"work_mem\" TO "
                             "E'5MB';\nALTER ROLE ALL SET \"search_path\" TO E'a', E'b';\n")
    # A dump that says nothing of ALTER ROLE ALL leaves the cluster's settings alone.
    _out, _err, _m, deferred = beside_filter(tmp_path, AWKWARD)
    assert "ALTER ROLE ALL" not in deferred
    # The extra lines are no database's properties.
    from aimms_ops.dump import facts as dumpfacts
    assert dumpfacts.read_facts([text.encode()]).preface == {}


class FakeCluster:
    """What swap.py asks of the cluster, in memory: databases, their settings, roles."""

    def __init__(self, databases, aside=(), roles=()):
        self.dbs = dict(databases)  # name -> (template, allows connections)
        self.aside = list(aside)  # (name, setting value)
        self.role_set = set(roles)
        self.dropped: list[bytes] = []
        self.sql: list[bytes] = []

    def databases(self):
        return dict(self.dbs)

    def roles(self):
        return set(self.role_set)

    def survey(self):
        from aimms_ops.dump import swap

        return self.databases(), self.roles(), swap.set_aside(self), []

    def drop_swap_db(self):
        self.drop(SWAP_DB)

    def drop_all(self, names):
        for name in names:
            self.drop(name)

    def drop(self, name):
        self.dropped.append(name)
        self.dbs.pop(name, None)
        self.aside = [a for a in self.aside if a[0] != name]

    def psql(self, sql, db=b"template1"):
        self.sql.append(sql)
        if sql.startswith(b"DROP ROLE"):
            self.role_set.discard(sql.split(b'"')[1])
            return []
        if b"unnest(s.setconfig)" in sql:
            return [name.hex().encode() + b" " + (b"aimms_ops.replaced=" + value).hex().encode()
                    for name, value in self.aside]
        return []


def test_a_restore_starts_by_removing_half_built_copies_and_expired_ones(tmp_path):
    from aimms_ops.dump import swap

    old = aside_name(b"app", b"20261120_000000")
    recent = aside_name(b"app", b"20261205_000000")
    cluster = FakeCluster(
        {b"app": (False, True), new_name(b"app"): (False, True), old: (False, False),
         recent: (False, False)},
        aside=[(old, b"617070 20261120_000000 f t"), (recent, b"617070 20261205_000000 f t")],
        roles=[b"postgres", b"a b"])
    logged: list[str] = []

    def log(text: str, **_: object) -> None:
        logged.append(text)

    swap.prepare(cluster, str(tmp_path), log, now=1765065600)  # 2025-12-07
    assert cluster.dropped == [new_name(b"app")]  # both copies younger than 7 days then
    swap.prepare(cluster, str(tmp_path), log, now=1765065600 + 365 * 86400)  # 2026-12-07
    assert cluster.dropped == [new_name(b"app"), old]
    assert {bytes.fromhex(x) for x in (tmp_path / "roles").read_text().split()} == {
        b"postgres", b"a b"}


def test_a_failed_restore_drops_only_the_roles_it_made(tmp_path):
    from aimms_ops.dump import swap

    (tmp_path / "roles").write_text(b"postgres".hex() + "\n")
    (tmp_path / "manifest").write_text(f"db {b'app'.hex()}\nrole {b'postgres'.hex()}\n"
                                       f"role {b'new one'.hex()}\n")
    cluster = FakeCluster({b"app": (False, True), new_name(b"app"): (False, True)},
                          roles=[b"postgres", b"new one", b"someone else's"])
    logged: list[tuple[str, str]] = []
    swap.discard(cluster, str(tmp_path), lambda text, kind="note": logged.append((kind, text)))
    assert cluster.dropped == [new_name(b"app")]
    assert cluster.role_set == {b"postgres", b"someone else's"}
    kind, text = logged[-1]
    assert kind == "undone"
    assert "the live cluster is as it was" in text and "(new one)" in text

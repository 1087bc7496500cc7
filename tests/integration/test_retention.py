"""Integration: GFS retention, pins, the size-drop guard and pings, on the sandbox host.

Each test makes the state it needs in a backup dir of its own (removed first, so that
whatever a killed run left behind does not count) through an inventory of its own;
backups are real (made by the backup script) or copies of a real, valid dump.
Pings go to a real HTTP server on 127.0.0.1 in this process, which records them.
"""

from __future__ import annotations

import gzip
import json
import shlex
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from aimms_ops.backup import install
from aimms_ops.core.layout import PROGRAM
from aimms_ops.core.retention import Backup, Pin, Policy, decide
from aimms_ops.host import bundle, shell
from aimms_ops.inventory import loader as inventory

from .conftest import REPO, fab_error_line

pytestmark = pytest.mark.integration

COMPOSE = "cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml"
#: ping.timeout of the dead-monitor tests: a ping never takes longer (the default is 45).
PING_TIMEOUT = 6


# --- helpers ----------------------------------------------------------------------------


def _inventory(sandbox, tmp_path: Path, tag: str, **changes) -> tuple[Path, str]:
    """An inventory like the sandbox's with its own backup dir and log; (path, dir)."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    h = data["hosts"]["aidset"]
    d = f"{sandbox.home}/ret-test-{tag}"
    h["backup_dir"] = d
    h["log_file"] = f"{d}.log"
    for k, v in changes.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    p = tmp_path / f"inv-{tag}.yml"
    p.write_text(yaml.safe_dump(data))
    sandbox.ssh(f"rm -rf {d} {d}.log && mkdir -m 700 {d}")
    return p, d


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def _remote(sandbox, inv: Path) -> list[dict]:
    return [b for b in json.loads(_ok(sandbox.fab("list-backups", "--json", inventory=inv)))
            if b["location"] == "remote"]


def _files(sandbox, d: str, pattern: str = "aimms_postgres_*.sql.gz") -> set[str]:
    return set(sandbox.sh(f"cd {d} && ls -1 {pattern} 2>/dev/null || true").split())


def _name(ts: float, label: str = "") -> str:
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y%m%d_%H%M%S")
    return f"aimms_postgres_{stamp}{'_' + label if label else ''}.sql.gz"


def _valid_dump_on_host(sandbox, d: str) -> str:
    """A small, real, valid backup file (tests/unit/data's cluster dump, gzipped) in ``d``."""
    data = gzip.compress((REPO / "tests" / "unit" / "data" / "cluster-dump.sql").read_bytes())
    sandbox.ssh(f"cat > {d}/.seed.gz", input=data)
    return f"{d}/.seed.gz"


def _copies(sandbox, src: str, d: str, stamps: list[tuple[str, float]]) -> None:
    """Copies of ``src`` as backups NAME with a .sha256 and the mtime given, in one go."""
    lines = ["set -e", f"cd {d}", f"sum=$(sha256sum < {shlex.quote(src)} | cut -d' ' -f1)"]
    for name, ts in stamps:
        lines.append(f"cp {shlex.quote(src)} {name} && printf '%s  %s\\n' \"$sum\" {name} "
                     f"> {name}.sha256 && touch -d @{int(ts)} {name} {name}.sha256")
    sandbox.ssh("bash -s", input="\n".join(lines).encode())


def _log(sandbox, d: str) -> str:
    return sandbox.sh(f"cat {d}.log")


# --- GFS retention: the host removes exactly what the dry run said ---------------------------


def test_prune_removes_exactly_what_the_dry_run_said(sandbox, tmp_path):
    policy = {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 2,
              "min_keep": 3}
    inv, d = _inventory(sandbox, tmp_path, "gfs", retention_days=None, min_keep=None,
                        retention=policy)
    seed = _valid_dump_on_host(sandbox, d)
    today = datetime.now(UTC).date()
    stamps = []
    for i in range(1, 800):  # two years and more of nightly backups, some gaps
        day = today - timedelta(days=i)
        if i % 37 in (5, 6, 7):
            continue
        ts = datetime(day.year, day.month, day.day, 2, tzinfo=UTC).timestamp()
        stamps.append((_name(ts), ts))
        if i % 50 == 3:  # several a day now and then
            stamps.append((_name(ts + 7 * 3600, "manual"), ts + 7 * 3600))
    _copies(sandbox, seed, d, stamps)
    pinned_ts = stamps[-1][1] - 400 * 86400  # older than every rule reaches
    pinned = _name(pinned_ts, "audit")
    _copies(sandbox, seed, d, [(pinned, pinned_ts)])
    _ok(sandbox.fab("pin", f"--file={pinned}", "--reason=kept for the audit", inventory=inv))

    dry = json.loads(_ok(sandbox.fab("prune", "--dry-run", "--json", inventory=inv)))
    names = {n for n, _ in stamps} | {pinned}
    assert {x["name"] for x in dry} == names  # every backup, once
    assert all(x["rule"] and x["reason"] for x in dry)
    # The host ran the same function this machine does: the same decision.
    size = int(sandbox.sh(f"stat -c %s {seed}"))
    here = decide([Backup(n, ts, size) for n, ts in stamps]
                  + [Backup(pinned, pinned_ts, size, Pin(reason="x"))],
                  Policy(daily=7, weekly=4, monthly=6, yearly=2, min_keep=3), time.time())
    assert [(x["name"], x["action"], x["rule"]) for x in dry] == [
        (x.name, x.action, x.rule) for x in here]
    keep = {x["name"] for x in dry if x["action"] == "keep"}
    assert next(x for x in dry if x["name"] == pinned)["rule"] == "pinned"
    assert 7 + 4 + 6 + 2 <= len(keep) <= 7 + 4 + 6 + 2 + 2
    assert _files(sandbox, d) == names  # a dry run removes nothing

    proc = sandbox.fab("prune", "--yes", inventory=inv)
    _ok(proc)
    assert _files(sandbox, d) == keep
    assert _files(sandbox, d, "*.sha256") == {f"{n}.sha256" for n in keep}
    assert _files(sandbox, d, "*.pin") == {f"{pinned}.pin"}
    assert "retention: removed" in _log(sandbox, d)

    # Unpinned, it is an old backup like any other: the next prune removes it.
    _ok(sandbox.fab("unpin", f"--file={pinned}", inventory=inv))
    again = json.loads(_ok(sandbox.fab("prune", "--dry-run", "--json", inventory=inv)))
    assert [x["action"] for x in again if x["name"] == pinned] == ["remove"]
    _ok(sandbox.fab("prune", "--yes", inventory=inv))
    assert _files(sandbox, d) == keep - {pinned}
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_the_nightly_run_applies_the_same_decision_from_its_settings_file(sandbox, tmp_path):
    """Cron runs the installed script with its settings file and no laptop: it removes
    exactly what fab prune --dry-run showed (rules from the inventory, via the conf)."""
    inv, d = _inventory(sandbox, tmp_path, "cron", retention_days=None,
                        retention={"keep_daily": 3, "keep_monthly": 2})
    seed = _valid_dump_on_host(sandbox, d)
    now = time.time()
    _copies(sandbox, seed, d, [(_name(now - i * 86400 - 3600), now - i * 86400 - 3600)
                               for i in range(1, 90)])
    dry = json.loads(_ok(sandbox.fab("prune", "--dry-run", "--json", inventory=inv)))
    host = inventory.load(inv).host(None)
    conf = install.conf_text(host, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert "RETENTION_RULES='daily=3 monthly=2'" in conf
    sandbox.ssh(f"cat > {d}/.conf", input=conf.encode())
    sandbox.ssh(f"cat > {d}/.script.sh && chmod 700 {d}/.script.sh",
                input=shell.script_text("backup-postgres.sh").encode())
    sandbox.ssh(f"cat > {d}/{PROGRAM}", input=bundle.program())  # beside it, as installed
    sandbox.ssh(f"env -i HOME={sandbox.home} bash -c "
                f"'{d}/.script.sh --config {d}/.conf --prune-only'")
    assert _files(sandbox, d) == {x["name"] for x in dry if x["action"] == "keep"}
    sandbox.ssh(f"rm -rf {d} {d}.log")


# --- pins and safety copies -------------------------------------------------------------------


def test_a_pin_shows_in_list_backups_and_a_safety_copy_is_pinned_not_latest(sandbox,
                                                                             tmp_path):
    inv, d = _inventory(sandbox, tmp_path, "pins", min_keep=1, safety_pin_days=14)
    _ok(sandbox.fab("backup", inventory=inv))
    regular = _remote(sandbox, inv)[0]["name"]
    # A real restore of that backup takes its safety copy first (label pre-restore).
    _ok(sandbox.fab("restore", "--file=latest", "--yes", inventory=inv))
    listing = _remote(sandbox, inv)
    safety = next(b for b in listing if b["label"] == "pre-restore")
    assert safety["pinned"] is True and "safety copy" in safety["pin_reason"]
    until = datetime.fromisoformat(safety["pinned_until"].replace("Z", "+00:00"))
    assert timedelta(days=13, hours=23) < until - datetime.now(UTC) <= timedelta(days=14)
    assert listing[0]["name"] == safety["name"]  # the newest file ...
    verified = json.loads(_ok(sandbox.fab("verify", "--file=latest", "--json", inventory=inv)))
    assert verified["file"] == regular  # ... but never what latest means
    pin_text = sandbox.sh(f"cat {d}/{safety['name']}.pin")
    assert "by=" in pin_text and "at=" in pin_text and "until=" in pin_text

    # fab pin: who, when, why; list-backups shows it.
    _ok(sandbox.fab("pin", f"--file={regular}", "--reason=before the migration",
                    inventory=inv))
    b = next(x for x in _remote(sandbox, inv) if x["name"] == regular)
    assert b["pinned"] is True and b["pin_reason"] == "before the migration"
    assert b["pinned_by"] and b["pinned_until"] is None
    table = _ok(sandbox.fab("list-backups", inventory=inv))
    assert "before the migration" in table
    # Both are older than every rule now: they survive, and the unpinned one goes.
    sandbox.ssh(f"cd {d} && touch -d '400 days ago' *.sql.gz")
    _ok(sandbox.fab("backup", inventory=inv))
    _ok(sandbox.fab("backup", inventory=inv))
    assert {regular, safety["name"]} <= _files(sandbox, d)
    assert "unpinned" in sandbox.fab("unpin", f"--file={regular}", inventory=inv).stderr
    unpinned = json.loads(_ok(sandbox.fab("prune", "--dry-run", "--json", inventory=inv)))
    assert {x["name"]: x["action"] for x in unpinned}[regular] == "remove"
    assert {x["name"]: x["rule"] for x in unpinned}[safety["name"]] == "pinned"
    # Pinning something that is not there says so in one line.
    missing = sandbox.fab("pin", "--file=aimms_postgres_20000101_000000.sql.gz",
                          inventory=inv)
    assert missing.returncode != 0 and "no backup named" in fab_error_line(missing)
    sandbox.ssh(f"rm -rf {d} {d}.log")


# --- the size-drop guard ---------------------------------------------------------------------


def test_a_dump_that_shrank_to_a_tenth_triggers_the_guard_and_nothing_is_pruned(sandbox,
                                                                                 tmp_path):
    inv, d = _inventory(sandbox, tmp_path, "guard", retention_days=7, min_keep=1)
    # A database that makes most of the cluster (whatever else earlier tests left in it),
    # set aside below where no backup looks: a side copy of the restore's.
    aside = "ALTER DATABASE guard_big RENAME TO aimms_ops_old_guard"
    drop = "DROP DATABASE IF EXISTS guard_big; DROP DATABASE IF EXISTS aimms_ops_old_guard"
    sandbox.psql(drop, db="postgres")  # in case a killed run of this test left them
    sandbox.psql("CREATE DATABASE guard_big", db="postgres")
    sandbox.psql("CREATE TABLE filler AS SELECT md5(random()::text) || md5(random()::text) AS a"
                 " FROM generate_series(1, 600000)", db="guard_big")
    _ok(sandbox.fab("backup", inventory=inv))
    full = _remote(sandbox, inv)[0]
    # Five real, valid backups before the next one: copies of that one, 1..4 and 30 days
    # old (the 30-day one is what retention would remove).
    now = time.time()
    ages = [1, 2, 3, 4, 30]
    _copies(sandbox, full["path"], d,
            [(_name(now - a * 86400, "copy"), now - a * 86400) for a in ages])
    old = _name(now - 30 * 86400, "copy")
    assert old in _files(sandbox, d)
    # The cluster shrinks: its application database is set aside, where no backup looks.
    sandbox.psql(aside, db="postgres")
    try:
        proc = sandbox.fab("backup", inventory=inv)
        _ok(proc)
        small = _remote(sandbox, inv)[0]
        assert small["size"] * 2 < full["size"], (small, full)  # the guard's rule
        result = [ln for ln in _log(sandbox, d).splitlines() if " RESULT " in ln][-1]
        assert f"RESULT ok {small['name']}" in result
        assert "suspicious: size dropped from" in result
        assert "suspicious: size dropped" in proc.stderr
        assert old in _files(sandbox, d)  # nothing pruned on that run
        assert "retention skipped" in _log(sandbox, d)
        # ... though retention would have removed it:
        dry = json.loads(_ok(sandbox.fab("prune", "--dry-run", "--json", inventory=inv)))
        assert {x["name"]: x["action"] for x in dry}[old] == "remove"
        status = sandbox.fab("status", "--json", inventory=inv)
        report = json.loads(status.stdout)
        size_check = next(c for c in report["checks"] if c["name"] == "backup size")
        assert size_check["state"] == "WARNING" and report["state"] in ("WARNING", "CRITICAL")
        assert "less than half" in size_check["detail"]

        # An intended shrink: accepted, and retention runs.
        proc = sandbox.fab("backup", "--allow-shrink", inventory=inv)
        _ok(proc)
        result = [ln for ln in _log(sandbox, d).splitlines() if " RESULT " in ln][-1]
        assert "shrink allowed: size dropped from" in result
        assert old not in _files(sandbox, d)
        report = json.loads(sandbox.fab("status", "--json", inventory=inv).stdout)
        size_check = next(c for c in report["checks"] if c["name"] == "backup size")
        assert size_check["state"] == "OK" and "allow-shrink" in size_check["detail"]
    finally:
        sandbox.psql(drop, db="postgres")
    sandbox.ssh(f"rm -rf {d} {d}.log")


# --- pings ---------------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 recording each request: (method, path, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, self.rfile.read(n)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _record

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _ping_inventory(sandbox, tmp_path, tag: str, url: str, kind: str = "healthchecks",
                    **ping):
    return _inventory(sandbox, tmp_path, tag, ping={"url": url, "kind": kind, **ping})


def test_a_good_run_pings_start_then_success_with_the_log_tail(sandbox, tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.port}/ping/abc-123"
    inv, d = _ping_inventory(sandbox, tmp_path, "ping-ok", url)
    _ok(sandbox.fab("backup", inventory=inv))
    made = _remote(sandbox, inv)[0]["name"]
    (_, p1, _), (m2, p2, body) = receiver.requests
    rid = p1.split("rid=")[1]
    assert p1 == f"/ping/abc-123/start?rid={rid}" and len(rid) >= 8
    assert (m2, p2) == ("POST", f"/ping/abc-123/0?rid={rid}")
    text = body.decode()
    assert f"RESULT ok {made}" in text and "START backup" in text and len(body) <= 100_000
    assert "ping start: ok" in _log(sandbox, d)
    # fab status shows the last ping; fab doctor --ping sends a test ping (/log).
    report = json.loads(sandbox.fab("status", "--json", inventory=inv).stdout)
    ping = next(c for c in report["checks"] if c["name"] == "ping")
    assert ping["state"] == "OK" and "last ping ok" in ping["detail"]
    assert report["last_ping"]["event"] == "ok" and report["last_ping"]["result"] == "ok"
    receiver.requests.clear()
    doc = sandbox.fab("doctor", "--ping", "--json", inventory=inv)
    checks = {c["name"]: c for c in json.loads(doc.stdout)["checks"]}
    assert checks["test ping (backup)"]["state"] == "OK"
    assert [(m, p.split("?")[0]) for m, p, _ in receiver.requests] == [
        ("POST", "/ping/abc-123/log")]
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_uptime_kuma_is_told_up_with_the_duration(sandbox, tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.port}/api/push/TOKEN"
    inv, d = _ping_inventory(sandbox, tmp_path, "ping-kuma", url, "uptime-kuma")
    _ok(sandbox.fab("backup", inventory=inv))
    [(method, path, _)] = receiver.requests  # no start signal in Uptime Kuma
    assert method == "GET" and path.startswith("/api/push/TOKEN?status=up&msg=RESULT")
    assert "&ping=" in path
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_a_failing_run_pings_start_then_its_exit_status(sandbox, tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.port}/ping/abc-123"
    inv, d = _ping_inventory(sandbox, tmp_path, "ping-fail", url)
    sandbox.ssh(f"{COMPOSE} stop postgres")
    try:
        proc = sandbox.fab("backup", inventory=inv)
        assert proc.returncode != 0 and "not running" in fab_error_line(proc)
    finally:
        sandbox.ssh(f"{COMPOSE} up -d postgres")
        sandbox.wait_ready()
    (_, p1, _), (m2, p2, body) = receiver.requests
    rid = p1.split("rid=")[1]
    assert p1.startswith("/ping/abc-123/start?")
    assert (m2, p2) == ("POST", f"/ping/abc-123/1?rid={rid}")
    assert "RESULT failed:" in body.decode()
    assert _remote(sandbox, inv) == []
    sandbox.ssh(f"rm -rf {d} {d}.log")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["refused", "hanging"])
def test_a_dead_monitor_costs_at_most_the_bound_and_the_backup_is_good(sandbox, tmp_path,
                                                                       how):
    hang = None
    if how == "refused":
        port = _free_port()  # nothing listens there
    else:
        hang = socket.socket()
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)  # connections are made, and never answered
        port = hang.getsockname()[1]
    try:
        inv0, d0 = _inventory(sandbox, tmp_path, f"noping-{how}")
        started = time.monotonic()
        _ok(sandbox.fab("backup", inventory=inv0))
        baseline = time.monotonic() - started
        inv, d = _ping_inventory(sandbox, tmp_path, f"ping-{how}",
                                 f"http://127.0.0.1:{port}/ping/x", timeout=PING_TIMEOUT)
        started = time.monotonic()
        _ok(sandbox.fab("backup", inventory=inv))
        took = time.monotonic() - started
    finally:
        if hang is not None:
            hang.close()
    assert took <= baseline + 2 * PING_TIMEOUT + 10, (took, baseline)
    [b] = _remote(sandbox, inv)
    assert b["sha256"] and b["checksum"] == "recorded"
    log = _log(sandbox, d)
    assert "RESULT ok" in log and "ping start: failed" in log and "ping ok: failed" in log
    report = json.loads(sandbox.fab("status", "--json", inventory=inv).stdout)
    ping = next(c for c in report["checks"] if c["name"] == "ping")
    assert ping["state"] == "WARNING" and "last ping failed" in ping["detail"]
    sandbox.ssh(f"rm -rf {d} {d}.log {d0} {d0}.log")


def test_doctor_ping_reports_a_monitor_it_cannot_reach(sandbox, tmp_path):
    inv, d = _ping_inventory(sandbox, tmp_path, "ping-doctor",
                             f"http://127.0.0.1:{_free_port()}/ping/x")
    proc = sandbox.fab("doctor", "--ping", "--json", inventory=inv)
    assert proc.returncode != 0
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["test ping (backup)"]["state"] == "CRITICAL"
    assert "ping failed" in checks["test ping (backup)"]["detail"]
    sandbox.ssh(f"rm -rf {d} {d}.log")


def test_the_weekly_deep_verify_pings_its_own_url(sandbox, tmp_path, receiver):
    """verify-backup.sh as cron runs it (settings file, --file latest): start, then
    success with its log lines, to ping.verify_url; latest is never a safety copy."""
    base = f"http://127.0.0.1:{receiver.port}/ping"
    inv, d = _inventory(sandbox, tmp_path, "ping-verify",
                        ping={"url": f"{base}/backup", "verify_url": f"{base}/verify"})
    _ok(sandbox.fab("backup", inventory=inv))
    regular = _remote(sandbox, inv)[0]["name"]
    host = inventory.load(inv).host(None)
    sandbox.ssh(f"cat > {d}/.conf", input=install.conf_text(
        host, {"PATH": "/usr/local/bin:/usr/bin:/bin",
               "DOCKER_HOST": sandbox.docker_host}).encode())
    # The scripts beside the host program, as install-backups puts them.
    sandbox.ssh(f"cat > {d}/{PROGRAM}", input=bundle.program())
    # A safety copy, made as fab restore makes one (fab backup refuses the label).
    sandbox.ssh(f"cat > {d}/.backup.sh && chmod 700 {d}/.backup.sh",
                input=shell.script_text("backup-postgres.sh").encode())
    sandbox.ssh(f"{d}/.backup.sh --config {d}/.conf --label pre-restore --no-prune")
    receiver.requests.clear()
    sandbox.ssh(f"cat > {d}/.verify.sh && chmod 700 {d}/.verify.sh",
                input=shell.script_text("verify-backup.sh").encode())
    vargs = " ".join(shlex.quote(a) for a in install.verify_args(host))
    sandbox.ssh(f"env -i HOME={sandbox.home} {d}/.verify.sh --config {d}/.conf "
                f"--file latest {vargs} >> {d}.log 2>&1", timeout=600)
    (_, p1, _), (m2, p2, body) = receiver.requests
    rid = p1.split("rid=")[1]
    assert p1 == f"/ping/verify/start?rid={rid}"
    assert (m2, p2) == ("POST", f"/ping/verify/0?rid={rid}")
    assert f"RESULT ok {regular} databases=" in body.decode()
    sandbox.ssh(f"rm -rf {d} {d}.log")

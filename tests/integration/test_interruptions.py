"""Integration: operations cut short by a dropped SSH connection or by Ctrl-C.

The connection is dropped by killing (SIGKILL) the sshd processes that serve it, on
this sandbox instance only; Ctrl-C is a SIGINT to the fab process. Whatever is cut,
the task ends with one line and a non-zero exit (130 for Ctrl-C), never a traceback
or a hang, and what it leaves is what its own rerun expects: a backup is complete and
verified or absent, a download leaves a ``.part`` that the rerun resumes and verifies,
a restore leaves no half-loaded table and its rerun gives the backup's data exactly.
The bulk backup also shows what a terminal of 80 columns sees of a long restore.

A new task is covered by adding a row to the tables below; a row whose task ``fab -l``
does not list fails, so that a renamed task does not silently leave the suite.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from aimms_ops.core.retention import NAME_RE
from aimms_ops.dump.beside import new_name

from . import faults
from .conftest import fab_error_line

pytestmark = pytest.mark.integration

BULK_DB = "harden_bulk"
#: Rows of each of the two bulk tables, bulk_a then bulk_b in the dump: enough that a
#: restore loads each for seconds, and that a backup takes seconds (about 35 MB of dump).
BULK_ROWS = 300_000
BIG_FILE_BYTES = 250_000_000
BACKUPS = "postgres-backups"


def need(sandbox, task: str) -> None:
    faults.require_task(sandbox, task)


@dataclass
class Bulk:
    name: str  # the backup on the host holding the bulk database
    want: dict[str, dict[str, str]]  # per database: per-table checksums at backup time


@pytest.fixture(scope="module")
def bulk(sandbox):
    """A database big enough to be cut mid-way, and a backup of the cluster holding it."""
    assert sandbox.fab("install-backups").returncode == 0
    sandbox.psql(f"DROP DATABASE IF EXISTS {BULK_DB} WITH (FORCE)", "postgres")
    sandbox.psql(f"CREATE DATABASE {BULK_DB}", "postgres")
    for table in ("bulk_a", "bulk_b"):
        sandbox.psql(f"CREATE TABLE {table} (id int PRIMARY KEY, body text); "
                     f"INSERT INTO {table} SELECT i, md5(i::text) || md5(random()::text) || "
                     f"md5(random()::text) FROM generate_series(1, {BULK_ROWS}) i;", BULK_DB)
    proc = sandbox.fab("backup", "--label=bulk")
    assert proc.returncode == 0, proc.stderr
    name = next(b["name"] for b in json.loads(sandbox.fab("list-backups", "--json").stdout)
                if b["location"] == "remote")
    want = {db: sandbox.checksums(db) for db in ("aimms_web", BULK_DB)}
    yield Bulk(name, want)
    sandbox.psql(f"DROP DATABASE IF EXISTS {BULK_DB} WITH (FORCE)", "postgres")
    sandbox.ssh(f"rm -f ~/{BACKUPS}/{name} ~/{BACKUPS}/{name}.sha256")


@pytest.fixture(scope="module")
def bulk_local(bulk, sandbox, tmp_path_factory):
    """The bulk backup downloaded, for restores streamed from this machine."""
    dest = tmp_path_factory.mktemp("bulk")
    proc = sandbox.fab("download", f"--file={bulk.name}", f"--dest={dest}")
    assert proc.returncode == 0, proc.stderr
    return dest / bulk.name


def _bulk_count(sandbox, table: str) -> int | None:
    out = sandbox.psql(f"SELECT count(*) FROM {table}", BULK_DB, check=False)
    return int(out) if out.isdigit() else None


def _copy_running(sandbox) -> bool:
    """True while a session loads a bulk table."""
    out = sandbox.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                       "'COPY public.bulk_%'", "postgres", check=False)
    return out.strip() not in ("", "0")


def _wait_restore_gone(sandbox) -> None:
    """Wait until nothing of the cut restore runs, on the host or in the cluster."""
    faults.wait_gone(sandbox, "restore-stream.sh", timeout=60)
    deadline = time.monotonic() + 60
    while _copy_running(sandbox):
        assert time.monotonic() < deadline, "a restore is still loading a bulk table"
        time.sleep(0.5)


# --- backup ----------------------------------------------------------------------------


def _verify_all_backups(sandbox) -> list[str]:
    """Every backup in the dir (.sql.gz or .sql.zst, whatever earlier tests left) passes
    gzip -t or zstd -t and its .sha256; no temporary file is left."""
    files = sandbox.sh(f"ls -1A ~/{BACKUPS}").split()
    assert not [f for f in files if f.endswith(".tmp")], files
    names = [f for f in files if NAME_RE.match(f)]
    sandbox.ssh(f"cd ~/{BACKUPS} && for f in aimms_postgres_*.sql.gz; do [ -e \"$f\" ] || "
                "continue; gzip -t \"$f\" && sha256sum --quiet -c \"$f.sha256\" || exit 1; "
                "done && for f in aimms_postgres_*.sql.zst; do [ -e \"$f\" ] || continue; "
                "zstd -q -t \"$f\" && sha256sum --quiet -c \"$f.sha256\" || exit 1; done",
                timeout=600)
    return names


def _screen(sandbox, *args: str, columns: int = 80) -> str:
    """What a terminal of ``columns`` shows of ``fab ARGS`` (under script), as text."""
    repo = Path(__file__).resolve().parents[2]
    cmd = " ".join(shlex.quote(a) for a in [str(repo / ".venv/bin/fab"), *args])
    env = {**sandbox.env, "AIMMS_OPS_INVENTORY": str(sandbox.inventory),
           "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm"}
    proc = subprocess.run(["script", "-qefc", cmd, "/dev/null"], capture_output=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=600, check=False,
                          cwd=repo)
    assert proc.returncode == 0, proc.stdout.decode("utf-8", "replace")[-2000:]
    return proc.stdout.decode("utf-8", "replace")


_FIGURES = re.compile(r"(\d+(?:\.\d)? (?:B|KiB|MiB|GiB))/~?(\d+\.\d (?:KiB|MiB|GiB))")


def test_a_restore_from_the_host_shows_a_bar_that_moves_at_80_columns(bulk, sandbox):
    """The bar of a restore from a file on the host once stood at 0 for the whole run
    and jumped to the end: on a terminal of 80 columns it now shows the bytes the host
    has read, several figures between 0 and the whole, no line over 80 columns."""
    screen = _screen(sandbox, "restore", f"--file={bulk.name}", f"--database={BULK_DB}",
                     "--yes", "--no-safety-backup")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)  # colours
    frames = [f for f in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", plain) if f.strip()]
    bars = [f for f in frames if f.startswith("restoring") and _FIGURES.search(f)]
    figures = [_FIGURES.search(f).groups() for f in bars]
    total = figures[-1][1]
    assert figures[-1][0] == total, f"the bar did not end full: {bars[-1]!r}"
    between = {done for done, whole in figures if whole == total and done not in (total, "0 B")}
    assert len(between) >= 2, f"the bar did not move between 0 and {total}: {bars}"
    assert max(len(f) for f in frames) <= 80, max(frames, key=len)
    assert sandbox.checksums(BULK_DB) == bulk.want[BULK_DB]


def test_backup_survives_a_dropped_connection(bulk, sandbox):
    before = set(_verify_all_backups(sandbox))
    tmp_glob = Path(sandbox.home, BACKUPS)
    run = faults.start_fab(sandbox, "backup", "--label=dropped")
    faults.drop_connection(sandbox, "backup-postgres.sh",
                           when=lambda: any(tmp_glob.glob(".aimms_postgres_*_dropped.sql.gz.tmp")))
    assert run.wait(120) != 0
    line = fab_error_line(run)
    assert "connection to aidset was lost" in line and "goes on on the host" in line, line
    faults.wait_gone(sandbox, "backup-postgres.sh", timeout=120)
    # The run went on without its session: complete and verified, never half there.
    after = set(_verify_all_backups(sandbox))
    new = after - before
    assert len(new) == 1 and next(iter(new)).endswith("_dropped.sql.gz"), new
    assert f"RESULT ok {next(iter(new))}" in sandbox.sh("tail -n 5 ~/postgres-backup.log")
    again = sandbox.fab("backup", "--label=after-drop")
    assert again.returncode == 0, again.stderr
    sandbox.ssh(f"cd ~/{BACKUPS} && rm -f *_dropped.sql.gz* *_after-drop.sql.gz*")


# --- download --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_backup(sandbox):
    """A large fake backup (random bytes, with its .sha256) that takes seconds to download."""
    name = "aimms_postgres_20200101_000000_bigfile.sql.gz"
    path = f"~/{BACKUPS}/{name}"
    sandbox.ssh(f"mkdir -p ~/{BACKUPS} && head -c {BIG_FILE_BYTES} /dev/urandom > {path} && "
                f"cd ~/{BACKUPS} && sha256sum {name} > {name}.sha256")
    sha = sandbox.sh(f"cut -d' ' -f1 {path}.sha256").strip()
    yield name, sha
    sandbox.ssh(f"rm -f {path} {path}.sha256")


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("how", ["dropped", "ctrl-c"])
def test_download_cut_short_leaves_a_part_that_resumes(sandbox, big_backup, tmp_path, how):
    name, sha = big_backup
    dest = tmp_path / "dl"
    part = dest / (name + ".part")
    run = faults.start_fab(sandbox, "download", f"--file={name}", f"--dest={dest}")

    def started() -> bool:
        return part.exists() and part.stat().st_size > 20_000_000

    if how == "dropped":
        faults.drop_connection(sandbox, f"{BACKUPS}/{name}", when=started)
    else:
        _wait_for(started, 60)
        run.signal(signal.SIGINT)
    rc = run.wait(60)
    line = fab_error_line(run)
    if how == "ctrl-c":
        assert rc == 130 and "interrupted" in line, line
    else:
        assert rc != 0 and "lost" in line, line
    assert "resume" in line, line
    assert part.exists() and 0 < part.stat().st_size < BIG_FILE_BYTES
    assert oct(part.stat().st_mode & 0o777) == "0o600"
    assert not (dest / name).exists()
    rerun = sandbox.fab("download", f"--file={name}", f"--dest={dest}")
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed at" in rerun.stderr
    assert _file_sha(dest / name) == sha
    assert not part.exists()


def _wait_for(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the operation did not get under way"
        time.sleep(0.02)


# --- restore and the tasks that restore ----------------------------------------------------

def _loading_bulk(sandbox) -> bool:
    """True while a backend of this instance's cluster runs a COPY into the bulk database.

    Seen in this machine's process table (the container's processes are there, with
    the title postgres gives them), so the moment is caught within milliseconds. Only
    this instance's containers are looked at: another instance's restore is not this
    one's moment. The first such COPY of a restore is bulk_a's.
    """
    # A restore loads it beside the live one, under its new name (aimms_ops.dump.beside).
    names = (f" {BULK_DB} ", f" {new_name(BULK_DB.encode()).decode()} ")
    return any(faults.cmdline(p).startswith("postgres: ")
               and any(n in faults.cmdline(p) for n in names)
               and faults.cmdline(p).rstrip().endswith("COPY")
               for p in faults.container_processes(sandbox))


def _cut_while_loading(sandbox, run: faults.Running, how: str) -> bool:
    """Cut ``run`` (its connection dropped, or Ctrl-C) as soon as bulk_a is being loaded
    (bulk_b comes after it); False if it ended before that moment was seen."""
    if how == "dropped":
        cut = faults.drop_connection(sandbox, "restore-stream.sh", timeout=300,
                                     when=lambda: _loading_bulk(sandbox), every=0.005,
                                     run=run, or_ended=True)
        return bool(cut)
    faults.wait_until(lambda: _loading_bulk(sandbox) or run.ended(), 300, every=0.005)
    if run.ended():
        return False
    run.signal(signal.SIGINT)
    return True


def _half_built(sandbox) -> str:
    """The databases a restore is building or left half-built (none once it is undone)."""
    return sandbox.psql("SELECT count(*) FROM pg_database WHERE datname LIKE "
                        "'aimms\\_ops\\_new\\_%'", "postgres")


#: (task, dump source, how it is cut, extra args, the host stops it at once). The rerun
#: is the same command. rebuild-volume keeps its lock on the host for up to 10 s after
#: the cut (Remote.hold), so its restore may go on that long: its rerun handles that.
RESTORES = [
    ("restore", "remote", "dropped", ["--yes", "--no-safety-backup"], True),
    ("restore", "local", "dropped", ["--yes", "--no-safety-backup"], True),
    ("restore", "remote", "ctrl-c", ["--yes", "--no-safety-backup"], True),
    ("restore", "local", "ctrl-c", ["--yes", "--no-safety-backup"], True),
    ("rebuild-volume", "remote", "dropped", ["--yes"], False),
    ("rebuild-volume", "remote", "ctrl-c", ["--yes"], False),
]


@pytest.mark.parametrize("task, source, how, extra, stops", RESTORES,
                         ids=[f"{t}-{s}-{h}" for t, s, h, _, _ in RESTORES])
def test_restore_cut_short_then_rerun_is_exact(sandbox, bulk, bulk_local, task, source, how,
                                               extra, stops):
    need(sandbox, task)
    file = bulk.name if source == "remote" else str(bulk_local)
    args = [task, f"--file={file}", *extra]
    problems = []
    for _ in range(3):
        sandbox.psql("UPDATE orders SET total = total + 1 WHERE id % 5 = 0")
        changed = sandbox.checksums()
        assert changed != bulk.want["aimms_web"]
        run = faults.start_fab(sandbox, *args)
        if _cut_while_loading(sandbox, run, how):
            break
        assert run.returncode == 0, f"fab failed before bulk_a was loaded: {run.stderr}"
        # The whole restore ran between two looks at the process table (a loaded
        # machine): nothing was cut, so this run tests nothing. Once more.
    else:
        raise AssertionError("each of 3 runs ended before bulk_a was seen being loaded")
    try:
        rc = run.wait(120)
        line = faults.error_line(run)
        if how == "ctrl-c" and not (rc == 130 and "interrupted" in line):
            problems.append(f"Ctrl-C: rc {rc}, {line}")
        if how == "dropped" and not (rc != 0 and "lost" in line):
            problems.append(f"dropped: rc {rc}, {line}")
        if "again" not in line:  # it says what to do: run it again
            problems.append(f"no advice to run it again: {line}")
        # The host stops the restore when its session ends: it does not go on unobserved
        # to bulk_b. What was on its way may still land, but no table is left half loaded.
        _wait_restore_gone(sandbox)
        counts = {t: _bulk_count(sandbox, t) for t in ("bulk_a", "bulk_b")}
        if not all(n in (None, 0, BULK_ROWS) for n in counts.values()):
            problems.append(f"a table was left half loaded: {counts}")
        # A restore is all or nothing: what it was building is gone, the live cluster is
        # as it was before it started.
        if stops and _half_built(sandbox) != "0":
            problems.append("the restore left a half-built copy after the cut")
        if stops and sandbox.checksums() != changed:
            problems.append("the cut restore changed the live aimms_web")
    finally:
        # Always rerun, so that a failure here leaves the host as the next test expects.
        run.wait(120)
        rerun = sandbox.fab(*args, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    for db, want in bulk.want.items():
        assert sandbox.checksums(db) == want, db
    assert not problems, problems


# --- tasks that change a little, dropped at several points ------------------------------


def _reset_install(sandbox) -> None:
    sandbox.ssh("crontab -r 2>/dev/null; rm -f ~/backup-postgres.sh ~/backup-postgres.sh.conf; "
                "true")


def _check_install(sandbox) -> None:
    again = sandbox.fab("install-backups")
    assert again.returncode == 0 and "nothing to change" in again.stderr, again.stderr
    crontab = sandbox.sh("crontab -l")
    assert crontab.count("# aimms-ops:backup") == 1, crontab
    from aimms_ops.host import shell

    want = hashlib.sha256(shell.script_text("backup-postgres.sh").encode()).hexdigest()
    assert sandbox.sh("sha256sum ~/backup-postgres.sh").split()[0] == want
    assert not sandbox.sh("ls -A ~ | grep '\\.tmp\\.' || true").strip()


OLD = [f"aimms_postgres_201901{d:02d}_020000.sql.gz" for d in range(10, 14)]


def _reset_prune(sandbox) -> None:
    """Four old backups that the retention removes, beside three of today that it keeps
    (min_keep): the file's own, whatever else the dir holds."""
    d = f"~/{BACKUPS}"
    today = sandbox.sh("date -u +%Y%m%d").strip()
    new = [f"aimms_postgres_{today}_00000{i}_kept.sql.gz" for i in (1, 2, 3)]
    cmds = [f"mkdir -p {d}"]
    for n in new:
        cmds.append(f"printf x | gzip > {d}/{n} && (cd {d} && sha256sum {n} > {n}.sha256)")
    for n in OLD:
        cmds.append(f"printf x | gzip > {d}/{n} && (cd {d} && sha256sum {n} > {n}.sha256) && "
                    f"touch -d '40 days ago' {d}/{n} {d}/{n}.sha256")
    sandbox.ssh(" && ".join(cmds))


def _check_prune(sandbox) -> None:
    left = sandbox.sh(f"ls -1A ~/{BACKUPS}").split()
    assert not [f for f in left if f.startswith("aimms_postgres_201901")], left
    names = {f for f in left if NAME_RE.match(f)}  # .sql.gz and .sql.zst alike
    assert not [f for f in left if f.endswith(".sha256") and f[:-7] not in names]
    assert len(names) >= 3


#: (task, args, reset the state it changes, check the state after a rerun)
CONVERGING = [
    ("install-backups", [], _reset_install, _check_install),
    ("prune", ["--yes"], _reset_prune, _check_prune),
]


@pytest.mark.parametrize("task, args, reset, check", CONVERGING,
                         ids=[row[0] for row in CONVERGING])
def test_dropped_at_any_point_a_rerun_converges(sandbox, bulk, task, args, reset, check):
    need(sandbox, task)
    reset(sandbox)
    # Timed as the runs below start (a process of its own, Python and Fabric imported
    # first), so that the fractions of it fall inside them.
    started = time.monotonic()
    first = faults.start_fab(sandbox, task, *args)
    assert first.wait(120) == 0, first.stderr
    whole = time.monotonic() - started
    check(sandbox)
    cut = 0
    for frac in (0.4, 0.7, 0.95):
        reset(sandbox)
        run = faults.start_fab(sandbox, task, *args)
        time.sleep(whole * frac)
        if faults.drop_client(sandbox, run.proc.pid):
            cut += 1
        rc = run.wait(60)
        if rc != 0:
            fab_error_line(run)  # one line, no traceback
        rerun = sandbox.fab(task, *args)
        assert rerun.returncode == 0, rerun.stderr
        check(sandbox)
    assert cut, "no run was cut: the drops all came after the task had ended"


# --- tasks that only read, or clean up after themselves --------------------------------

#: (task, args, marker of the moment to drop: a container or volume of its own exists)
SELF_CLEANING = [
    ("verify", ["--file={bulk}", "--deep"]),
]


def _docker_objects(sandbox) -> tuple[set[str], set[str]]:
    env = {"DOCKER_HOST": sandbox.docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    ps = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True, env=env,
                        check=True).stdout.split()
    vols = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True,
                          env=env, check=True).stdout.split()
    return set(ps), set(vols)


@pytest.mark.parametrize("task, args", SELF_CLEANING, ids=[r[0] for r in SELF_CLEANING])
def test_dropped_mid_way_leaves_nothing_behind(sandbox, bulk, task, args):
    need(sandbox, task)
    args = [task, *(a.replace("{bulk}", bulk.name) for a in args)]
    before = _docker_objects(sandbox)
    run = faults.start_fab(sandbox, *args)
    faults.wait_until(lambda: _docker_objects(sandbox) != before or run.proc.poll() is not None,
                      180)
    assert run.proc.poll() is None, f"{task} ended before it made anything: {run.wait()}, " \
        f"{run.stderr}"
    assert faults.drop_client(sandbox, run.proc.pid)
    assert run.wait(120) != 0
    faults.error_line(run)
    deadline = time.monotonic() + 180
    while _docker_objects(sandbox) != before:
        assert time.monotonic() < deadline, "the throwaway container or volume was left behind"
        time.sleep(1)
    rerun = sandbox.fab(*args, timeout=900)
    assert rerun.returncode == 0, rerun.stderr

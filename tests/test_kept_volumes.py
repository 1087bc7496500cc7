"""Volumes kept by earlier rebuilds: listed by `fab volumes`, removed by
`fab rebuild-volume --drop-kept=NAME` after a typed confirmation, never a live volume."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from datetime import UTC, datetime

import pytest

from aimms_ops.errors import OpsError
from aimms_ops.inventory.loader import load
from aimms_ops.monitor import volumes as vol

from .conftest import FAB, REPO, fab_error_line

LIVE = "aimms_postgres_data_prod"
KEPT = f"{LIVE}_before_rebuild_20261130_101500"
ENGINE = "\n".join([
    "api=1.41\t1.41",
    f"vol={LIVE}\tlocal\t/var/lib/docker/volumes/{LIVE}/_data\t",
    f"vol={KEPT}\tlocal\t/var/lib/docker/volumes/{KEPT}/_data\t"
    f"org.aimms-ops.kept-from={LIVE},org.aimms-ops.rebuild-run=r1",
    "vol=stray\tlocal\t/x\t",
    f"ctr=aimms-web_postgres_1\trunning\t{LIVE}\taimms-web\tpostgres",
    f"size={KEPT}\t72.75MB",
    f"kept={KEPT}\t{LIVE}\t2026-11-30T10:15:00Z",
    f"kept={LIVE}\t{LIVE}\t2026-11-30T10:15:00Z",  # a live volume with the label: never kept
])


def _found(engine: str = ENGINE) -> list[vol.VolumeReport]:
    host = load(REPO / "inventory.yml").host(None)
    return vol.report({}, vol.parse_engine(engine), host, datetime(2026, 12, 1, 10, 15, tzinfo=UTC))


def test_kept_volumes_are_reported_with_size_and_age():
    kept = vol.kept_volumes(_found())
    assert [v.name for v in kept] == [KEPT]
    k = kept[0]
    assert k.kept_from == LIVE and k.size_bytes == 72_750_000 and k.age_seconds == 86400
    assert k.as_dict()["created"] == "2026-11-30T10:15:00Z"
    live = next(v for v in _found() if v.name == LIVE)
    assert live.kept_from is None


def test_only_a_kept_unused_volume_may_be_dropped():
    host = load(REPO / "inventory.yml").host(None)
    found = _found()
    assert vol.check_droppable(KEPT, found, host).name == KEPT
    for name, why in [(LIVE, "live volume"), ("aimms_redis_data_prod", "live volume"),
                      ("stray", "not a volume kept by a rebuild"),
                      ("nosuch", "not a volume kept by a rebuild"),
                      ("a;b", "not a volume name"), ("", "not a volume name"),
                      ("-rf", "not a volume name")]:
        with pytest.raises(OpsError, match=why):
            vol.check_droppable(name, found, host)
    used = _found(ENGINE + f"\nctr=peek\texited\t{KEPT}\t\t")
    with pytest.raises(OpsError, match="used by peek"):
        vol.check_droppable(KEPT, used, host)


# --- against the sandbox -------------------------------------------------------------


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


@pytest.mark.integration
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


@pytest.mark.integration
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

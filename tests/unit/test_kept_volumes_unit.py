"""Unit: volumes kept by earlier rebuilds, as `fab volumes` reports them, and which
of them `fab rebuild-volume --drop-kept=NAME` may remove (never a live volume)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aimms_ops.core.errors import OpsError
from aimms_ops.inventory.loader import load
from aimms_ops.monitor import volumes as vol

REPO = Path(__file__).resolve().parents[2]
LIVE = "aimms_postgres_data_prod"
KEPT = f"{LIVE}_before_rebuild_20261130_101500"

def _vol(name: str, labels: str = "", mountpoint: str = "") -> dict:
    return {"name": name, "driver": "local", "labels": labels,
            "mountpoint": mountpoint or f"/var/lib/docker/volumes/{name}/_data"}


def _ctr(name: str, state: str, mounts: str, project: str = "", service: str = "") -> dict:
    return {"name": name, "state": state, "mounts": mounts, "project": project,
            "service": service}


#: The host program's volume-facts.
ENGINE = {
    "api": ["1.41", "1.41"],
    "volumes": [_vol(LIVE), _vol(KEPT, f"org.aimms-ops.kept-from={LIVE},"
                                 "org.aimms-ops.rebuild-run=r1"), _vol("stray", "", "/x")],
    "containers": [_ctr("aimms-web_postgres_1", "running", LIVE, "aimms-web", "postgres")],
    "sizes": {KEPT: "72.75MB"},
    "kept": [{"name": KEPT, "from": LIVE, "created": "2026-11-30T10:15:00Z"},
             # a live volume with the label: never kept
             {"name": LIVE, "from": LIVE, "created": "2026-11-30T10:15:00Z"}],
}


def _found(engine: dict = ENGINE) -> list[vol.VolumeReport]:
    host = load(REPO / "inventory.yml").host(None)
    return vol.report({}, vol.parse_engine(engine), host, datetime(2026, 12, 1, 10, 15, tzinfo=UTC))


def test_kept_volumes_are_reported_with_size_and_age():
    kept = vol.kept_volumes(_found())
    assert [v.name for v in kept] == [KEPT]
    k = kept[0]
    assert k.kept_from == LIVE and k.size_bytes == 72_750_000 and k.age_seconds == 86400
    assert k.size == "69.4 MiB"  # one unit format: IEC, not Docker's 72.75MB
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
    used = _found({**ENGINE, "containers": [*ENGINE["containers"],
                                            _ctr("peek", "exited", KEPT)]})
    with pytest.raises(OpsError, match="used by peek"):
        vol.check_droppable(KEPT, used, host)

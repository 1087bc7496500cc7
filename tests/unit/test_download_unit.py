"""A download's preflight (backup/download.py): it refuses before a byte moves when the
destination cannot hold what is still to come, naming both figures and the fix."""

from __future__ import annotations

import fcntl
import shutil
from datetime import UTC, datetime

import pytest

from aimms_ops.backup import download as dl
from aimms_ops.core.errors import OpsError
from aimms_ops.core.names import BackupFile

NAME = "aimms_postgres_20261207_010000.sql.gz"


class NoRemote:
    """A download that got as far as the host would fail the test."""

    name = "aidset"

    def __getattr__(self, attr: str):
        raise AssertionError(f"the download reached the host ({attr}) before its preflight")


def backup(size: int) -> BackupFile:
    return BackupFile(NAME, f"/b/{NAME}", size, "0" * 64,
                      datetime(2026, 12, 7, 1, tzinfo=UTC), "remote")


def test_a_destination_without_room_refuses_before_anything_moves(tmp_path, monkeypatch):
    (tmp_path / (NAME + ".part")).write_bytes(b"x" * 1000)
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(dl.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(free, free - 5000, 5000))
    with pytest.raises(OpsError) as err:
        dl._download(NoRemote(), backup(1000 + 6000), tmp_path, "0" * 64, None)
    assert f"not enough space in {tmp_path} for {NAME}" in err.value.message
    assert "5.9 KiB more, 4.9 KiB is free" in err.value.message
    assert "--dest" in (err.value.hint or "")
    assert (tmp_path / (NAME + ".part")).read_bytes() == b"x" * 1000  # kept for the resume


def test_room_for_the_rest_of_a_resumed_download_is_enough(tmp_path, monkeypatch):
    """What the .part already holds is not counted twice."""
    (tmp_path / (NAME + ".part")).write_bytes(b"x" * 1000)
    monkeypatch.setattr(dl.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 6000, 6000))
    with pytest.raises(AssertionError, match="reached the host"):
        dl._download(NoRemote(), backup(1000 + 6000), tmp_path, "0" * 64, None)



def test_a_part_another_download_writes_into_is_left_to_it(tmp_path, monkeypatch):
    """Two downloads never write into one .part (one the ssh of a task killed outright,
    where it does not die with it): the second one says so, and changes nothing."""
    part = tmp_path / (NAME + ".part")
    part.write_bytes(b"x" * 1000)
    with part.open("ab") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        with pytest.raises(OpsError) as err:
            dl._download(NoRemote(), backup(7000), tmp_path, "0" * 64, None)
    assert err.value.message == f"another download is writing {part}"
    assert "resumes" in (err.value.hint or "")
    assert part.read_bytes() == b"x" * 1000

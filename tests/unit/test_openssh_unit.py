"""The bytes of a download through OpenSSH's client (host/openssh.py): started as the task
reached the host, strict about host keys, falling back to paramiko only when ssh could
not connect at all, and a stream cut after bytes came is a cut (the download resumes)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aimms_ops.host import openssh
from aimms_ops.host.ssh import SshTarget

TARGET = SshTarget("aidset", "127.0.0.1", 2222, "ec2-user", config_file="/etc/aimms/ssh_config")

FAKE_SSH = """#!/bin/sh
# A fake ssh: its behaviour from $FAKE_SSH_MODE; the last argument is the command.
for last; do :; done
case "$FAKE_SSH_MODE" in
  ok) cat "$FAKE_SSH_FILE"; exit 0 ;;
  refused) echo "Host key verification failed." >&2; exit 255 ;;
  cut) printf '%s' "$FAKE_SSH_DATA"
       echo "Connection to 127.0.0.1 closed by remote host." >&2; exit 255 ;;
  remote) echo "tail: cannot open '/b/x' for reading: No such file" >&2; exit 1 ;;
  slow) while :; do printf x; sleep 0.05; done ;;
esac
"""


class Sink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buf.write(data)


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv(openssh.TRANSPORT_ENV, raising=False)
    return monkeypatch


def test_ssh_is_started_as_the_task_reached_the_host_and_never_asks():
    argv = openssh.argv(TARGET, "tail -c +1 -- /b/x")
    assert argv[:3] == ["ssh", "-F", "/etc/aimms/ssh_config"]
    opts = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
    assert opts["StrictHostKeyChecking"] == "yes" and opts["BatchMode"] == "yes"
    assert argv[-3:] == ["--", "aidset", "tail -c +1 -- /b/x"]


def test_the_bytes_come_whole_with_their_progress(fake_ssh, tmp_path):
    data = os.urandom(3_000_000)
    (tmp_path / "data").write_bytes(data)
    fake_ssh.setenv("FAKE_SSH_MODE", "ok")
    fake_ssh.setenv("FAKE_SSH_FILE", str(tmp_path / "data"))
    sink, seen = Sink(), []
    assert openssh.stream(TARGET, "cat", sink, progress=seen.append) == (0, "")
    assert sink.buf.getvalue() == data and sum(seen) == len(data)


def test_ssh_that_cannot_connect_writes_nothing_and_says_fall_back(fake_ssh):
    fake_ssh.setenv("FAKE_SSH_MODE", "refused")
    sink = Sink()
    assert openssh.stream(TARGET, "cat", sink) is None
    assert sink.buf.getvalue() == b""


def test_a_stream_cut_after_bytes_came_is_a_cut_not_a_fallback(fake_ssh):
    fake_ssh.setenv("FAKE_SSH_MODE", "cut")
    fake_ssh.setenv("FAKE_SSH_DATA", "abc")
    with pytest.raises(openssh.Cut) as cut:
        openssh.stream(TARGET, "cat", Sink())
    assert cut.value.received == 3 and "closed by remote host" in str(cut.value)


def test_the_remote_commands_failure_is_its_own(fake_ssh):
    fake_ssh.setenv("FAKE_SSH_MODE", "remote")
    rc, err = openssh.stream(TARGET, "tail -c +1 -- /b/x", Sink())
    assert rc == 1 and "cannot open" in err


def test_ssh_only_when_asked(fake_ssh):
    """Not the default while it is slower than paramiko here (see TRANSPORT_ENV)."""
    assert not openssh.available()
    fake_ssh.setenv(openssh.TRANSPORT_ENV, "openssh")
    assert openssh.available()
    fake_ssh.setenv("PATH", "/nonexistent")
    assert not openssh.available()


class FileSink:
    """A .part file open for appending, as a download's (streams.FileSink)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.read_back = bytearray()

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def file(self) -> tuple[str, int]:
        return str(self.path), self.fd

    def appended(self, data: bytes) -> None:
        self.read_back += data


def test_ssh_appends_to_the_file_and_every_byte_is_read_back_in_order(fake_ssh, tmp_path):
    """What was there stays (a resumed download); what ssh appends is handed on once,
    in order, with its progress: the hash of a download sees exactly the file."""
    data = os.urandom(5 * openssh.READ + 12345)
    (tmp_path / "data").write_bytes(data)
    fake_ssh.setenv("FAKE_SSH_MODE", "ok")
    fake_ssh.setenv("FAKE_SSH_FILE", str(tmp_path / "data"))
    (tmp_path / "x.part").write_bytes(b"resumed")
    sink, seen = FileSink(tmp_path / "x.part"), []
    assert openssh.to_file(TARGET, "cat", sink, progress=seen.append) == (0, "")
    assert (tmp_path / "x.part").read_bytes() == b"resumed" + data
    assert bytes(sink.read_back) == data and sum(seen) == len(data)


def test_ssh_that_cannot_connect_leaves_the_file_as_it_was(fake_ssh, tmp_path):
    fake_ssh.setenv("FAKE_SSH_MODE", "refused")
    (tmp_path / "x.part").write_bytes(b"resumed")
    sink = FileSink(tmp_path / "x.part")
    assert openssh.to_file(TARGET, "cat", sink) is None
    assert (tmp_path / "x.part").read_bytes() == b"resumed" and not sink.read_back


def test_a_file_stream_cut_after_bytes_came_keeps_them_for_the_resume(fake_ssh, tmp_path):
    fake_ssh.setenv("FAKE_SSH_MODE", "cut")
    fake_ssh.setenv("FAKE_SSH_DATA", "abc")
    sink = FileSink(tmp_path / "x.part")
    with pytest.raises(openssh.Cut) as cut:
        openssh.to_file(TARGET, "cat", sink)
    assert cut.value.received == 3 and "closed by remote host" in str(cut.value)
    assert (tmp_path / "x.part").read_bytes() == b"abc" == bytes(sink.read_back)


def test_a_full_disk_is_said_to_be_one_not_a_lost_connection(fake_ssh, tmp_path, monkeypatch):
    """ssh exits 255 without a word when it cannot write its stdout."""
    fake_ssh.setenv("FAKE_SSH_MODE", "cut")
    fake_ssh.setenv("FAKE_SSH_DATA", "abc")
    monkeypatch.setattr(openssh, "_full", lambda fd: True)
    with pytest.raises(OSError) as err:
        openssh.to_file(TARGET, "cat", FileSink(tmp_path / "x.part"))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "x.part")


def test_the_remote_commands_failure_into_a_file_is_its_own(fake_ssh, tmp_path):
    fake_ssh.setenv("FAKE_SSH_MODE", "remote")
    rc, err = openssh.to_file(TARGET, "tail -c +1 -- /b/x", FileSink(tmp_path / "x.part"))
    assert rc == 1 and "cannot open" in err


_RUN_TO_FILE = """import sys
from pathlib import Path
from aimms_ops.host import openssh
from aimms_ops.host.ssh import SshTarget
from tests.unit.test_openssh_unit import FileSink
openssh.to_file(SshTarget("aidset", "127.0.0.1"), "cat", FileSink(Path(sys.argv[1])))
"""


@pytest.mark.skipif(not shutil.which("setpriv"), reason="ssh dies with fab where setpriv is")
def test_ssh_dies_with_a_task_killed_outright(fake_ssh, tmp_path):
    """SIGKILL leaves fab no moment to stop ssh: it must not go on writing into the .part
    that the same download, run again, resumes."""
    fake_ssh.setenv("FAKE_SSH_MODE", "slow")
    part = tmp_path / "x.part"
    task = subprocess.Popen([sys.executable, "-c", _RUN_TO_FILE, str(part)],
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 2):
        assert time.monotonic() < deadline and task.poll() is None, "ssh never wrote"
        time.sleep(0.05)
    task.kill()
    task.wait()
    try:
        time.sleep(0.3)
        size = part.stat().st_size
        time.sleep(0.5)
        assert part.stat().st_size == size, "ssh went on writing after the task was killed"
    finally:  # what a failure would leave running
        subprocess.run(["pkill", "-f", str(tmp_path / "bin" / "ssh")], check=False)

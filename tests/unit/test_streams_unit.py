"""Streaming internals that the benchmarks tuned: no host needed."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import zlib

import paramiko
import pytest

from aimms_ops.host import remote, ssh, streams
from aimms_ops.restore import source as dumpsource


def _inflate_all(data: bytes, step: int) -> tuple[bytes, dumpsource._Inflater, int]:
    inflater = dumpsource._Inflater()
    pieces = [p for i in range(0, len(data), step) for p in inflater.feed(data[i:i + step])]
    return b"".join(pieces), inflater, max((len(p) for p in pieces), default=0)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_inflater_reads_multi_member_streams(step):
    data = gzip.compress(b"first member\n") + gzip.compress(b"second member\n" * 1000)
    out, inflater, _ = _inflate_all(data, step)
    assert out == b"first member\n" + b"second member\n" * 1000
    assert inflater.eof


def test_inflater_pieces_stay_small_however_well_the_dump_compresses():
    plain = b"\0" * (64 * 1024 * 1024)  # compresses about 1000:1
    out, _, biggest = _inflate_all(gzip.compress(plain, 1), 1 << 20)
    assert out == plain
    assert biggest <= dumpsource.INFLATE_PIECE


def test_inflater_sees_a_truncated_stream():
    data = gzip.compress(os.urandom(10000))
    _, inflater, _ = _inflate_all(data[:-4], 1024)
    assert not inflater.eof
    with pytest.raises(dumpsource.INFLATE_ERRORS):
        _inflate_all(data[:20] + b"\xff" * 50 + data[70:], 1024)


def test_the_check_decompresses_with_isal_and_falls_back_to_zlib(monkeypatch):
    import builtins

    assert dumpsource.INFLATE.__name__ == "isal.isal_zlib"  # a dependency of the package
    real_import = builtins.__import__

    def no_isal(name, *args, **kwargs):
        if name.startswith("isal"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_isal)
    module, errors = dumpsource._inflate_module()
    assert module is zlib and errors == (zlib.error,)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "fine"])
def test_inspect_local_hashes_the_whole_file_whatever_the_stream(tmp_path, damage):
    body = ("-- PostgreSQL database cluster dump\n" + "SELECT 1;\n" * 200_000
            + "-- PostgreSQL database cluster dump complete\n").encode()
    data = gzip.compress(body)
    if damage == "truncated":
        data = data[:-100]
    elif damage == "corrupt":
        data = data[:200] + b"\xff" * 64 + data[264:]
    f = tmp_path / "a.sql.gz"
    f.write_bytes(data)
    seen: list[int] = []
    info = dumpsource.inspect_local(f, progress=seen.append)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == sum(seen) == len(data)
    assert info.ok == (damage == "fine"), info.problems
    if damage != "fine":
        assert "gzip stream is damaged or truncated" in info.problems[0]


def test_inspect_local_finds_databases_across_chunk_boundaries(tmp_path):
    body = "\n".join(["-- PostgreSQL database cluster dump", ""]
                     + [f'-- Database "db{i}" dump\nSELECT \'' + "x" * 300_000 + "';"
                        for i in range(12)]
                     + ["-- PostgreSQL database cluster dump complete", ""])
    f = tmp_path / "a.sql.gz"
    f.write_bytes(gzip.compress(body.encode()))
    info = dumpsource.inspect_local(f)
    assert info.ok, info.problems
    assert info.databases == tuple(f"db{i}" for i in range(12))
    assert info.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


class _Failing(io.RawIOBase):
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, b) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError(28, "No space left on device")
        self.left -= 1
        return len(b)


def test_writer_keeps_order_and_raises_the_disk_error_in_the_receiver():
    sink = io.BytesIO()
    w = streams.Writer(sink)
    w.start()
    for i in range(100):
        w.put(bytes([i]) * 10)
    w.finish()
    assert sink.getvalue() == b"".join(bytes([i]) * 10 for i in range(100))

    w = streams.Writer(_Failing(after=3))
    w.start()
    with pytest.raises(OSError, match="No space left"):
        for _ in range(1000):
            w.put(b"x")
        w.finish()


def test_transport_prefers_gcm_refuses_3des_and_rekeys_like_openssh():
    a, b = socket.socketpair()
    try:
        t = ssh._transport_factory(a)
        ciphers = t.get_security_options().ciphers
        assert ciphers[0] == "aes128-gcm@openssh.com"
        assert "3des-cbc" not in ciphers
        assert t.packetizer.REKEY_BYTES == 2**36
        assert paramiko.Packetizer.REKEY_BYTES == 2**29  # the class is left alone
        assert remote.RECV_CHUNK == ssh.WINDOW_SIZE
    finally:
        a.close()
        b.close()


def test_bulk_pipe_passes_a_trickle_on_and_every_byte_in_order():
    import threading

    pipe = streams.BulkPipe()
    pipe.feed(b"ready\n")  # far below BULK: still handed over (after TRICKLE at most)
    assert pipe.read(1 << 20) == b"ready\n"
    got: list[bytes] = []

    def read_all() -> None:
        while data := pipe.read(8 << 20):
            got.append(data)

    reader = threading.Thread(target=read_all)
    reader.start()
    pieces = [bytes([i % 251]) * 32768 for i in range(3 * streams.BulkPipe.BULK // 32768)]
    for piece in pieces:
        pipe.feed(piece)
    pipe.feed(b"tail")
    pipe.close()
    reader.join(10)
    assert not reader.is_alive()
    assert b"".join(got) == b"".join(pieces) + b"tail"


def test_disk_file_hands_steps_to_the_disk_and_keeps_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(streams, "WRITEBACK_STEP", 64 * 1024)
    target = tmp_path / "f.part"
    target.write_bytes(b"resumed from here:")
    data = os.urandom(1_000_003)
    with target.open("ab") as fh:
        disk = streams.DiskFile(fh)
        for i in range(0, len(data), 40_000):
            disk.write(data[i:i + 40_000])
        if streams._sync_file_range() is not None:
            assert disk.dropped > len(b"resumed from here:")  # written back as it went
    assert target.read_bytes() == b"resumed from here:" + data


def test_background_calls_give_their_result_or_error_and_bounded_ones_never_wait_long():
    import threading

    import pytest

    from aimms_ops.host.remote import bounded, in_background

    assert in_background(lambda: 42).result() == 42

    def fails() -> None:
        raise ValueError("no answer")

    with pytest.raises(ValueError, match="no answer"):
        in_background(fails).result()
    assert bounded(fails, 5) is True  # ended; its error is dropped
    release = threading.Event()
    try:
        assert bounded(release.wait, 0.05) is False  # still running: not waited for
    finally:
        release.set()


class _Transport:
    """What send_eof uses of paramiko's Transport."""

    def __init__(self) -> None:
        import threading

        self.clear_to_send = threading.Event()
        self.clear_to_send.set()
        self.clear_to_send_lock = threading.Lock()
        self.clear_to_send_timeout = 1.0
        self.sent: list[bytes] = []

    def is_active(self) -> bool:
        return True

    def _send_message(self, m) -> None:
        self.sent.append(bytes(m.asbytes()))


def _channel(transport) -> paramiko.Channel:
    ch = paramiko.Channel(7)
    ch.remote_chanid = 9
    ch.transport = transport
    ch.active = True
    return ch


def test_the_eof_goes_out_once_on_an_open_channel():
    t = _Transport()
    ch = _channel(t)
    streams.send_eof(ch)
    streams.send_eof(ch)
    assert len(t.sent) == 1 and t.sent[0][0] == paramiko.common.MSG_CHANNEL_EOF
    assert ch.eof_sent


def test_no_eof_after_the_channel_closed_before_or_while_it_was_sent():
    t = _Transport()
    ch = _channel(t)
    ch.closed = True
    streams.send_eof(ch)
    assert t.sent == []

    # Closed between the EOF's making and its sending (the race of paramiko #1115): the
    # CLOSE may be on the wire already, so the EOF must not follow it.
    t = _Transport()
    ch = _channel(t)
    real_wait = t.clear_to_send.wait

    def close_then_wait(timeout: float) -> bool:
        ch.closed = True
        return real_wait(timeout)

    t.clear_to_send.wait = close_then_wait  # type: ignore[method-assign]
    streams.send_eof(ch)
    assert t.sent == []

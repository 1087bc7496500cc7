"""compression: zstd without a host: the name pattern, the settings, lib.sh's file
functions, the local check of a .sql.zst and how doctor and status report zstd."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from aimms_ops.backup import install, settings
from aimms_ops.core import names, retention
from aimms_ops.core import settings as core_settings
from aimms_ops.core.checks import State
from aimms_ops.host.events import facts
from aimms_ops.monitor import runlog, verify
from aimms_ops.monitor.doctor import compressor_check
from aimms_ops.restore import source as dumpsource

from .test_backups_unit import _host

STAMP = "aimms_postgres_20260101_020000"
BODY = ("-- PostgreSQL database cluster dump\n" + "SELECT 1;\n" * 200_000
        + "\\connect postgres\n-- PostgreSQL database cluster dump complete\n").encode()


def _zstd(data: bytes, *args: str) -> bytes:
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed here")
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, capture_output=True,
                          check=True).stdout


def test_both_endings_are_backup_names_and_nothing_else_is():
    for ok in (f"{STAMP}.sql.gz", f"{STAMP}.sql.zst", f"{STAMP}_pre-restore.sql.zst"):
        assert retention.NAME_RE.fullmatch(ok), ok
    for bad in (f"{STAMP}.sql.zstd", f"{STAMP}.sql.xz", f"{STAMP}.zst", f"{STAMP}.sql",
                f"{STAMP}.sql.zst.sha256", f"{STAMP}.sql.gz.zst"):
        assert not retention.NAME_RE.fullmatch(bad), bad
    assert names.BackupFile(f"{STAMP}_pre-rebuild.sql.zst", "/x", 1, None,
                            names.created_from_name(f"{STAMP}.sql.zst"), "remote").safety


def test_the_format_follows_the_ending():
    assert [names.dump_format(n) for n in ("a.sql.gz", "a.sql.zst", "a.sql", "a.gz")] == [
        "gz", "zst", "plain", "gz"]
    assert names.stream_check("zst") == "zstd stream"
    assert names.stream_check("gz") == names.stream_check("plain") == "gzip stream"
    assert names.COMPRESSIONS == ("gzip", "zstd") and names.DEFAULT_COMPRESSION == "gzip"


def test_compression_reaches_the_installed_conf_and_fab_backup_alike():
    for compression in names.COMPRESSIONS:
        host = _host(compression=compression)
        assert f"COMPRESSION={compression}\n" in install.conf_text(host, {})
        args = settings.script_args(host)
        assert args[args.index("--compression") + 1] == compression
    assert any(s.flag == "--compression" for s in core_settings.SETTINGS)
    assert settings.script_settings(_host())["COMPRESSION"] == "gzip"


def test_both_formats_are_listed_and_lib_names_their_endings(tmp_path, capsys):
    for n in (f"{STAMP}.sql.gz", "aimms_postgres_20260102_020000.sql.zst",
              f"{STAMP}.sql.gz.sha256", "aimms_postgres_20260102_020000.sql.zst.pin",
              "other.sql.zst", ".aimms_postgres_20260103_020000.sql.zst.tmp"):
        (tmp_path / n).write_text("x")
    (tmp_path / "aimms_postgres_20260104_020000.sql.zst").mkdir()
    from aimms_ops.agent.main import main as agent

    assert agent(["list-backups", str(tmp_path)]) == 0
    found = facts(capsys.readouterr().out, "list-backups", "here")
    got = sorted(b["name"] for b in found["backups"])
    assert got == [f"{STAMP}.sql.gz", "aimms_postgres_20260102_020000.sql.zst"]
    assert dict(retention.EXTENSIONS) == {"gzip": ".sql.gz", "zstd": ".sql.zst"}
    assert retention.is_safety(f"{STAMP}_pre-restore.sql.zst")
    assert not retention.is_safety(f"{STAMP}_pre-restorex.sql.zst")


def test_each_format_is_decompressed_by_its_own_tool(tmp_path, capsys, monkeypatch):
    from aimms_ops.agent import dumping, hostfacts, hosttools

    zst, _ = hosttools.decompressor(f"{STAMP}.sql.zst")
    gz, _ = hosttools.decompressor(f"{STAMP}.sql.gz")
    if shutil.which("zstd"):
        assert zst == ["zstd", "-q", "-dc"]
    assert gz is not None and gz[0] in ("igzip", "pigz", "gzip")
    # Without zstd on the host: named, and the facts doctor reads say the same.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gzip", "find", "cat"):
        real = shutil.which(tool)
        assert real is not None
        (bin_dir / tool).symlink_to(real)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert hosttools.decompressor(f"{STAMP}.sql.zst") == (None, "zstd")
    assert dumping.pick("zstd", 1, 3) is None
    report = hostfacts.Report("status-facts")
    hostfacts.compressor_facts(report)
    assert report.facts["compressor.have"] == "gzip"


@pytest.mark.parametrize("damage", ["fine", "two frames", "truncated", "corrupt", "junk after"])
def test_a_local_zst_is_checked_whole_before_anything_is_touched(tmp_path, damage):
    data = _zstd(BODY, "-3")
    if damage == "two frames":  # zstd -dc reads concatenated frames as one stream
        half = len(BODY) // 2
        data = _zstd(BODY[:half]) + _zstd(BODY[half:])
    elif damage == "truncated":
        data = data[:-20]
    elif damage == "corrupt":
        data = data[:100] + bytes(b ^ 0xFF for b in data[100:164]) + data[164:]
    elif damage == "junk after":
        data += b"not zstd"
    f = tmp_path / f"{STAMP}.sql.zst"
    f.write_bytes(data)
    seen: list[int] = []
    info = dumpsource.inspect_local(f, progress=seen.append)
    assert info.format == "zst"
    assert info.sha256 == hashlib.sha256(data).hexdigest() and sum(seen) == len(data)
    assert info.ok == (damage in ("fine", "two frames")), info.problems
    checks = {c.name: c for c in verify.checks_of(info)}
    assert "zstd stream" in checks and "gzip stream" not in checks
    if info.ok:
        assert checks["zstd stream"].state is State.OK
        assert checks["completion marker"].state is State.OK
    else:
        assert "zstd stream is damaged or truncated" in info.problems[0]
        assert checks["zstd stream"].state is State.CRITICAL


def test_zstd_pieces_stay_small_however_well_the_dump_compresses():
    data = _zstd(b"\0" * (64 * 1024 * 1024), "-19")
    inflater = dumpsource._ZstdInflater()
    biggest = total = 0
    for i in range(0, len(data), dumpsource.READ_CHUNK):
        for piece in inflater.feed(data[i:i + dumpsource.READ_CHUNK]):
            biggest = max(biggest, len(piece))
            total += len(piece)
    assert inflater.eof and total == 64 * 1024 * 1024
    assert biggest <= dumpsource.INFLATE_PIECE


def test_a_plain_file_named_zst_that_is_not_zstd_is_refused(tmp_path):
    f = tmp_path / f"{STAMP}.sql.zst"
    f.write_bytes(BODY[:1000])
    info = dumpsource.inspect_local(f)
    assert not info.ok and "zstd stream is damaged" in info.problems[0]


def test_doctor_and_status_say_when_a_zstd_host_has_no_zstd():
    facts = {"compressor.name": "igzip", "compressor.check": "igzip",
             "compressor.have": "igzip pigz gzip"}
    missing = compressor_check(facts, "zstd")
    assert missing is not None and missing.state is State.CRITICAL
    assert "zstd is not installed" in missing.detail
    assert "install zstd" in missing.fix and "compression: gzip" in missing.fix
    there = compressor_check({**facts, "compressor.have": "igzip pigz gzip zstd"}, "zstd")
    assert there is not None and there.state is State.OK and "zstd" in there.detail
    # gzip hosts are judged as before, zstd present or not
    gz = compressor_check({**facts, "compressor.have": "igzip pigz gzip zstd"})
    assert gz is not None and gz.state is State.OK and gz.detail.startswith("igzip -1")
    from aimms_ops.monitor.status import fix_for_failure

    fix = fix_for_failure("compression is zstd but zstd is not installed on the host")
    assert "install zstd" in fix


def test_the_log_names_a_failed_zst_backup_or_verify():
    line = ("2026-01-01T02:00:00Z verify[42] RESULT failed: zstd stream: the file does not "
            f"decompress to its end ({STAMP}.sql.zst)")
    run = runlog.parse_results(line)[0]
    assert run.name == f"{STAMP}.sql.zst" and run.reason.startswith("zstd stream:")


def test_retention_on_the_host_sees_both_formats_as_one_set(tmp_path):
    now = 1_800_000_000
    for i, ext in enumerate([".sql.gz", ".sql.zst", ".sql.gz", ".sql.zst"]):
        p = tmp_path / f"aimms_postgres_2027010{i + 1}_020000{ext}"
        p.write_bytes(b"x")
        os.utime(p, (now - (4 - i) * 86400, now - (4 - i) * 86400))
    (tmp_path / "aimms_postgres_20270109_020000.sql.xz").write_bytes(b"x")
    found = retention.scan(str(tmp_path))
    assert len(found) == 4
    decided = retention.decide(found, retention.Policy(min_keep=2), now)
    assert [d.name for d in decided if d.keep] == ["aimms_postgres_20270104_020000.sql.zst",
                                                    "aimms_postgres_20270103_020000.sql.gz"]


def test_help_texts_name_both_endings():
    assert ".sql.gz, .sql.zst or .sql" in names.DUMP_FILE_HINT
    assert ".sql.zst" in names.NAME_HINT

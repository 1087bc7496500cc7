"""The host's compressor choice (the host program's) and how doctor reports it, without a
host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aimms_ops.agent import dumping, hostfacts
from aimms_ops.core.checks import State
from aimms_ops.monitor.doctor import compressor_check


def _pick(tmp_path: Path, tools: list[str], level: int = 1, want: str = "auto") -> str:
    """The backup's choice (``zip=``) and the facts doctor reads, with only ``tools`` on
    PATH."""
    bin_dir = tmp_path / ("bin-" + "-".join(tools) + f"-{level}-{want}")
    bin_dir.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed here")
        (bin_dir / tool).symlink_to(real)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(bin_dir))
        comp = dumping.pick("gzip", level, 3, want)
        report = hostfacts.Report("status-facts")
        hostfacts.compressor_facts(report)
    facts = "".join(f"{k}={v}\n" for k, v in report.facts.items())
    return f"zip={' '.join(comp.argv) if comp else 'none'}\n{facts}"


@pytest.mark.parametrize("tools, zip_line, check", [
    (["igzip", "pigz", "gzip"], "zip=igzip -c -1", "igzip"),
    (["pigz", "gzip"], "zip=pigz -c -1", "pigz"),
    (["gzip"], "zip=gzip -c -1", "gzip"),
    ([], "zip=none", ""),
])
def test_the_fastest_present_tool_is_chosen(tmp_path, tools, zip_line, check):
    out = _pick(tmp_path, tools)
    assert zip_line in out.splitlines()
    assert f"compressor.check={check}" in out.splitlines()
    assert f"compressor.have={' '.join(tools)}" in out.splitlines()


def test_igzip_levels_stop_at_3(tmp_path):
    assert "zip=igzip -c -3" in _pick(tmp_path, ["igzip", "gzip"], level=9)
    assert "zip=igzip -c -2" in _pick(tmp_path, ["igzip", "gzip"], level=2)


def test_a_named_tool_is_used_or_refused(tmp_path):
    assert "zip=gzip -c -6" in _pick(tmp_path, ["igzip", "pigz", "gzip"], 6, "gzip")
    assert "zip=none" in _pick(tmp_path, ["gzip"], 1, "pigz")


def test_doctor_names_the_compressor_and_how_to_get_a_faster_one():
    best = compressor_check({"compressor.name": "igzip", "compressor.check": "igzip",
                             "compressor.have": "igzip pigz gzip"})
    assert best is not None and best.state is State.OK and not best.fix
    assert "igzip -1 (ISA-L)" in best.detail
    slow = compressor_check({"compressor.name": "gzip", "compressor.check": "gzip",
                             "compressor.have": "gzip"})
    assert slow is not None and slow.state is State.OK
    assert "apt-get install isal" in slow.fix and "dnf install isa-l" in slow.fix
    none = compressor_check({"compressor.name": "", "compressor.have": ""})
    assert none is not None and none.state is State.CRITICAL
    assert compressor_check({}) is None

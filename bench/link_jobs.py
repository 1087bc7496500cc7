"""The download over a link like a laptop's to a cloud region: the sandbox's sshd reached
through bench/link.py (a delay of BENCH_LINK_RTT_MS round trip, 80 by default, at
BENCH_LINK_MBIT, 400 by default), the tool beside ``scp`` and beside ``ssh cat``, each
through the same link in the same run. The link's ssh_config is the sandbox's with the
proxy's port and ``HostKeyAlias`` (the key stays the sandbox host's), so that ssh, scp
and the tool resolve and check the host the same way."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import link

RTT_MS = float(os.environ.get("BENCH_LINK_RTT_MS") or link.RTT_MS)
MBIT = float(os.environ.get("BENCH_LINK_MBIT") or link.MBIT)
_LINK = f"{RTT_MS:g} ms round trip, {MBIT:g} Mbit/s"

#: Added to bench/run.py's TABLE: (title, ours, anchor, target of anchor/ours throughput).
TITLES = {
    "download-link": (f"download, verified, over a link of {_LINK} (bench/link.py)",
                      "`fab download --file=NAME`", "`scp aidset:F .`", 1.5),
    "download-link-cat": ("download, verified, over the same link", "`fab download "
                          "--file=NAME`", "`ssh aidset 'cat F' > F`", None),
}

_proc: subprocess.Popen[str] | None = None


def _start(bed: Any) -> tuple[Path, Path]:
    """The link (started once), and its ssh_config and inventory."""
    global _proc
    cfg, inv = bed.work / "link_ssh_config", bed.work / "inventory-link.yml"
    if _proc is not None and _proc.poll() is None:
        return cfg, inv
    text = bed.sb.ssh_config.read_text()
    m = re.search(r"(?m)^\s*Port\s+(\d+)", text)
    if not m:
        raise SystemExit("bench: the sandbox's ssh_config names no Port")
    _proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("link.py")), "--to",
         f"127.0.0.1:{m.group(1)}", "--rtt-ms", str(RTT_MS), "--rate-mbit", str(MBIT)],
        stdout=subprocess.PIPE, text=True)
    assert _proc.stdout is not None
    first = _proc.stdout.readline().split()
    if first[:1] != ["listening"]:
        raise SystemExit(f"bench: the link did not start: {first}")
    port = first[1]
    alias = f"[127.0.0.1]:{m.group(1)}"
    cfg.write_text(re.sub(r"(?m)^(\s*)Port\s+\d+$",
                          rf"\g<1>Port {port}\n\g<1>HostKeyAlias {alias}", text))
    inv.write_text(bed.sb.inventory.read_text().replace(str(bed.sb.ssh_config), str(cfg)))
    return cfg, inv


def stop() -> None:
    global _proc
    if _proc is not None:
        _proc.terminate()
        _proc.wait(10)
        _proc = None


def download_pair(bed: Any, by_hand: str, name: str) -> tuple[Any, Any]:
    cfg, inv = _start(bed)
    env = {**bed.t.env, "AIMMS_OPS_INVENTORY": str(inv)}
    dest = bed.work / "link-download"
    copy = bed.work / "link-copy.bin"
    remote = f"{bed.backup_dir}/{name}"

    def ours() -> Any:
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        bed.settle()
        return bed.fab_run("download", f"--file={name}", f"--dest={dest}", env=env)

    def anchor() -> Any:
        copy.unlink(missing_ok=True)
        bed.settle()
        if by_hand == "scp":
            run = bed.t.run(["scp", "-q", "-F", str(cfg), f"aidset:{remote}", str(copy)])[0]
        else:
            run = bed.t.run(shlex.join(["ssh", "-F", str(cfg), "-o", "BatchMode=yes",
                                        "aidset", f"cat {shlex.quote(remote)}"])
                            + f" > {shlex.quote(str(copy))}")[0]
        copy.unlink(missing_ok=True)
        return run
    return ours, anchor

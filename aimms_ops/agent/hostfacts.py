"""What the host program's read-only commands share: their report (one ``facts`` event,
``aimms_ops.core.events``, read on the operator's side by ``aimms_ops.host.events``), the
facts of a file, the crontab, the compressors and the commands of the host's tools."""

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from aimms_ops.core import events

Text = Union[str, bytes]


def text(value: Text) -> str:
    """``value`` as text; bytes that are not UTF-8 kept (surrogate escapes: the event
    carries them, and the reader gets the bytes back)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class Report:
    """The facts of one command, sent as one ``facts`` event when it ends (:meth:`send`)."""

    def __init__(self, of: str) -> None:
        self.of = of
        self.facts: Dict[str, Any] = {}

    def put(self, key: str, value: Any = "") -> None:
        """Fact ``key``: text (bytes decoded as :func:`text` does), a list or an object."""
        self.facts[key] = text(value) if isinstance(value, (str, bytes)) else value

    def send(self) -> int:
        """Print the event (the command's last line); the command's exit status, 0."""
        sys.stdout.write(events.facts_line(self.of, self.facts) + "\n")
        sys.stdout.flush()
        return 0


def run(argv: List[str], *, merged: bool = False, cwd: Optional[str] = None) -> Tuple[int, bytes]:
    """``argv``'s status and stdout (with its stderr when ``merged``, else stderr dropped);
    127 and the error when it cannot be started."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merged else subprocess.DEVNULL,
                              cwd=cwd)
    except OSError as e:
        return 127, str(e).encode()
    return proc.returncode, proc.stdout


def last_line(data: bytes) -> bytes:
    """The last line of ``data`` (as ``tail -n 1`` of a command substitution)."""
    return data.rstrip(b"\n").rsplit(b"\n", 1)[-1]


def login() -> str:
    """The login user's name (``id -un``)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def mode_of(path: str) -> str:
    """The permission bits as ``stat -c %a`` prints them."""
    return "%o" % (os.stat(path).st_mode & 0o7777)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_facts(out: Report, key: str, path: str) -> None:
    """KEY.sha256 and KEY.mode of an installed file (the sha256 empty, and no mode, when
    it is absent)."""
    if os.path.isfile(path):
        try:
            out.put(key + ".sha256", sha256_file(path))
            out.put(key + ".mode", mode_of(path))
            return
        except OSError:
            pass
    out.put(key + ".sha256")


def readable_file(path: str) -> Optional[bytes]:
    """The contents of ``path``, or None when it is not a readable file."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def crontab_facts(out: Report) -> None:
    if shutil.which("crontab"):
        out.put("crontab.available", "1")
        out.put("crontab", run(["crontab", "-l"])[1])
    else:
        out.put("crontab.available", "0")


def compressor_facts(out: Report) -> None:
    """The gzip compressor a backup run here would use (with this PATH: the settings file
    gives cron the same one), its decompressor, and which compressors are installed (zstd
    too, for a host whose compression is zstd)."""
    have = [t for t in ("igzip", "pigz", "gzip", "zstd") if shutil.which(t)]
    gz = [t for t in have if t != "zstd"]
    out.put("compressor.name", gz[0] if gz else "")
    out.put("compressor.check", gz[0] if gz else "")
    out.put("compressor.have", " ".join(have))


def env_facts(out: Report) -> None:
    out.put("env.PATH", os.environ.get("PATH", ""))
    out.put("env.DOCKER_HOST", os.environ.get("DOCKER_HOST", ""))


def inspect(out: Report, cid: str, fields: Sequence[Tuple[str, str]]) -> None:
    """Facts of ``docker inspect`` of ``cid``: each KEY the field at its dotted PATH
    (``State.Status``), as text (the name without its slash); none when it fails."""
    rc, data = run(["docker", "inspect", "--type", "container", cid])
    try:
        found = json.loads(text(data))[0] if rc == 0 else None
    except (ValueError, IndexError, KeyError):
        found = None
    if not isinstance(found, dict):
        return
    for key, path in fields:
        value: Any = found
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        shown = str(value) if not isinstance(value, bool) else ("true" if value else "false")
        out.put(key, shown[1:] if path == "Name" and shown.startswith("/") else shown)

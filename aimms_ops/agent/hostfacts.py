"""What the host program's read-only commands share: ``key=value`` lines on stdout, the
facts of a file, the crontab, the compressors and the commands of the host's tools.

Values are printed as the operator side parses them (``aimms_ops.host.compose.
parse_facts``): one line each, a multi-line value base64-encoded."""

import base64
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from typing import List, Optional, Tuple, Union

Text = Union[str, bytes]


def emit(key: str, value: Text = "") -> None:
    """Print ``KEY=VALUE`` (bytes as they are, text as UTF-8 whatever it holds)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(key.encode() + b"=" + raw + b"\n")


def raw(data: Text) -> None:
    """Print ``data`` as it is (the lines a tool printed in the format of the facts)."""
    sys.stdout.buffer.write(data if isinstance(data, bytes) else
                            data.encode("utf-8", "surrogateescape"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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


def file_facts(key: str, path: str) -> None:
    """KEY.sha256= and KEY.mode= of an installed file (the sha256 empty, and no mode, when
    it is absent)."""
    if os.path.isfile(path):
        try:
            emit(key + ".sha256", sha256_file(path))
            emit(key + ".mode", mode_of(path))
            return
        except OSError:
            pass
    emit(key + ".sha256")


def readable_file(path: str) -> Optional[bytes]:
    """The contents of ``path``, or None when it is not a readable file."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def crontab_facts() -> None:
    if shutil.which("crontab"):
        emit("crontab.available", "1")
        emit("crontab.b64", b64(run(["crontab", "-l"])[1]))
    else:
        emit("crontab.available", "0")


def compressor_facts() -> None:
    """The gzip compressor a backup run here would use (with this PATH: the settings file
    gives cron the same one), its decompressor, and which compressors are installed (zstd
    too, for a host whose compression is zstd)."""
    have = [t for t in ("igzip", "pigz", "gzip", "zstd") if shutil.which(t)]
    gz = [t for t in have if t != "zstd"]
    emit("compressor.name", gz[0] if gz else "")
    emit("compressor.check", gz[0] if gz else "")
    emit("compressor.have", " ".join(have))


def env_facts() -> None:
    emit("env.PATH", os.environ.get("PATH", ""))
    emit("env.DOCKER_HOST", os.environ.get("DOCKER_HOST", ""))


def inspect(cid: str, fields: List[Tuple[str, str]]) -> None:
    """``KEY=VALUE`` lines of ``docker inspect`` of ``cid`` (the name without its slash)."""
    fmt = "\n".join("%s={{%s}}" % kv for kv in fields)
    rc, out = run(["docker", "inspect", "--format", fmt, cid])
    if rc == 0:
        raw(out.replace(b"container.name=/", b"container.name=", 1))

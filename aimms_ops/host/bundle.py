"""What the host runs, sent once per version: the scripts and the host program.

Every packaged script (rendered with its includes, ``shell.script_text``) and the host
program (``aimms-ops.pyz``: the ``core``, ``dump`` and ``agent`` packages as a zipapp,
and as files in ``aimms-ops.pyz.d``, which it imports to have them compiled once) go to
``~/.cache/aimms-ops/DIGEST/`` on the host, where DIGEST is the sha256 of the
whole bundle. A command then names its script there (``bash ~/.cache/aimms-ops/D/x.sh
ARGS``): a short line, the same in the dry run's plan and in the run. The bundle is
uploaded by the first command of a connection that needs it and is not yet there
(:func:`ensure_command`), into a temporary dir renamed into place, so a cut upload
leaves nothing that looks complete; bundles of other versions are removed after 7 days.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterable

from aimms_ops.core import HOST_PYTHON
from aimms_ops.core.layout import PROGRAM
from aimms_ops.host import shell

#: The packages the host program is made of (standard library only, python3 3.7+).
PROGRAM_PACKAGES = ("core", "dump", "agent")
#: Where bundles live on the host, under the login's home: ``~/`` + CACHE in a command
#: line (a word the remote shell expands), ``$HOME/`` + CACHE in a script.
CACHE = ".cache/aimms-ops"
#: The file that marks a bundle complete.
COMPLETE = ".complete"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_NEED = ".".join(str(n) for n in HOST_PYTHON)
#: Beside the zipapp in a bundle: the same modules as plain files (``aimms-ops.pyz.d``),
#: which python3 imports and caches compiled (``__pycache__``) on the host's first use.
#: A zipapp is compiled afresh at every start (zipimport writes no cache): 30 to 50 ms
#: of every call of the host program, 0.07 against 0.04 CPU-seconds for list-backups.
BESIDE = ".d"
#: The file of the folder beside that names the sources it holds.
SOURCES = "SOURCES"
#: The zipapp's entry point: says which python3 it needs before it imports anything,
#: then imports from the folder beside it when that holds these very sources, and tells
#: the program's own children where it is (``AIMMS_OPS_PROGRAM``, as the scripts read it).
_MAIN = """import os, sys
if sys.version_info < {need!r}:
    sys.stderr.write("aimms-ops: python3 %d.%d is too old for aimms-ops' host program: "
                     "it needs {need_text} or later (install a newer python3)\\n"
                     % sys.version_info[:2])
    sys.exit(69)
_zip = os.path.abspath(sys.path[0])
try:
    with open(_zip + {beside!r} + "/" + {sources!r}) as _f:
        if _f.read().strip() == {digest!r}:
            sys.path[0] = _zip + {beside!r}
except OSError:
    pass
os.environ["AIMMS_OPS_PROGRAM"] = _zip
from aimms_ops.agent.main import main
sys.exit(main(sys.argv[1:]))
"""


@functools.cache
def _sources() -> tuple[tuple[str, bytes], ...]:
    """The host program's modules: (path in the program, bytes), read once."""
    root = shell.PACKAGE_DIR
    files = [("aimms_ops/__init__.py", b'"""aimms-ops\' host program."""\n')]
    for package in PROGRAM_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            files.append((f"aimms_ops/{package}/{path.name}", path.read_bytes()))
    return tuple(files)


def _sha256(files: Iterable[tuple[str, bytes]]) -> str:
    """The sha256 of (name, bytes) pairs, each name and length before its bytes."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.cache
def sources_digest() -> str:
    """The sha256 of the host program's modules (what the folder beside holds)."""
    return _sha256(_sources())


@functools.cache
def program() -> bytes:
    """The host program as a zipapp, byte for byte the same for the same sources."""
    main = _MAIN.format(need=HOST_PYTHON, need_text=_NEED, beside=BESIDE, sources=SOURCES,
                        digest=sources_digest())
    files = [*_sources(), ("__main__.py", main.encode())]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


@functools.cache
def files() -> tuple[tuple[str, bytes], ...]:
    """(name, bytes) of everything in the bundle, sorted by name."""
    out = [(PROGRAM, program())]
    beside = PROGRAM + BESIDE
    out += [(f"{beside}/{name}", data) for name, data in _sources()]
    out.append((f"{beside}/{SOURCES}", sources_digest().encode() + b"\n"))
    for path in sorted(shell.SCRIPTS_DIR.glob("*.sh")):
        out.append((path.name, shell.script_text(path.name).encode()))
    return tuple(sorted(out))


@functools.cache
def digest() -> str:
    """The bundle's version: the sha256 of its names and contents (16 hex digits)."""
    return _sha256(files())[:16]


def directory() -> str:
    """The bundle's dir on the host, as the remote shell reads it (``~`` expanded)."""
    return f"~/{CACHE}/{digest()}"


def script_command(name: str, args: Iterable[str | int] = ()) -> str:
    """The command line that runs the packaged script ``name`` from the bundle."""
    if not shell.SCRIPT_NAME.fullmatch(name):
        raise ValueError(f"not a packaged script name: {name!r}")
    words = [str(a) for a in args]
    line = f"bash {directory()}/{name}"
    return f"{line} {shell.join(words)}" if words else line


def program_command(args: list[str] | tuple[str, ...]) -> str:
    """The command line that runs the host program from the bundle with ``args``."""
    return f"python3 {directory()}/{PROGRAM} {shell.join(args)}"


def needs(line: str) -> bool:
    """Whether a command line runs something of the bundle (of any version)."""
    return f"~/{CACHE}/" in line


def archive() -> bytes:
    """The bundle as a gzipped tar (what the upload sends on stdin)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def check_command() -> str:
    """Exits 0 when the bundle is on the host, complete."""
    return f"test -f {directory()}/{COMPLETE}"


def upload_command() -> str:
    """Reads :func:`archive` on stdin into the bundle's dir; removes other bundles that
    were not used for 7 days, and uploads that were cut (temporary dirs of a day)."""
    d = digest()
    body = (f"set -e; umask 077; c=\"$HOME/{CACHE}\"; mkdir -p \"$c\"; "
            f"t=$(mktemp -d \"$c/.new.XXXXXX\"); tar -xzf - -C \"$t\"; touch \"$t/{COMPLETE}\"; "
            f"if ! mv -T \"$t\" \"$c/{d}\" 2>/dev/null; then rm -rf \"$t\"; fi; "
            f"touch \"$c/{d}\"; "
            f"find \"$c\" -mindepth 1 -maxdepth 1 -name '.new.*' -mtime +0 -exec rm -rf {{}} + ; "
            f"find \"$c\" -mindepth 1 -maxdepth 1 ! -name {d} ! -name '.new.*' -mtime +7 "
            f"-exec rm -rf {{}} +")
    return shell.join(["bash", "-c", body])

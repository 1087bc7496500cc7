"""The one place where values become remote shell text.

Every command that reaches a remote shell is built from a list of arguments and
joined here; nothing else in the package formats values into shell strings.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from importlib import resources

_SCRIPT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.sh$")


def quote(value: str | int) -> str:
    """Quote one value for a POSIX shell."""
    text = str(value)
    if "\x00" in text:
        raise ValueError("a NUL byte cannot be passed to a shell")
    return shlex.quote(text)


def join(argv: Sequence[str | int]) -> str:
    """Join an argument vector into one shell command line, each argument quoted."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(quote(a) for a in argv)


def pipeline(*commands: Sequence[str | int]) -> str:
    """A ``bash`` pipeline of argument vectors with pipefail, run by an explicit bash.

    The remote login shell may be dash, so the pipeline runs under ``bash -c``.
    """
    body = "set -o pipefail; " + " | ".join(join(c) for c in commands)
    return join(["bash", "-c", body])


def script_text(name: str) -> str:
    """The text of a packaged shell script, with the shared library inlined.

    Scripts say ``# @include lib.sh`` where the library goes; the result is one
    self-contained file, the same whether it is installed or sent for one run.
    """
    if not _SCRIPT_NAME.match(name):
        raise ValueError(f"not a packaged script name: {name!r}")
    pkg = resources.files("aimms_ops") / "scripts"
    text = (pkg / name).read_text(encoding="utf-8")
    lib = (pkg / "lib.sh").read_text(encoding="utf-8")
    lib_body = "\n".join(
        line for line in lib.splitlines() if not line.startswith("#!")
    )
    return text.replace("# @include lib.sh", lib_body.strip("\n"))


def script_command(name: str, args: Iterable[str | int] = ()) -> str:
    """The command line that runs a packaged script with ``args`` under bash."""
    return join(["bash", "-c", script_text(name), name, *args])

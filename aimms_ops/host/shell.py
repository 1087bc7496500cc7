"""The one place where values become remote shell text.

Every command that reaches a remote shell is built from a list of arguments and
joined here; nothing else in the package formats values into shell strings.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = PACKAGE_DIR / "scripts"
SCRIPT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.sh")


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


_INCLUDE = re.compile(r"^# @include ([a-z0-9][a-z0-9_-]*\.sh)$", re.MULTILINE)


def _packaged(name: str) -> str:
    """A packaged script."""
    return (SCRIPTS_DIR / name).read_text(encoding="utf-8")


def script_text(name: str) -> str:
    """The text of a packaged shell script with its includes inlined.

    A line ``# @include FILE`` is replaced by that packaged file (its shebang
    dropped), so the result is one self-contained script, the same whether it is
    installed on the host or sent for one run.
    """
    if not SCRIPT_NAME.fullmatch(name):
        raise ValueError(f"not a packaged script name: {name!r}")

    def inline(m: re.Match[str]) -> str:
        body = _packaged(m.group(1))
        lines = [ln for ln in body.splitlines() if not ln.startswith("#!")]
        return "\n".join(lines).strip("\n")

    text = _INCLUDE.sub(inline, _packaged(name))
    return text

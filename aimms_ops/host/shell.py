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


#: The include that stands for the flags of the settings (aimms_ops.core.settings).
SETTINGS_FLAGS = "settings-flags.sh"


def _packaged(name: str) -> str:
    """A packaged script (the settings' flags are generated from their table)."""
    if name == SETTINGS_FLAGS:
        from aimms_ops.core.settings import flag_cases

        return flag_cases()
    return (SCRIPTS_DIR / name).read_text(encoding="utf-8")


def name_ere() -> str:
    """The backup name pattern (retention.NAME_RE) as a POSIX ERE for bash's ``=~``."""
    from aimms_ops.core.retention import NAME_RE

    return NAME_RE.pattern.replace("(?:", "(").replace("\\d", "[0-9]")


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
    for key, value in _placeholders().items():
        text = text.replace(f"@{key}@", value)
    return text


def _placeholders() -> dict[str, str]:
    """The facts written into the scripts when they are rendered (``@KEY@`` in lib.sh)."""
    from aimms_ops.core.defaults import SCRIPT_DEFAULTS
    from aimms_ops.core.retention import EXTENSIONS

    return {"BACKUP_NAME_ERE": name_ere(),
            "BACKUP_COMPRESSIONS": " ".join(c for c, _ in EXTENSIONS),
            "BACKUP_EXTENSIONS": " ".join(ext for _, ext in EXTENSIONS),
            **{f"DEFAULT_{k}": str(v) for k, v in SCRIPT_DEFAULTS.items()}}

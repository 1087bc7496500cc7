"""The one error type for problems the user must fix, and the one for bugs of aimms-ops."""

from __future__ import annotations

import re


class OpsError(Exception):
    """A problem the operator must fix: one line naming it, and what to do about it.

    The task layer turns it into a clean exit with ``code`` and no traceback.
    """

    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InternalError(AssertionError):
    """A bug in aimms-ops: something the code promises broke, which no operator can fix.

    Deliberately not an OpsError: the task layer reports it as an internal error (exit
    70, "set AIMMS_OPS_DEBUG=1 to see the traceback"), never as advice to the operator.
    Its message still says what was (not) changed.
    """


#: repr's escape of a surrogateescape'd byte (not after an escaped backslash).
_SURROGATE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters: a value quoted in a message
    stays on one line (newlines are escaped) and short however long it was. A byte that
    is not UTF-8 (a name read with surrogateescape) is shown as ``\\xe9``, as the host
    shows it."""
    text = _SURROGATE.sub(r"\1\\x\2", repr(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def problem(where: str, expected: str, value: object = None, *, missing: bool = False,
            unknown: bool = False) -> str:
    """One problem of a file, on one line: where, what was expected, what was found.

    ``missing``: the key is not there; ``unknown``: the key itself is the problem (its
    path names it already)."""
    if unknown:
        return f"{where}: expected {expected}"
    if missing:
        return f"{where}: missing; expected {expected}"
    return f"{where}: expected {expected}, got {shown(value, 60)}"


def key_path(parent: str, key: object) -> str:
    """``parent.key``, the place of a key in a file, on one line whatever the key holds
    (a key that is not plain printable text is shown quoted)."""
    text = key if isinstance(key, str) and key.isprintable() and key else shown(key, 40)
    return f"{parent}.{text}" if parent else text


class ConnectionLost(OpsError):
    """The SSH connection dropped while a remote command was running.

    The command may still be running on the host, or have been cut short there:
    what that means depends on the command, so callers say it in their own words.
    """

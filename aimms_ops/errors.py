"""The one error type for problems the user must fix."""

from __future__ import annotations


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

"""Checks as data: a name, a state, what was seen and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum


class State(IntEnum):
    """Monitoring plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.state is State.OK

    def as_dict(self) -> dict[str, str]:
        d = asdict(self)
        d["state"] = self.state.name
        return d


def worst(checks: list[Check]) -> State:
    """The state of a list of checks: the worst one (UNKNOWN ranks below CRITICAL)."""
    states = {c.state for c in checks}
    for s in (State.CRITICAL, State.WARNING, State.UNKNOWN):
        if s in states:
            return s
    return State.OK

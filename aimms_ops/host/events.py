"""Reading what the host program reports: its events (``aimms_ops.core.events``).

The one reader of the host's reports on the operator's side. ``Events.feed`` takes the
lines of a command's stdout as they arrive (``Remote.run(on_stdout=...)``), hands each
event to ``on_event`` at once (the progress bars, the waits) and keeps them for the
caller to read once the command has ended. :func:`facts` gives the ``facts`` of a
read-only command, or one error when its output was cut short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aimms_ops.core import events as core_events
from aimms_ops.core.errors import OpsError

Event = dict[str, Any]
#: A command's facts by their dotted names: text, or a list or an object of them.
Facts = dict[str, Any]


class Events:
    """The events of one command, in order."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self.on_event = on_event
        self.all: list[Event] = []

    def feed(self, line: str) -> None:
        """One line of the command's stdout (a line that holds no event is ignored)."""
        event = core_events.read(line)
        if event is None:
            return
        self.all.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def of(self, kind: str) -> Iterator[Event]:
        """The events of ``kind``, in order."""
        return (e for e in self.all if e["event"] == kind)

    def last(self, kind: str) -> Event | None:
        """The last event of ``kind``, or None."""
        found = None
        for event in self.of(kind):
            found = event
        return found


def parse(text: str) -> Events:
    """The events in the whole of a command's stdout."""
    out = Events()
    for line in text.splitlines():
        out.feed(line)
    return out


class CutShort(OpsError):
    """A read-only command's stdout ended before its ``facts`` event."""


def _value(value: Any) -> Any:
    """A fact as the checks read it: text ("1"/"0" for a truth), a list or an object."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return "" if value is None else value


def facts_of(found: Events, of: str) -> Facts | None:
    """The facts command ``of`` reported in ``found`` (its last report), or None."""
    raw = core_events.last_facts(found.all, of)
    return None if raw is None else {str(k): _value(v) for k, v in raw.items()}


def text_of(facts: Mapping[str, Any], key: str, *, shown: bool = False) -> str:
    """Fact ``key`` when it is text, else '' (absent, or a list). ``shown``: bytes that
    are not UTF-8 as U+FFFD, as a terminal can print them (else kept as surrogate
    escapes, to be written back as they were)."""
    value = facts.get(key)
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if shown \
        else value


def facts(text: str, of: str, where: str, why: str = "") -> Facts:
    """The facts the host program's command ``of`` printed on ``where`` (``text``: its
    stdout); :class:`CutShort` when they are not there (``why``: what else it said)."""
    found = facts_of(parse(text), of)
    if found is None:
        raise CutShort(f"the host program's {of} on {where} ended before its report (its "
                       f"output was cut short){': ' + why if why else ''}",
                       "run it again; if it fails again, see fab doctor")
    return found

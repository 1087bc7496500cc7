"""Reading what the host program reports: its events (``aimms_ops.core.events``).

The one reader of the host's reports on the operator's side. ``Events.feed`` takes the
lines of a command's stdout as they arrive (``Remote.run(on_stdout=...)``), hands each
event to ``on_event`` at once (the progress bars, the waits) and keeps them for the
caller to read once the command has ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aimms_ops.core import events as core_events

Event = dict[str, Any]


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

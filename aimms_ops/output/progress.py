"""Progress people can see: bars that move with the host's real work, waits that say what
they wait for.

:class:`Live` shows the events of a host command (``aimms_ops.core.events``) as they
come: a bar per ``progress`` stage (bytes, rate, time left; ``~`` before an estimated
total) and a line per ``wait`` (what it waits for, who holds it, up to how long, then how
long it waited). On a terminal the bars redraw in place, on stderr; under a pipe, with
``--json`` or in a log, progress becomes plain lines on stderr: none for a stage that
ends within :data:`LINE_EVERY` seconds, else one each :data:`LINE_EVERY` seconds and one
at its end, so stdout stays the data.
Every size is :func:`aimms_ops.core.units.size`'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from aimms_ops.core import units

#: Columns a bar's description takes at most (longer ones end in an ellipsis), so that
#: the figures of a bar always fit in 80 columns.
DESCRIPTION_WIDTH = 30

#: Seconds between two plain lines of one stage (not a terminal).
LINE_EVERY = 10.0

#: What a stage of the host's work is called on the screen.
STAGES = {"dump": "dumping", "restore": "restoring", "push": "pushing", "fetch": "fetching",
          "replay": "replaying"}


class BytesColumn(ProgressColumn):
    """``12.0 MiB/145.5 MiB`` (``~`` before an estimated total); nothing for a wait."""

    def render(self, task: Task) -> Text:
        if task.fields.get("wait"):
            return Text("")
        done = units.size(task.completed)
        if task.total is None:
            return Text(done)
        mark = "~" if task.fields.get("estimate") else ""
        return Text(f"{done}/{mark}{units.size(task.total)}")


class RateColumn(ProgressColumn):
    """``40.1 MiB/s``, or ``?`` before a rate can be told; for a wait, how long so far."""

    def render(self, task: Task) -> Text:
        if task.fields.get("wait"):
            return Text(f"waited {units.duration(task.elapsed or 0)}")
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{units.size(speed)}/s")


class LeftColumn(TimeRemainingColumn):
    """Time left (rich's), nothing for a wait."""

    def render(self, task: Task) -> Text:
        return Text("") if task.fields.get("wait") else super().render(task)


def plain_line(description: str, done: int, total: int | None, estimate: bool,
               elapsed: float, moved: int) -> str:
    """Progress as one line: ``dumping NAME: 120.0 MiB of ~1.2 GiB (10%), 40.0 MiB/s``
    (the rate: ``moved`` bytes in ``elapsed`` seconds)."""
    text = f"{description}: {units.size(done)}"
    if total:
        mark = "~" if estimate else ""
        text += f" of {mark}{units.size(total)} ({min(100, done * 100 // total)}%)"
    if elapsed > 0 and moved:
        text += f", {units.size(moved / elapsed)}/s"
    return text


def wait_line(event: dict[str, Any]) -> str:
    """A wait event as one line: what it waits for, who holds it, for how long."""
    holder = event.get("holder") or "unknown holder"
    if "waited" in event:
        return (f"waited {units.duration(float(event['waited']))} for {event.get('for')} "
                f"({holder})")
    return (f"waiting for {event.get('for')} ({holder}), up to "
            f"{units.duration(float(event.get('up_to') or 0))}")


class _Bar:
    """One bar: a stage of the host's work, or a transfer of this machine's."""

    def __init__(self, description: str, started: float, first: int) -> None:
        self.description = description
        self.started = started
        self.first = first  # bytes done when it was first seen
        self.shown: float | None = None
        self.done = 0
        self.task: Any = None


class Live:
    """Bars and waits on one console: ``live(event)`` for each event of a host command,
    ``live.transfer(...)`` for bytes this machine moves."""

    def __init__(self, console: Console, *, tty: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.progress = (Progress(
            TextColumn("{task.description}", table_column=Column(
                no_wrap=True, overflow="ellipsis", max_width=DESCRIPTION_WIDTH)),
            BarColumn(bar_width=None), BytesColumn(table_column=Column(no_wrap=True)),
            RateColumn(table_column=Column(no_wrap=True)),
            LeftColumn(table_column=Column(no_wrap=True)),
            console=console, transient=False) if tty else None)
        self.bars: dict[str, _Bar] = {}
        self.waits: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            stage = str(event.get("stage", ""))
            what = f" {event['what']}" if event.get("what") else ""
            total = event.get("total")
            self.update(f"{STAGES.get(stage, stage)}{what}", int(event.get("done") or 0),
                        total if isinstance(total, int) and total > 0 else None,
                        estimate=bool(event.get("estimate")))
        elif kind == "wait":
            self._wait(event)
        elif kind == "step":
            detail = f": {event['detail']}" if event.get("detail") else ""
            self.console.print(f"{event.get('name', '')}{detail}", markup=False,
                               highlight=False, soft_wrap=True)

    def update(self, description: str, done: int, total: int | None, *,
               estimate: bool = False) -> None:
        """The bar ``description`` at ``done`` bytes of ``total``."""
        now = self.clock()
        bar = self.bars.get(description)
        if bar is None:
            bar = self.bars[description] = _Bar(description, now, done)
        bar.done = done
        if total is not None and total < done:
            total = done  # an estimate passed: the bar stays honest
        if self.progress is None:
            # A line once the stage has taken LINE_EVERY, then each LINE_EVERY, and its
            # end if a line was shown: what ends sooner prints nothing.
            ended = total is not None and done >= total
            due = (now - (bar.started if bar.shown is None else bar.shown)) >= LINE_EVERY
            if due or (ended and bar.shown is not None and bar.shown != now):
                bar.shown = now
                self.console.print(plain_line(description, done, total, estimate,
                                              now - bar.started, done - bar.first),
                                   markup=False, highlight=False, soft_wrap=True)
            return
        if bar.task is None:
            bar.task = self.progress.add_task(description, total=total, estimate=estimate)
            self.progress.start()
        self.progress.update(bar.task, completed=done, total=total)

    def transfer(self, description: str, total: int | None,
                 initial: int = 0) -> Callable[[int], None]:
        """A bar for bytes moved here; returns ``advance(n)``."""
        self.update(description, initial, total)

        def advance(n: int) -> None:
            self.update(description, self.bars[description].done + n, total)

        return advance

    def _wait(self, event: dict[str, Any]) -> None:
        key = str(event.get("for"))
        if self.progress is not None and key in self.waits:
            self.progress.remove_task(self.waits.pop(key))
        if self.progress is not None and "waited" not in event:
            self.waits[key] = self.progress.add_task(wait_line(event), total=None, wait=True)
            self.progress.start()
            return
        self.console.print(wait_line(event), markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def live(console: Console | None = None) -> Iterator[Live]:
    """A :class:`Live` on stderr (bars on a terminal, lines otherwise), stopped at the end."""
    console = console or Console(file=sys.stderr, highlight=False)
    shown = Live(console, tty=console.is_terminal)
    try:
        yield shown
    finally:
        shown.close()

"""Rendering results for people (tables, progress bars) and machines (JSON).

Domain modules return data; only this module and tasks.py print.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from aimms_ops.core.checks import Check, State
from aimms_ops.core.retention import NAME_RE
from aimms_ops.output import progress

_STATE_STYLE = {State.OK: "green", State.WARNING: "yellow", State.CRITICAL: "red",
                State.UNKNOWN: "magenta"}


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits 1 here; the task goes on and ends with its own exit code.
        self.quiet = True
        reader_gone(self.file)


def reader_gone(stream: Any = None) -> None:
    """The reader of stdout (or ``stream``) went away (``fab status | head -1``): what is
    left for it goes to /dev/null, so that the task ends as it would have, with its own
    exit code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
    except (OSError, ValueError):  # no real stdout (captured): nothing to redirect
        pass


def _console(stream: Any) -> Console:
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    return _Console(file=stream, width=None if tty else 200, highlight=False,
                    soft_wrap=not tty)


def write(text: str) -> None:
    """Text on stdout as it is, flushed (a status summary, a log); a closed pipe is not an
    error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()


def out() -> Console:
    """The console for results (stdout)."""
    return _console(sys.stdout)


def err() -> Console:
    """The console for progress and notes (stderr), so stdout stays parseable."""
    return _console(sys.stderr)


def print_json(data: Any) -> None:
    write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
          ) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    for i, col in enumerate(columns):
        names = _name_width([row[i] for row in cells if i < len(row)])
        # A column of backup names never wraps (a name is copied whole): the others fold.
        t.add_column(col, overflow="fold", no_wrap=bool(names), min_width=names or None)
    for row in cells:
        t.add_row(*row)
    out().print(t)


def _name_width(cells: Sequence[str]) -> int:
    """The width of the longest backup name among a column's cells, 0 when none is one."""
    return max((len(c) for c in cells if NAME_RE.fullmatch(c)), default=0)


def checks_table(checks: Sequence[Check], title: str | None = None) -> None:
    """The checks as a table (check, state, detail), then each fix on a line of its own
    (``fix NAME: WHAT TO DO``), never folded inside a cell, so that a command in it can
    be copied and pasted whole at any width."""
    t = Table(title=title, title_justify="left")
    t.add_column("check")
    t.add_column("state")
    t.add_column("detail", overflow="fold")
    for c in checks:
        style = _STATE_STYLE[c.state]
        t.add_row(c.name, f"[{style}]{c.state.name}[/{style}]", c.detail)
    console = out()
    console.print(t)
    for c in checks:
        if c.fix:
            console.print(f"fix {c.name}: {c.fix}", markup=False, highlight=False,
                          soft_wrap=True)


def note(message: str) -> None:
    """A line for the operator, on stderr."""
    err().print(message, markup=False, highlight=False)


@contextmanager
def live() -> Iterator[progress.Live]:
    """Bars and waits on stderr (``output.progress``): redrawn on a terminal, plain lines
    otherwise."""
    with progress.live(err()) as shown:
        yield shown


@contextmanager
def transfer_progress(description: str, total: int | None,
                      initial: int = 0) -> Iterator[Callable[[int], None]]:
    """A bar with bytes, rate and time left; yields an ``advance(n)`` callable."""
    with live() as shown:
        yield shown.transfer(description, total, initial)

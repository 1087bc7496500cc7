"""Rendering results for people (tables, progress bars) and machines (JSON).

Domain modules return data; only this module and tasks.py print.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from aimms_ops.core.checks import Check, State
from aimms_ops.output import progress

_STATE_STYLE = {State.OK: "green", State.WARNING: "yellow", State.CRITICAL: "red",
                State.UNKNOWN: "magenta"}


def _console(stream: Any) -> Console:
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    return Console(file=stream, width=None if tty else 200, highlight=False,
                   soft_wrap=not tty)


def out() -> Console:
    """The console for results (stdout)."""
    return _console(sys.stdout)


def err() -> Console:
    """The console for progress and notes (stderr), so stdout stays parseable."""
    return _console(sys.stderr)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
          ) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out().print(t)


def checks_table(checks: Sequence[Check], title: str | None = None) -> None:
    t = Table(title=title, title_justify="left")
    t.add_column("check")
    t.add_column("state")
    t.add_column("detail", overflow="fold")
    t.add_column("fix", overflow="fold")
    for c in checks:
        style = _STATE_STYLE[c.state]
        t.add_row(c.name, f"[{style}]{c.state.name}[/{style}]", c.detail, c.fix)
    out().print(t)


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

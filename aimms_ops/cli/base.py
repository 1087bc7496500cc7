"""What every task shares: the error boundary, the inventory, the connection, confirmation.

Tasks are thin: they load the inventory, connect, call a domain module and render
what it returns. Every problem the operator can fix ends as one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric import Connection
from invoke import Exit, Task, task

from aimms_ops.core.errors import ConnectionLost, OpsError, shown
from aimms_ops.monitor import runlog
from aimms_ops.output import console as output

DEBUG_ENV = "AIMMS_OPS_DEBUG"


def log_note(line: str) -> None:
    """A line of the host's log, as a task shows it while it runs: its text, indented."""
    output.note("  " + runlog.text_of(line))


def host_name(c: Any) -> str | None:
    """The host named with ``fab -H NAME``, or None for the inventory's default."""
    if isinstance(c, Connection):
        return c.original_host
    return None


def ops_task(*, help: dict[str, str] | None = None, reads_only: bool = False,
             **task_options: Any) -> Callable:
    """Declare a task whose user-facing failures end as one clean line.

    Fabric's ``--dry`` is honoured: a task with a ``--dry-run`` runs as a dry run, one
    that only reads (``reads_only``) runs as it is, and any other is refused in one line
    before it connects.
    """

    def deco(fn: Callable) -> Any:
        has_dry_run = "dry_run" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                if fabric_dry(c) and not reads_only:
                    if not has_dry_run:
                        name = fn.__name__.replace("_", "-")
                        raise OpsError(f"fab --dry: {name} has no dry run (it would change "
                                       "the host or this machine)",
                                       f"nothing was done; run it without --dry "
                                       f"(fab --help {name})", code=2)
                    kwargs["dry_run"] = True
                return fn(c, *args, **kwargs)
            except Exit:
                raise
            except OpsError as exc:
                raise Exit(f"error: {exc}", code=exc.code) from None
            except KeyboardInterrupt:
                raise Exit("interrupted: run the same command again to finish (downloads "
                           "resume, rebuilds continue where they stopped)", code=130) from None
            except EOFError:
                # paramiko's word for a transport that closed under a call that has no
                # ConnectionLost of its own: the connection is gone, nothing else.
                lost = ConnectionLost("the SSH connection was lost", "check the network and "
                                      "run the task again (downloads resume where they "
                                      "stopped)")
                raise Exit(f"error: {lost}", code=lost.code) from None
            except Exception as exc:
                if os.environ.get(DEBUG_ENV):
                    raise
                raise Exit(f"internal error: {type(exc).__name__}: {exc} "
                           f"(set {DEBUG_ENV}=1 to see the traceback)", code=70) from None

        return task(help=help or {}, klass=OpsTask, **task_options)(wrapper)

    return deco


#: The short flags, each meaning one thing in every task that has it; other flags have none
#: (Invoke's own would give -d to --database, --dry-run, --deep, --dest or --download).
SHORT_FLAGS = {"file": "f", "yes": "y", "json": "j", "identity": "i", "target": "t",
               "max_age": "m", "ping": "p"}


class OpsTask(Task):
    """A task whose short flags are :data:`SHORT_FLAGS`, not Invoke's first free letter."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        self.auto_shortflags = False
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short is not None and short not in taken_names:
            opts["names"].append(short)
        return opts


def fabric_dry(c: Any) -> bool:
    """Whether Fabric's (Invoke's) ``--dry`` was given."""
    run = getattr(getattr(c, "config", None), "run", None)
    return bool(getattr(run, "dry", False))


def load_inventory():
    from aimms_ops.inventory import loader as inventory

    inv = inventory.load()
    for line in inv.warnings:
        _warn_once(line)
    return inv


@functools.cache
def _warn_once(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def connect(c: Any, inv: Any = None):
    from aimms_ops.cli.coreopts import ssh_config_override
    from aimms_ops.inventory.connected import open_host

    inv = inv or load_inventory()
    host = inv.host(host_name(c))
    override = ssh_config_override(c)
    if override:
        host = dataclasses.replace(host, ssh_config=override)
    return open_host(host)


def confirm(expected: str, action: str, yes: bool) -> None:
    """Typed confirmation of a destructive ``action``: the operator types ``expected``.

    ``--yes`` skips it; without a terminal and without ``--yes`` it refuses.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise OpsError(f"refusing to {action} without confirmation: stdin is not a terminal",
                       "pass --yes to confirm from a script", code=2)
    try:
        answer = input(f"Type {expected} to {action}: ")
    except EOFError:
        answer = ""
    if answer.strip() != expected:
        raise OpsError("not confirmed: nothing was changed", code=2)


def download_dir(inv: Any, dest: str | None) -> Path:
    return Path(os.path.expanduser(dest or inv.download_dir))


def whole_number(flag: str, value: Any) -> int:
    """Parse an integer flag here: Invoke's own int flags end in a traceback on bad input."""
    try:
        return int(str(value).strip())
    except ValueError:
        raise OpsError(f"{flag} must be a whole number, got {shown(value, 24)}") from None


def operator_name() -> str:
    from aimms_ops.rebuild import operator

    return operator()

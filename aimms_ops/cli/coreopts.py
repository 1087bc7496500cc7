"""Fabric's own options (``fab --help``): each honoured or refused in one line, before any
task runs; never a traceback, never ignored.

- ``-H``/``--hosts``: every host is found in the inventory before the first one runs
  (``-H aidset,typo`` runs nothing);
- ``-S``/``--ssh-config``: the ssh_config that resolves the host, in place of the
  inventory's ``ssh_config`` (:func:`ssh_config_override`); a file that is not there is
  refused;
- ``--dry``: :func:`aimms_ops.cli.base.ops_task`;
- the options of a connection aimms-ops does not make that way (``-i``, ``-t``,
  ``--prompt-for-*``) and those of Fabric's ``run()``, which no task uses (``-e``, ``-p``,
  ``-w``, ``-T``, ``--hide``): refused, each with what to do instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aimms_ops.core.errors import OpsError, shown

#: Fabric's options that aimms-ops does not honour, and what to do instead.
REFUSED = {
    "-i": "name the key with IdentityFile in the ssh_config, or load it with ssh-add",
    "--identity": "name the key with IdentityFile in the ssh_config, or load it with ssh-add",
    "-t": "set ConnectTimeout in the ssh_config",
    "--connect-timeout": "set ConnectTimeout in the ssh_config",
    "--prompt-for-passphrase": "load the key into ssh-agent first with ssh-add: aimms-ops "
                               "uses the agent",
    "--prompt-for-login-password": "aimms-ops logs in with keys only: IdentityFile or "
                                   "ssh-agent",
    "--prompt-for-sudo-password": "no task uses sudo",
    "-T": "the tasks bound their own waits: lock_timeout in the inventory",
    "--command-timeout": "the tasks bound their own waits: lock_timeout in the inventory",
    "-e": "the tasks run no commands through Fabric: there is nothing to echo; "
          "fab rebuild-volume --dry-run prints its commands",
    "--echo": "the tasks run no commands through Fabric: there is nothing to echo; "
              "fab rebuild-volume --dry-run prints its commands",
    "-p": "the tasks run no commands through Fabric: no pty to ask for",
    "--pty": "the tasks run no commands through Fabric: no pty to ask for",
    "-w": "the tasks run no commands through Fabric; a failed check is its exit code",
    "--warn-only": "the tasks run no commands through Fabric; a failed check is its exit code",
    "--hide": "the tasks run no commands through Fabric: nothing to hide; pipe the "
              "output instead",
}

#: Fabric's options that take a value (so that the value is not read as a task's name).
TAKES_VALUE = {"-c", "--collection", "-D", "--list-depth", "-f", "--config", "-F",
               "--list-format", "-H", "--hosts", "-i", "--identity", "-r", "--search-root",
               "-S", "--ssh-config", "-t", "--connect-timeout", "-T", "--command-timeout",
               "--hide", "--print-completion-script"}

#: Options that only print (help, lists, completion): nothing is checked then.
ONLY_PRINT = {"-h", "--help", "-l", "--list", "--complete", "-V", "--version",
              "--print-completion-script", "--list-agent-keys"}


def core_options(argv: list[str], tasks: set[str]) -> list[tuple[str, str | None]]:
    """The options before the first task of ``argv`` (``argv[0]`` the program), as
    ``(option, value)``; value None for a flag (pure)."""
    out: list[tuple[str, str | None]] = []
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in tasks or not arg.startswith("-") or arg in ("-", "--"):
            break
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            out.append((name, value))
        elif arg in TAKES_VALUE:
            out.append((arg, args[i + 1] if i + 1 < len(args) else ""))
            i += 1
        elif not arg.startswith("--") and len(arg) > 2 and arg[:2] in TAKES_VALUE:
            out.append((arg[:2], arg[2:]))  # -Haidset
        else:
            out.append((arg, None))
        i += 1
    return out


def check_core_options(argv: list[str], tasks: set[str]) -> None:
    """Refuse, in one line and before any task runs, a Fabric option aimms-ops does not
    honour, a ``-H`` host the inventory does not have, a ``-S`` file that is not there."""
    opts = core_options(argv, tasks)
    if any(name in ONLY_PRINT for name, _ in opts):
        return
    try:
        for name, value in opts:
            if name in REFUSED:
                raise OpsError(f"fab {name} is not supported by aimms-ops", REFUSED[name],
                               code=2)
            if name in ("-S", "--ssh-config") and value is not None:
                check_ssh_config(value)
            if name in ("-H", "--hosts") and value is not None:
                check_hosts(value)
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.code) from None


def check_ssh_config(path: str) -> None:
    if not os.path.isfile(os.path.expanduser(path)):
        raise OpsError(f"-S {shown(path)}: no such file: -S names the ssh_config to read",
                       "name an ssh_config file that exists, or leave -S out", code=2)


def check_hosts(value: str) -> None:
    """Every host of ``-H`` (comma-separated) is text and in the inventory."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise OpsError(f"-H {shown(value)} is not a host name (not valid UTF-8 text)",
                       "name a host of the inventory", code=2) from None
    names = [n for n in value.split(",") if n]
    if not names:
        return
    from aimms_ops.inventory import loader

    try:
        inv = loader.load()
    except OpsError:
        return  # every task says what is wrong with the inventory, in its own line
    for name in names:
        inv.host(name)


def ssh_config_override(c: Any) -> str | None:
    """The ssh_config named with Fabric's ``-S``, or None."""
    config = getattr(c, "config", None)
    path = getattr(config, "_runtime_ssh_path", None) or getattr(config, "ssh_config_path", None)
    return os.path.expanduser(path) if isinstance(path, str) and path else None


def stacks_on_sigusr1() -> None:
    """``kill -USR1 PID`` of a task that seems stuck prints where each of its threads is
    (on stderr), and the task goes on: what to attach to a report of a hang."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def quiet_broken_pipe() -> None:
    """A closed pipe that escapes everything (Fabric's own ``fab -l | head``) ends the
    program quietly with exit code 1, not with a traceback."""
    def hook(kind: Any, value: Any, tb: Any) -> None:
        if issubclass(kind, BrokenPipeError):
            from aimms_ops.output.console import reader_gone

            reader_gone()
            return
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = hook

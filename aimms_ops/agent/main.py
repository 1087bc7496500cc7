"""The host program's commands: one parser, each command a function of its arguments that
returns the exit status (sysexits: 64 usage, 73 cannot create, 75 busy); ``dump ...`` is
the dump reader's (``aimms_ops.dump.cli``: inspect, filter, and the restore's swap),
``verify ...`` the deep verify's (``agent/verify.py``, run by ``verify-backup.sh``),
``drill ...`` the drill's (``agent/drill.py``, run by ``drill.sh``);
``restore-stream``, ``inspect-dump``, ``replaced`` and ``postgres-exec`` the restore's
(``agent/restore.py``, ``dumpfile.py``, ``replaced.py``, each run by the script of that
name); ``batch N COMMAND ARGS... [N COMMAND ARGS...]`` runs several commands in one start
of the program (N: how many words follow for that command), as ``fab status`` reads its
facts."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import List, Optional

#: The module (of aimms_ops.agent) whose ``add_commands`` registers each command that
#: argparse reads: a command imports its own module only, so that a start of the program
#: costs what that command needs (a unit test checks this table against the modules).
OWNERS = {
    "lock": "locks", "holders": "locks", "clean-killed": "locks", "hold": "locks",
    "retention": "backups", "size-guard": "backups", "latest": "backups",
    "offsite-plan": "backups", "size": "backups", "age": "backups",
    "pin": "backups", "unpin": "backups",
    "ping-test": "pings",
    "offsite": "offsite",
    "facts": "facts", "list-backups": "facts", "volume-facts": "facts",
    "rebuild-facts": "facts",
    "status-facts": "statefacts", "install-state": "statefacts",
    "ensure-dirs": "install", "install-file": "install", "rebuild-record": "install",
    "wait-postgres": "install",
    "pitr-facts": "pitr", "pitr-backup": "pitr", "pitr-enable": "pitr",
    "pitr-restore": "pitr_restore",
    "pitr-push": "pitr_push",
}
#: The order of the commands in ``--help``.
MODULES = ("locks", "backups", "pings", "offsite", "facts", "statefacts", "install", "pitr",
           "pitr_restore", "pitr_push")


def module(name: str) -> ModuleType:
    """The host program's module ``name`` (aimms_ops.agent.NAME), imported when first
    needed."""
    return importlib.import_module("aimms_ops.agent." + name)


USAGE_STATUS = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write("aimms-ops: %s (see: aimms-ops.pyz --help)\n" % message)
        sys.exit(USAGE_STATUS)


def parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the commands of module ``only``."""
    p = _Parser(prog="aimms-ops.pyz", description="aimms-ops' host program")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in (only,) if only else MODULES:
        module(name).add_commands(sub)
    if only:
        return p
    for name, text in (
            ("verify", "the deep verify: a trial restore of a backup into a throwaway "
             "container (its own options: see verify-backup.sh)"),
            ("drill", "the drill: the newest offsite copy fetched, restored into a "
             "throwaway container, checked, removed; RTO and RPO measured (its own "
             "options: see drill.sh)"),
            ("restore-stream", "the restore stream: source | decompressor | dump filter | psql, "
             "built beside the live cluster and swapped in (see agent/restore.py)"),
            ("inspect-dump", "[--full] FILE: a dump on this host checked before a restore "
             "(only hashed when its backup recorded what it holds)"),
            ("replaced", "the databases restores set aside: aside, undo, drop-aside"),
            ("postgres-exec", "PROJECT SERVICE COMMAND...: docker exec -i in the "
             "service's running container"),
            ("batch", "N COMMAND ARGS... [N COMMAND ARGS...]: several commands in one "
             "start (N: the words that follow)")):
        sub.add_parser(name, help=text)
    return p


def batch(argv: List[str]) -> int:
    """Each ``N COMMAND ARGS...`` group of ``argv`` in turn; the first failure's status."""
    status = 0
    while argv:
        if not argv[0].isdigit() or not 0 < int(argv[0]) < len(argv):
            sys.stderr.write("aimms-ops: batch: N COMMAND ARGS..., N the words that follow "
                             "(see: aimms-ops.pyz --help)\n")
            return USAGE_STATUS
        n = int(argv[0])
        rc = main(argv[1:1 + n])
        status = status or rc
        argv = argv[1 + n:]
    return status


def main(argv: List[str]) -> int:
    if argv[:1] == ["batch"]:
        return batch(argv[1:])
    if argv[:1] == ["dump"]:  # the dump reader's own command line (aimms_ops.dump.cli)
        from aimms_ops.core import events
        from aimms_ops.dump import cli as dump_cli

        return int(dump_cli.main(argv[1:], event=events.line))
    if argv[:1] == ["backup"]:  # backup-postgres.sh's own flags (aimms_ops.agent.backup)
        return int(module("backup").main(argv[1:]))
    if argv[:1] == ["verify"]:  # its own command line: the settings' flags (agent/verify.py)
        return int(module("verify").main(argv[1:]))
    if argv[:1] == ["drill"]:  # the verify's command line and its source (agent/drill.py)
        return int(module("drill").main(argv[1:]))
    if argv[:1] == ["restore-stream"]:  # positional arguments (agent/restore.py)
        return int(module("restore").main(argv[1:]))
    if argv[:1] == ["inspect-dump"]:  # agent/dumpfile.py
        return int(module("dumpfile").main(argv[1:]))
    if argv[:1] == ["replaced"]:  # agent/replaced.py
        return int(module("replaced").replaced_main(argv[1:]))
    if argv[:1] == ["postgres-exec"]:  # a COMMAND whose flags are its own (agent/replaced.py)
        return int(module("replaced").postgres_exec(argv[1:]))
    args = parser(OWNERS.get(argv[0]) if argv else None).parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130

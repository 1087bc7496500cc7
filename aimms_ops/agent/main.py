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
import sys
from typing import List

from aimms_ops.agent import (
    backups,
    drill,
    dumpfile,
    facts,
    install,
    locks,
    offsite,
    pings,
    pitr,
    pitr_push,
    pitr_restore,
    replaced,
    restore,
    statefacts,
    verify,
)

USAGE_STATUS = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write("aimms-ops: %s (see: aimms-ops.pyz --help)\n" % message)
        sys.exit(USAGE_STATUS)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aimms-ops.pyz", description="aimms-ops' host program")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    locks.add_commands(sub)
    backups.add_commands(sub)
    pings.add_commands(sub)
    sub.add_parser("verify", help="the deep verify: a trial restore of a backup into a "
                   "throwaway container (its own options: see verify-backup.sh)")
    sub.add_parser("drill", help="the drill: the newest offsite copy fetched, restored into a "
                   "throwaway container, checked, removed; RTO and RPO measured (its own "
                   "options: see drill.sh)")
    offsite.add_commands(sub)
    facts.add_commands(sub)
    statefacts.add_commands(sub)
    install.add_commands(sub)
    pitr.add_commands(sub)
    pitr_restore.add_commands(sub)
    pitr_push.add_commands(sub)
    for name, text in (
            ("restore-stream", "the restore stream: source | decompressor | dump filter | psql, "
             "built beside the live cluster and swapped in (see agent/restore.py)"),
            ("inspect-dump", "FILE: a dump on this host checked, read-only"),
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
        from aimms_ops.agent import backup

        return backup.main(argv[1:])
    if argv[:1] == ["verify"]:  # its own command line: the settings' flags (agent/verify.py)
        return verify.main(argv[1:])
    if argv[:1] == ["drill"]:  # the verify's command line and its source (agent/drill.py)
        return drill.main(argv[1:])
    if argv[:1] == ["restore-stream"]:  # positional arguments (agent/restore.py)
        return restore.main(argv[1:])
    if argv[:1] == ["inspect-dump"]:  # agent/dumpfile.py
        return dumpfile.main(argv[1:])
    if argv[:1] == ["replaced"]:  # agent/replaced.py
        return replaced.replaced_main(argv[1:])
    if argv[:1] == ["postgres-exec"]:  # a COMMAND whose flags are its own (agent/replaced.py)
        return replaced.postgres_exec(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130

"""The host program's command table: each command starts with its own module only."""

from __future__ import annotations

import argparse
import subprocess
import sys

from aimms_ops.agent import main as agent_main
from tests.hostprog import PROGRAM


def _registered(name: str) -> set[str]:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    agent_main.module(name).add_commands(sub)
    return set(sub.choices)


def test_the_table_names_the_module_of_every_command_and_no_other():
    by_module = {name: _registered(name) for name in agent_main.MODULES}
    expected = {cmd: name for name, cmds in by_module.items() for cmd in cmds}
    assert agent_main.OWNERS == expected
    assert sum(map(len, by_module.values())) == len(expected), "a command in two modules"


def test_a_command_imports_its_own_module_and_not_the_others():
    code = ("import sys; from aimms_ops.agent.main import main; "
            "main(['list-backups', '/nonexistent']);"
            "print(sorted(m for m in sys.modules if m.startswith('aimms_ops.agent.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False).stdout
    assert "aimms_ops.agent.facts'" in out
    for other in ("drill", "offsite", "pitr", "verify", "restore", "backups"):
        assert f"aimms_ops.agent.{other}'" not in out, out


def test_help_still_lists_every_command():
    out = subprocess.run([sys.executable, str(PROGRAM), "--help"], capture_output=True,
                         text=True, check=False).stdout
    for cmd in [*agent_main.OWNERS, "verify", "drill", "restore-stream", "inspect-dump",
                "replaced", "postgres-exec", "batch"]:
        assert cmd in out, cmd

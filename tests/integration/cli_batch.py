"""Run many ``fab`` command lines in one process, each exactly as ``.venv/bin/fab`` runs it.

Used by the tests that feed hundreds of bad values to the CLI: starting Python, Fabric
and Paramiko once instead of once per value. Each command line gets a new Fabric
program (``fabric.main.make_program()``, what ``fab`` runs), its own argv, working
directory and environment, and its own stdout and stderr: file descriptors 1 and 2
are redirected, so that what a subprocess of the task prints is caught too. An
exception that escapes the program is recorded with its traceback, as the
interpreter would print it.

Input (stdin): JSON, a list of ``{"argv": [hex of the bytes of each argument], "cwd":
path, "env": {name: value}}``. Output (stdout): JSON, a list of ``{"rc", "stdout",
"stderr"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import traceback
from typing import Any


def _forget() -> None:
    """Empty every functools cache of aimms_ops, so that a run prints what it would
    print in a process of its own (a warning printed once per process, say)."""
    for name, module in list(sys.modules.items()):
        if name == "aimms_ops" or name.startswith("aimms_ops."):
            for value in list(vars(module).values()):
                clear = getattr(value, "cache_clear", None)
                if callable(clear):
                    clear()


def _run_one(argv: list[str]) -> int:
    from fabric.main import make_program

    _forget()
    sys.argv = argv
    try:
        make_program().run(argv, exit=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)  # what the interpreter does with a message
        return 1
    except BaseException:  # noqa: BLE001 - what the interpreter would print, recorded
        traceback.print_exc()
        return 1
    return 0


def run(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    real_out = os.dup(1)
    real_err = os.dup(2)
    base_env = dict(os.environ)
    home = os.getcwd()
    try:
        for case in cases:
            argv = ["fab", *(os.fsdecode(bytes.fromhex(a)) for a in case["argv"])]
            os.environ.clear()
            os.environ.update({**base_env, **case.get("env", {})})
            os.chdir(case.get("cwd") or home)
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                try:
                    rc = _run_one(argv)
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                    with contextlib.suppress(Exception):
                        sys.stderr.flush()
                    os.dup2(real_out, 1)
                    os.dup2(real_err, 2)
                texts = []
                for f in (out, err):
                    f.seek(0)
                    texts.append(f.read().decode("utf-8", "replace"))
            results.append({"rc": rc, "stdout": texts[0], "stderr": texts[1]})
    finally:
        os.environ.clear()
        os.environ.update(base_env)
        os.chdir(home)
    return results


def main() -> None:
    cases = json.loads(sys.stdin.read())
    results = run(cases)
    sys.stdout.write(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

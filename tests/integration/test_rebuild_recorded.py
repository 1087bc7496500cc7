"""rebuild-volume sends exactly the commands its dry run lists: recorded by the host.

The sandbox login user's key gets a forced command (``command="..."`` in its
authorized_keys) that appends every command sshd is asked to run to a log, then runs
it: no hook in aimms-ops. The commands the host received between a step's ``begin``
and ``done`` records are then compared, byte for byte, with that step's commands in
``rebuild-volume --dry-run --json``. The key's line is put back afterwards, and
sandbox/up.sh (run first by every session) rewrites it too, should a run be killed.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import faults
from .test_rebuild import content, leave_it_usable, make_backup, states, wreck  # noqa: F401

pytestmark = pytest.mark.integration

RECORDER = """#!/bin/sh
# Appends the command sshd was asked to run (base64, one a line), then runs it.
log="$HOME/.aimms-ops-recorded"
if [ -n "${SSH_ORIGINAL_COMMAND+x}" ]; then
    ( flock 9; printf '%s' "$SSH_ORIGINAL_COMMAND" | base64 -w0; echo ) 9>>"$log" >>"$log"
    exec "$SHELL" -c "$SSH_ORIGINAL_COMMAND"
fi
exec "$SHELL" -l
"""


class Recorder:
    def __init__(self, home: Path) -> None:
        self.log = home / ".aimms-ops-recorded"

    def clear(self) -> None:
        self.log.write_text("")

    def commands(self) -> list[str]:
        return [base64.b64decode(line).decode("utf-8", "surrogateescape")
                for line in self.log.read_text().splitlines()]


@pytest.fixture
def recorder(sandbox) -> Iterator[Recorder]:
    """Every command the sandbox host runs for its login user, recorded by sshd's
    forced command, for the duration of the test."""
    home = Path(sandbox.home)
    keys = home / ".ssh" / "authorized_keys"
    script = home / ".aimms-ops-record.sh"
    comment = f" aimms-ops-sandbox-{sandbox.env['SANDBOX_NAME']}"
    original = keys.read_text()
    lines = original.splitlines()
    assert any(ln.endswith(comment) for ln in lines), original
    script.write_text(RECORDER)
    rec = Recorder(home)
    rec.clear()
    owner = (keys.stat().st_uid, keys.stat().st_gid)
    for path, mode in ((script, 0o700), (rec.log, 0o600)):
        path.chmod(mode)
        os.chown(path, *owner)
    forced = [f'command="{script}" {ln}' if ln.endswith(comment) else ln for ln in lines]
    # A login's forced command is fixed when it logs in: the test client's shared
    # connection logs in again, before and after.
    sandbox.close_shared_connection()
    keys.write_text("\n".join(forced) + "\n")  # same file: its owner and mode stay
    try:
        assert sandbox.sh("echo recorded").strip() == "recorded"
        assert rec.commands()[-1] == "echo recorded", "the forced command does not record"
        rec.clear()
        yield rec
    finally:
        keys.write_text(original)
        sandbox.close_shared_connection()
        script.unlink(missing_ok=True)
        rec.log.unlink(missing_ok=True)


def _record_call(command: str) -> list[str] | None:
    """The arguments of a rebuild-record call of the host program (``python3
    ~/.cache/aimms-ops/DIGEST/aimms-ops.pyz rebuild-record ARGS``), or None for any other
    command."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) > 2 and argv[0] == "python3" and argv[1].endswith("/aimms-ops.pyz") \
            and argv[2] == "rebuild-record":
        return argv[3:]
    return None


def sent_by_step(commands: list[str]) -> dict[str, list[str]]:
    """The commands received between each ``begin=STEP`` and ``done=STEP`` record."""
    out: dict[str, list[str]] = {}
    step = None
    for cmd in commands:
        call = _record_call(cmd)
        if call is not None and call[0] == "append":
            marks = [ln.partition("=") for ln in call[2:]]
            for key, _, value in marks:
                if key == "begin":
                    assert step is None, f"step {value} begun inside step {step}"
                    step = value
                    out[step] = []
                elif key == "done":
                    assert step == value.split()[0], f"done={value} inside step {step}"
                    step = None
            continue
        if step is not None:
            out[step].append(cmd)
    assert step is None, f"step {step} never recorded as done"
    return out


@pytest.mark.parametrize("location", ["remote", "local"])
def test_the_run_sends_byte_for_byte_the_commands_of_its_dry_run(sandbox, recorder, location,
                                                                 tmp_path):
    name = make_backup(sandbox)
    before = content(sandbox)
    file = name
    if location == "local":
        proc = sandbox.fab("download", f"--file={name}", f"--dest={tmp_path}")
        assert proc.returncode == 0, proc.stderr
        file = str(tmp_path / name)
    wreck(sandbox)

    proc = sandbox.fab("rebuild-volume", f"--file={file}", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert {s["action"] for s in plan["steps"]} == {"run"}, plan["steps"]
    assert plan["backup"]["location"] == location
    stdin = [c["stdin"] for s in plan["steps"] for c in s["commands"] if c["stdin"]]
    assert stdin == ([file] if location == "local" else [])

    recorder.clear()
    proc = sandbox.fab("rebuild-volume", f"--file={file}", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert states(sandbox) == {"postgres": "running", "redis": "running"}
    assert content(sandbox) == before

    # A fresh run names its run and its kept volume when it starts: the only two values
    # in which its commands may differ from the dry run's, and both reports name them.
    assert plan["run"] != report["run"] and report["kept"].startswith(plan["volume"])

    assert_sent_as_planned(plan, recorder.commands(),
                           {plan["run"]: report["run"], plan["keep"]: report["kept"]})


def test_a_continued_run_sends_exactly_its_dry_run(sandbox, recorder):
    """A run that continues an interrupted one has its recorded run id and kept volume:
    its dry run's commands are those it sends, with nothing substituted."""
    name = make_backup(sandbox)
    before = content(sandbox)
    proc = faults.interrupt_when(sandbox, "rebuild-volume", f"--file={name}", "--yes",
                                 line="] rm: done in")
    assert proc.returncode == 130, proc.stderr

    proc = sandbox.fab("rebuild-volume", f"--file={name}", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["continues"] == plan["run"]
    assert {s["step"]: s["action"] for s in plan["steps"]}["rm"] == "done", plan["steps"]

    recorder.clear()
    proc = sandbox.fab("rebuild-volume", f"--file={name}", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["run"], report["kept"]) == (plan["run"], plan["keep"])
    assert content(sandbox) == before
    assert_sent_as_planned(plan, recorder.commands(), {})


def assert_sent_as_planned(plan: dict, received: list[str], chosen: dict[str, str]) -> None:
    """The commands received during each step of the run are those of the dry run's
    ``plan`` for that step, byte for byte (``chosen``: values the run chose anew);
    nothing else ran meanwhile but the run's records."""

    def as_run(line: str) -> str:
        for old, new in chosen.items():
            line = line.replace(old, new)
        return line

    to_run = [s for s in plan["steps"] if s["action"] == "run"]
    sent = sent_by_step(received)
    assert list(sent) == [s["step"] for s in to_run]
    for step in to_run:
        expected = [as_run(c["command"]) for c in step["commands"]]
        got = sent[step["step"]]
        assert len(got) == len(expected), (step["step"], [c[:80] for c in got])
        for i, (want, was) in enumerate(zip(expected, got, strict=True)):
            at = next((k for k, (a, b) in enumerate(zip(want, was, strict=False))
                       if a != b),
                      min(len(want), len(was)))
            assert was == want, (f"{step['step']} command {i + 1} differs at {at}: sent "
                                 f"{was[at - 40:at + 40]!r}, planned {want[at - 40:at + 40]!r}")
    # Nothing else ran while the steps ran: only the plan's commands and the records.
    first = next(i for i, c in enumerate(received)
                 if (_record_call(c) or [""])[-1:] == [f"begin={to_run[0]['step']}"])
    last = max(i for i, c in enumerate(received)
               if (_record_call(c) or [""])[-1:] == ["finished=ok"])
    between = [c for c in received[first:last] if _record_call(c) is None]
    assert between == [c for cmds in sent.values() for c in cmds]


def test_restore_sends_the_commands_of_its_plan_and_nothing_after(sandbox, recorder):
    """fab restore's plan (restore.restore_commands, pure) is what the host receives last:
    the stream, the rows, then ANALYZE left running, byte for byte."""
    from aimms_ops import restore
    from aimms_ops.inventory import loader as inventory
    from aimms_ops.restore.source import DumpInfo

    name = make_backup(sandbox)
    proc = sandbox.fab("verify", f"--file={name}", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    # The decompressed size the plan passes on (--raw-size): what the restore's dry run says.
    dry = json.loads(sandbox.fab("restore", f"--file={name}", "--dry-run", "--json").stdout)
    raw = int(dry["commands"][0].split("--raw-size ", 1)[1].split()[0])
    # A backup of aimms-ops carries the properties of template1 and postgres (its preface).
    dump = DumpInfo(info["path"], "remote", info["size"], "gz", info["sha256"], info["sha256"],
                    tuple(db["name"] for db in info["databases"]), raw_size=raw,
                    properties=("template1", "postgres"))
    host = inventory.load(sandbox.inventory).host(None)
    planned = [c.line for c in restore.restore_commands(host, dump, None, lock=True)]

    recorder.clear()
    proc = sandbox.fab("restore", f"--file={name}", "--yes", "--no-safety-backup")
    assert proc.returncode == 0, proc.stderr
    received = recorder.commands()
    assert len(received) > len(planned)
    for i, (was, want) in enumerate(zip(received[-len(planned):], planned, strict=True)):
        assert was == want, f"command {i + 1} of the restore differs: {was[:120]!r}"

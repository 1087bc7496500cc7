"""Integration: hostile values for every argument of every task, through the real CLI.

Each value is refused with one line, or handled safely (a --dest is any local folder,
taken literally). Canaries prove that nothing ran: every injection would create a
file, and after each run that file exists neither here nor on the host, and the
host's backup dir holds nothing new. test_validation.py covers the same functions
with many more values, property-based.

Covering a new task is adding a row; a row whose task `fab -l` does not list fails.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from . import faults
from .conftest import REPO, fab_error_line

pytestmark = pytest.mark.integration

CANARY = f"/tmp/aimms-ops-canary-{uuid.uuid4().hex[:8]}"

#: The shapes of hostile input; {canary} is the file a successful injection creates.
VALUES = {
    "subshell": "$(touch {canary})",
    "backticks": "`touch {canary}`",
    "semicolon": "x;touch {canary}",
    "quotes": "' \"; touch {canary}; echo \"'",
    "pipe-amp": "x|touch {canary}&",
    "space-newline": "a b\ntouch {canary}",
    "dotdot": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "empty": "",
    "long": "x" * 5000,
    "dash": "-rf",
    "not-utf8": "\udcff\udcfe;touch {canary}",  # bytes that are not UTF-8, as argv has them
}

#: (task, option, other args, what a value may do: "refused", or "safe": any outcome but
#: a traceback or an injection; shapes that are legitimate values of the option).
#: {name} is a small backup on the host.
ARGUMENTS = [
    ("backup", "--label", [], "refused", {"dash"}),  # -rf: a backup ..._-rf.sql.gz
    ("download", "--file", ["--dest=out"], "refused", set()),
    ("download", "--dest", ["--file={name}"], "safe", set(VALUES)),  # any local folder
    ("restore", "--file", ["--no-safety-backup"], "refused", set()),
    ("restore", "--database", ["--file={name}"], "refused", set()),
    ("logs", "--lines", [], "refused", set()),
    ("-H", None, ["list-backups"], "refused", {"empty"}),  # -H '': no -H (Fabric's rule)
    ("verify", "--file", [], "refused", set()),
    ("rebuild-volume", "--file", ["--dry-run"], "refused", set()),
    ("rebuild-volume", "--drop-kept", ["--yes"], "refused", set()),
    ("status", "--max-age", [], "safe", set()),
    ("pin", "--file", [], "refused", set()),
    ("pin", "--reason", ["--file={name}"], "safe", set(VALUES)),  # any one line, literally
    ("unpin", "--file", [], "refused", set()),
]


@pytest.fixture(scope="module")
def small_backup(sandbox):
    assert sandbox.fab("install-backups").returncode == 0
    proc = sandbox.fab("backup", "--label=input")
    assert proc.returncode == 0, proc.stderr
    return next(b["name"] for b in json.loads(sandbox.fab("list-backups", "--json").stdout)
                if b["location"] == "remote")


def _no_canary(sandbox) -> str:
    """Assert no canary exists, here or on the host; return the host's backup dir listing."""
    assert not Path(CANARY).exists(), "an injected command ran here"
    proc = sandbox.ssh(f"test ! -e {CANARY} || echo CANARY; ls -1A ~/postgres-backups")
    out = proc.stdout.decode()
    assert "CANARY" not in out, "an injected command ran on the host"
    return out


def _listing(sandbox) -> str:
    return "\n".join(p.name for p in Path(sandbox.home, "postgres-backups").iterdir())


@pytest.mark.parametrize("task, option, others, outcome, legit", ARGUMENTS,
                         ids=[f"{t} {o or ''}" for t, o, *_ in ARGUMENTS])
def test_hostile_values(sandbox, small_backup, tmp_path, task, option, others, outcome, legit):
    """Every shape of VALUES for one argument, each its own command line, run in one
    process (tests/integration/cli_batch.py) to spare starting Fabric a dozen times."""
    name = task if option else others[0]
    faults.require_task(sandbox, name)
    others = [a.replace("{name}", small_backup) for a in others]
    listing = _listing(sandbox)
    runs, expect = [], []
    for shape, template in VALUES.items():
        value = template.format(canary=CANARY)
        args = [task, value, *others] if option is None else [task, f"{option}={value}",
                                                              *others]
        # Run from a folder of our own, three levels down, so that relative paths
        # (a --dest of ../../x) stay inside it.
        cwd = tmp_path / shape / "a" / "b" / "c"
        cwd.mkdir(parents=True)
        runs.append((["-r", str(REPO), *args], None, cwd))
        expect.append((shape, value, "safe" if shape in legit else outcome))
    for (shape, _value, must), proc in zip(expect, sandbox.fab_many(runs), strict=True):
        assert "Traceback" not in proc.stderr + proc.stdout, (shape, proc.stderr)
        if must == "refused":
            assert proc.returncode != 0, (shape, proc.stdout)
        if proc.returncode != 0:
            line = faults.error_line(proc)
            assert len(line) < 400, (shape, line)
            if must == "refused":  # refused before doing anything: that line alone
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                assert lines == [line], (shape, proc.stderr)
    # Nothing removes a canary: one look after the runs covers each of them.
    after = _no_canary(sandbox)
    new = set(after.split()) - set(listing.split())
    if option == "--reason":
        # A legitimate reason: the pin file beside the backup is all that is new.
        assert new <= {small_backup + ".pin"}, after
        sandbox.ssh(f"rm -f -- ~/postgres-backups/{small_backup}.pin")
    elif new:
        # A legitimate label: the new backup carries it, nothing else is new.
        assert task == "backup", after
        labels = {value for _, value, must in expect if must == "safe"}
        assert all(any(f.split(".")[0].endswith("_" + v) for v in labels) for f in new), new
        sandbox.ssh("cd ~/postgres-backups && rm -f -- " + " ".join(sorted(new)))
    assert set(listing.split()) <= set(after.split()), "a run removed a backup"
    # Nothing was written outside our folders, whatever the value.
    assert not list(REPO.glob("*touch*")) and not (REPO / "out").exists()


@pytest.mark.parametrize("content, match", [
    ("default_host: aidset\nhosts: {aidset: {backup_dir: 5}}\n", "hosts.aidset"),
    ("default_host: aidset\nhosts: {aidset: {bogus: $(touch CANARY)}}\n",
     "expected no such key"),
    ("[1, 2]\n", "expected a mapping"),
    ("default_host: aidset\nhosts: !!python/object/apply:os.system ['touch CANARY']\n",
     "YAML"),
], ids=["wrong type", "unknown key", "not a mapping", "python tag"])
def test_a_bad_inventory_stops_every_task_before_it_connects(sandbox, tmp_path, content, match):
    inv = tmp_path / "inv.yml"
    inv.write_text(content.replace("CANARY", CANARY))
    tasks = [["backup"], ["restore", "--file=latest", "--yes"], ["download"],
             ["prune", "--yes"], ["install-backups"]]
    for task, proc in zip(tasks, sandbox.fab_many([(t, inv, None) for t in tasks]),
                          strict=True):
        assert proc.returncode != 0, task
        line = fab_error_line(proc)
        assert match in line and str(inv) in line, (task, line)
        assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [line], task
    _no_canary(sandbox)

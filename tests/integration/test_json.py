"""Integration: ``--json`` on every task that makes, moves or restores something: one
JSON document on stdout (notes and progress on stderr), what the task did or would do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def made(sandbox):
    """A backup made with --json, and what it said."""
    assert sandbox.fab("install-backups").returncode == 0
    proc = sandbox.fab("backup", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_backup_check_logs_and_install_say_it_in_json(sandbox, made):
    listed = json.loads(sandbox.fab("list-backups", "--json").stdout)
    mine = next(b for b in listed if b["name"] == made["name"])
    assert made["host"] == "aidset" and made["size"] == mine["size"]
    assert made["sha256"] == mine["sha256"] and made["path"].endswith("/" + made["name"])
    assert made["downloaded"] is None and isinstance(made["pruned"], list)
    check, logs, install = sandbox.fab_many([
        (["check", "--json"], None, None), (["logs", "--lines=5", "--json"], None, None),
        (["install-backups", "--dry-run", "--json"], None, None)])
    got = json.loads(check.stdout)
    assert check.returncode == 0 and got["state"] == "OK" and got["exit_code"] == 0
    assert {c["name"] for c in got["checks"]} >= {"ssh", "postgres accepting connections"}
    lines = json.loads(logs.stdout)["lines"]
    assert len(lines) == 5 and all(isinstance(ln, str) for ln in lines)
    assert json.loads(install.stdout) == {"host": "aidset", "dry_run": True, "warnings": [],
                                          "changes": [], "pitr": None}


def test_pin_unpin_and_download_say_it_in_json(sandbox, made, tmp_path: Path):
    name = made["name"]
    pin, unpin, again = sandbox.fab_many([
        (["pin", f"--file={name}", "--reason=json test", "--json"], None, None),
        (["unpin", f"--file={name}", "--json"], None, None),
        (["unpin", f"--file={name}", "--json"], None, None)])
    assert json.loads(pin.stdout) == {"host": "aidset", "name": name, "pinned": True,
                                      "reason": "json test"}
    assert json.loads(unpin.stdout)["was_pinned"] is True
    assert json.loads(again.stdout)["was_pinned"] is False
    proc = sandbox.fab("download", f"--file={name}", f"--dest={tmp_path}", "--json")
    got = json.loads(proc.stdout)
    assert got["sha256"] == made["sha256"] and Path(got["path"]) == tmp_path / name
    assert (tmp_path / name).stat().st_size == got["size"] == made["size"]


def test_restore_says_its_plan_and_what_it_restored_in_json(sandbox, made):
    name = made["name"]
    dry = sandbox.fab("restore", f"--file={name}", "--database=aimms_web", "--dry-run",
                      "--json")
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["restored"] is None
    assert plan["plan"]["host"] == "aidset" and "aimms_web" in plan["plan"]["dump holds"]
    assert len(plan["commands"]) >= 1 and "restore-stream.sh" in plan["commands"][0]
    before = sandbox.checksums()
    proc = sandbox.fab("restore", f"--file={name}", "--database=aimms_web", "--yes",
                       "--no-safety-backup", "--json")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert done["commands"] == plan["commands"]
    assert done["restored"]["databases"] == ["aimms_web"]
    assert list(done["restored"]["aside"]) == ["aimms_web"]
    assert {t["table"] for t in done["restored"]["tables"]} >= {"public.orders"}
    assert sandbox.checksums() == before
    undo, drop = sandbox.fab_many([
        (["restore-undo", "--dry-run", "--json"], None, None),
        (["drop-replaced", "--dry-run", "--json"], None, None)])
    aside = done["restored"]["aside"]["aimms_web"]
    assert json.loads(undo.stdout)["put_back"] == [{"database": "aimms_web", "aside": aside}]
    dropped = json.loads(drop.stdout)
    assert dropped["dry_run"] and aside in [d["name"] for d in dropped["dropped"]]
    assert dropped["done"] == []
    sandbox.fab("drop-replaced", "--yes")


def test_info_shows_the_whole_state_on_one_screen(sandbox, made):
    screen, as_json = sandbox.fab_many([(["info"], None, None),
                                        (["info", "--json"], None, None)])
    got = json.loads(as_json.stdout)
    assert got["host"] == "aidset" and got["exit_code"] == as_json.returncode
    assert got["backups_on_the_host"]["count"] >= 1
    assert got["you_would_lose_now"] is not None and got["you_would_lose_now"] < 600
    assert got["next_backup"].endswith("Z") and got["last_backup"]["result"] == "ok"
    assert screen.stdout.startswith("AIMMS-OPS ")
    for what in ("backups on the host", "last backup", "next backup", "you would lose now",
                 "space", "set aside by restores"):
        assert what in screen.stdout, what

"""Fabric's ``--dry``: every task either runs as its own dry run, only reads, or is
refused in one line before it connects (``fab --dry restore`` once restored for real)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from invoke import Config, Context, Exit

from aimms_ops.cli import ns
from aimms_ops.cli.base import ops_task

#: Tasks that only read: --dry runs them as they are.
READS_ONLY = {"check", "status", "info", "list-backups", "logs", "volumes"}


def dry_context() -> Context:
    return Context(Config(overrides={"run": {"dry": True}}))


def test_every_task_has_a_dry_run_only_reads_or_is_refused():
    for name in ns.task_names:
        task = ns[name]
        params = inspect.signature(task.body.__wrapped__).parameters
        if name in READS_ONLY or "dry_run" in params:
            continue
        with pytest.raises(Exit) as exc:
            task(dry_context())  # refused before anything: no inventory, no connection
        assert str(exc.value.message).startswith(f"error: fab --dry: {name} has no dry run")
        assert exc.value.code == 2


def test_a_task_with_a_dry_run_runs_as_one_under_fab_dry():
    seen = {}

    @ops_task()
    def job(c, dry_run=False):
        seen["dry_run"] = dry_run

    job(dry_context())
    assert seen == {"dry_run": True}
    job(Context())
    assert seen == {"dry_run": False}


def test_every_task_has_json():
    """``--json`` on every task, with its help: its result as one JSON document on stdout.
    (In a process of its own: Invoke takes a task's help texts away once it has built
    its arguments.)"""
    lacking = [name for name in ns.task_names
               if "json" not in inspect.signature(ns[name].body.__wrapped__).parameters]
    assert lacking == []
    code = ("from aimms_ops.cli import ns\n"
            "print(' '.join(n for n in ns.task_names if not ns[n].help.get('json')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [], f"--json without help text: {out}"


def test_check_status_doctor_and_info_each_say_their_one_job_and_point_to_the_others():
    """Four tasks look at the host; each --help says which question it answers."""
    jobs = {"check": "Can aimms-ops work on the host now?",
            "status": "Are the backups good right now?",
            "doctor": "Why do the backups fail?",
            "info": "The whole state on one screen"}
    for name, question in jobs.items():
        doc = ns[name].body.__doc__ or ""
        assert doc.startswith(question), name
        others = [f"fab {o}" for o in jobs if o != name and o != "info"]
        assert name == "info" or all(o in doc for o in others), (name, others)


@pytest.mark.parametrize("name", ["verify", "download", "pin", "unpin"])
@pytest.mark.parametrize("file", ["", "../x", "x; rm -rf ~"])
def test_a_file_that_names_no_backup_is_refused_before_anything(monkeypatch, tmp_path,
                                                                name, file):
    monkeypatch.setenv("AIMMS_OPS_INVENTORY", str(tmp_path / "none.yml"))  # never read
    with pytest.raises(Exit) as exc:
        ns[name](Context(), file=file)
    assert "not a backup name" in str(exc.value.message) or \
        "--file is required" in str(exc.value.message), exc.value.message
    assert exc.value.code != 0

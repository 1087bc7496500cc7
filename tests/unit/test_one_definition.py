"""Each fact both sides of the connection share is defined once: a second definition, in
Python or in a host script, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aimms_ops.core import defaults, lock, retention
from aimms_ops.host import bundle, shell

PACKAGE = shell.PACKAGE_DIR
SCRIPTS = sorted((PACKAGE / "scripts").glob("*.sh"))
SOURCES = sorted(p for p in PACKAGE.rglob("*.py"))


def _files_with(pattern: str, files: list[Path]) -> list[str]:
    rx = re.compile(pattern)
    return [str(p.relative_to(PACKAGE)) for p in files
            if any(rx.search(line) for line in p.read_text().splitlines()
                   if not line.lstrip().startswith("#"))]


@pytest.mark.parametrize("name", sorted(lock.LOCK_FILES.values()))
def test_each_lock_file_is_named_in_one_place(name):
    assert _files_with(re.escape(name), SCRIPTS + SOURCES) == ["core/lock.py"]


def test_the_scripts_take_locks_only_through_the_one_model():
    """No script locks a file or writes a holder's note by itself (the note of an offsite
    sync once went to another file than a backup's, and waiters were told 'unknown')."""
    assert _files_with(r"\bflock\b", SCRIPTS) == []
    assert _files_with(r"\.owner", SCRIPTS) == []


@pytest.mark.parametrize("label", retention.SAFETY_LABELS)
def test_the_safety_labels_are_defined_once(label):
    assert _files_with(re.escape(label), SCRIPTS + SOURCES) == ["core/retention.py"]


def test_the_scripts_format_no_unit_and_measure_no_size_drop_themselves():
    assert _files_with(r"\bnumfmt\b", SCRIPTS) == []
    assert _files_with(r"median", SCRIPTS) == []


@pytest.mark.parametrize("key", sorted(defaults.SCRIPT_DEFAULTS))
def test_the_scripts_take_their_defaults_from_the_one_table(key):
    """``${KEY:-600}`` in a script would be a second default: they are rendered in."""
    literal = rf"\b{key}=\$\{{{key}:-[^@]" + "|" + rf"\b{key}=[0-9]"
    assert _files_with(literal, SCRIPTS) == []
    for script in ("backup-postgres.sh",):
        text = shell.script_text(script)
        assert "@DEFAULT_" not in text
    value = str(defaults.SCRIPT_DEFAULTS[key])
    if key in ("LOCK_TIMEOUT", "PING_TIMEOUT"):
        # Nowhere else in the Python either: the inventory's defaults are these.
        rx = rf"(timeout\w*\s*[:=]\s*(int\s*=\s*)?|,\s*){value}\)?$"
        assert _files_with(rx, SOURCES) == []


def test_no_command_line_sent_is_over_16_kb():
    """The scripts and the host program go once per version, as a file; a command names
    them (Linux takes at most 128 KiB in one argument)."""
    longest = max((bundle.script_command(p.name, ["x"] * 20) for p in SCRIPTS), key=len)
    assert len(longest) < 1024
    assert len(bundle.upload_command()) < 16 * 1024
    from aimms_ops.monitor import hostfacts
    from tests.unit.test_health_unit import _host

    assert len(hostfacts.gather_command(_host())) < 16 * 1024


def test_lint_checks_the_host_program_against_the_python_it_claims():
    from aimms_ops.core import HOST_PYTHON

    makefile = (PACKAGE.parent / "Makefile").read_text()
    claimed = re.search(r"^HOST_PYTHON := (\S+)$", makefile, re.M)
    assert claimed is not None and claimed.group(1) == ".".join(map(str, HOST_PYTHON))
    assert all(f"aimms_ops/{p}" in makefile for p in bundle.PROGRAM_PACKAGES)

"""The README people read: a one-screen start, then the three runbooks within its first
150 lines, every task in its reference, and no word it never explains."""

from __future__ import annotations

from pathlib import Path

from aimms_ops.cli import ns

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_start_and_the_three_runbooks_come_first():
    head = README.splitlines()[:150]
    for heading in ("## Start here", "## Runbooks", "### Restore now",
                    "### The volume is broken: rebuild it", "### aidset is gone"):
        assert any(line.startswith(heading) for line in head), heading


def test_every_task_has_its_section_and_the_manual_procedure_is_explained():
    for name in ns.task_names:
        assert f"### `fab {name}" in README or f"`fab {name}" in README, name
    assert "the seed" not in README.lower()
    assert "*The manual procedure* below means" in README


def test_every_task_says_what_it_does_in_one_whole_line_of_fab_l():
    """`fab -l` shows the first line of each task's docstring: a whole sentence, not the
    start of one cut at the line's end."""
    for name in ns.task_names:
        first = (ns[name].body.__doc__ or "").strip().splitlines()[0]
        assert first.rstrip().endswith((".", "?")), (name, first)

"""What the terminal shows, and what a pipe gets (issue 24, items 6 and 7): the exit code
kept when the reader goes away (``fab status | head -1``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: A task's output as the status task writes it: a summary line, a long table, its code.
CHILD = textwrap.dedent("""
    import sys
    from aimms_ops.output import console as output
    output.write("AIMMS-OPS WARNING - a summary\\n")
    output.table(["name", "detail"], [[f"row {i}", "x" * 60] for i in range(3000)])
    output.print_json({"more": "after the reader is gone"})
    output.note("the task went on to its end")
    sys.exit(1)
""")


@pytest.mark.parametrize("code", [0, 1, 2])
def test_the_exit_code_is_the_tasks_own_when_the_reader_goes_away(code):
    child = subprocess.Popen([sys.executable, "-c", CHILD.replace("sys.exit(1)",
                                                                  f"sys.exit({code})")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # head -1: gone after the first line
    err = child.stderr.read()
    assert child.wait(timeout=60) == code
    assert first.startswith("AIMMS-OPS WARNING")
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "the task went on to its end" in err

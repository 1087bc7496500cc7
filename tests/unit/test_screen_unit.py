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


# --- 80 columns: a backup name is never broken (issue 24, item 7) --------------------------

NAMES = ["aimms_postgres_20261207_015734_input.sql.gz", "aimms_postgres_20261207_015211.sql.gz"]
SHA = "4511e8d8df26e63f2f3ab68d36b58bb62eb04a6c7e1c8fac896e53108b971637"


def _shown(width: int, columns: list[str], rows: list[list[str]], monkeypatch) -> str:
    import io

    from rich.console import Console

    from aimms_ops.output import console as output

    buf = io.StringIO()
    monkeypatch.setattr(output, "out", lambda: Console(file=buf, width=width, color_system=None))
    output.table(columns, rows, title="backups on aidset")
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize(("columns", "rows"), [
    (["name", "action", "rule", "why"],  # prune
     [[n, "keep", "within", "younger than 7 days (0d old), and the newest 3 are kept"]
      for n in NAMES]),
    (["name", "size", "sha256", "seconds"], [[n, "1.8 MiB", SHA, "1.0 s"] for n in NAMES]),
    (["name", "size", "age", "checksum", "pinned"],  # list-backups, a pin with its reason
     [[n, "138.7 MiB", "2d03h", "recorded", "before the upgrade of the application server"]
      for n in NAMES]),
])
def test_backup_names_are_never_broken_the_other_columns_fold(width, columns, rows,
                                                                monkeypatch):
    text = _shown(width, columns, rows, monkeypatch)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    for name in NAMES:
        assert any(name in line for line in lines), text  # whole, on one line


def test_a_column_without_backup_names_folds_as_before(monkeypatch):
    text = _shown(80, ["detail"], [["x" * 200]], monkeypatch)
    assert all(len(line) <= 80 for line in text.splitlines())


# --- one unit format: IEC, one decimal (issue 24, item 8) ---------------------------------

def test_rebuild_shows_sizes_in_the_one_unit_format():
    from aimms_ops.rebuild import preflight
    from aimms_ops.restore.source import DumpInfo

    dump = DumpInfo(source="/b/aimms_postgres_20261124_020001.sql.gz", location="remote",
                    size=72916234, format="gz", sha256="a" * 64, sha256_recorded="a" * 64,
                    databases=("aimms_web",))
    detail = preflight.check_backup(dump)[1]
    assert "(remote, 69.5 MiB)" in detail and "bytes" not in detail

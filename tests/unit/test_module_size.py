"""No module of aimms_ops grows past MAX_LINES: a longer one is split by capability."""

from __future__ import annotations

from pathlib import Path

import aimms_ops

MAX_LINES = 400
PACKAGE = Path(aimms_ops.__file__).resolve().parent


def test_no_module_is_over_the_limit():
    sizes = {p.relative_to(PACKAGE.parent).as_posix(): len(p.read_text(encoding="utf-8")
                                                          .splitlines())
             for p in sorted(PACKAGE.rglob("*.py"))}
    assert len(sizes) > 50  # the package itself, not an empty folder
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by capability): {over}"

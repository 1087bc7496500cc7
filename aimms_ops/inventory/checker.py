"""Checking the inventory's values: the walk that collects every problem (one line
each, naming its key) and the validators of its values."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aimms_ops.core.errors import OpsError, key_path, problem

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}")


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+")


_EXPECT = {
    "default_host": "the name of one of the hosts",
    "hosts": "a mapping of host names to settings",
    "backup_dir": "an absolute path",
    "backup_script": "an absolute path",
    "log_file": "an absolute path",
    "cron_schedule": 'a cron schedule of five fields, like "0 2 * * *"',
    "retention_days": "a whole number of days, at least 1",
    "compose": "a mapping with project_dir, file, project, postgres_service",
    "postgres": "a mapping with superuser",
    "volumes": "a mapping with postgres and redis volume names",
    "project_dir": "an absolute path",
    "file": "a file name or absolute path",
    "project": "a compose project name",
    "postgres_service": "a compose service name",
    "superuser": "a PostgreSQL role name",
    "postgres_volume": "a docker volume name",
}


class _Checker:
    """Walks the parsed YAML, collecting every problem (one line each, naming its key).

    ``fail`` records a problem and returns; ``mapping`` and ``value`` record theirs and
    give back what can still be walked (``None`` for a part that cannot), so one run
    finds all the problems. ``raise_if_any`` then raises them as one OpsError.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def ignored(self, key: str) -> None:
        """Record a key that is accepted but read by nothing."""
        self.warnings.append(f"warning: {self.path}: {key} is ignored (aimms-ops does not "
                             "use it) and may be removed from the inventory")

    def fail(self, key: str, expected: str, value: Any = None, *, missing: bool = False,
             unknown: bool = False) -> None:
        self.problems.append(problem(key, expected, value, missing=missing, unknown=unknown))

    def raise_if_any(self) -> None:
        """One OpsError for all the problems found: the file, then each key's problem."""
        if not self.problems:
            return
        if len(self.problems) == 1:
            msg = f"{self.path}: {self.problems[0]}"
        else:
            listed = "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
            msg = f"{self.path}: {len(self.problems)} problems: {listed}"
        raise OpsError(msg, "fix the inventory file")

    def mapping(self, data: Any, key: str, allowed: set[str],
                required: set[str]) -> dict | None:
        """``data`` when it is a mapping (unknown and missing keys recorded), else None."""
        if not isinstance(data, dict):
            self.fail(key or "top level", "a mapping", data)
            return None
        for k in data:
            if not isinstance(k, str) or k not in allowed:
                where = key_path(key, k)
                self.fail(where, "no such key; known keys: " + ", ".join(sorted(allowed)),
                          unknown=True)
        for k in sorted(required):
            if k not in data or data[k] is None:
                where = f"{key}.{k}" if key else k
                self.fail(where, _EXPECT.get(k, "a value"), missing=True)
        return data

    def value(self, data: dict, parent: str, k: str, check: Callable[[Any], bool],
              expected: str, default: Any = None) -> Any:
        if k not in data or data[k] is None:
            return default
        v = data[k]
        if not check(v):
            self.fail(f"{parent}.{k}" if parent else k, expected, v)
            return default
        return v


def _is_abs_path(v: Any) -> bool:
    return (isinstance(v, str) and v.startswith("/") and "\n" not in v and "\x00" not in v
            and ".." not in v.split("/"))


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_NAME.fullmatch(v))


def is_db_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_DB_NAME.fullmatch(v))


def _is_int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def is_cron_schedule(v: Any) -> bool:
    """True for a five-field cron schedule (or an @-shortcut such as @daily)."""
    if not isinstance(v, str):
        return False
    if v in {"@daily", "@weekly", "@hourly", "@monthly", "@midnight"}:
        return True
    fields = v.split()
    return len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields)

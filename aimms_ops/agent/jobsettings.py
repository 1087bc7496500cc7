"""The settings of a job on the host: the settings file, then the flags (which win).

The keys and flags are the table of ``aimms_ops.core.settings`` (the same that renders
the ``.conf`` install-backups writes and the flags ``fab backup`` passes); the defaults
are ``aimms_ops.core.defaults``. Without ``--config FILE`` the file beside the script
(its path + ``.conf``) is read when there is one, so that the manual procedure's bare
``backup-postgres.sh`` (and its cron line) works. Secret settings come on stdin with
``--settings-stdin`` (``KEY=VALUE`` lines), never on a command line.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

from aimms_ops.core import defaults, shellconf
from aimms_ops.core.settings import SECRETS_FLAG, SETTINGS

USAGE_STATUS = 64


class UsageError(Exception):
    """A bad setting or flag: one line, exit 64."""


def read_settings(argv: Sequence[str], beside: Union[str, Sequence[str]],
                  extra_flags: Dict[str, bool]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(settings, extra options) from the environment (as a sourced file would leave
    them), the settings file(s) and ``argv``.

    ``beside``: the settings file(s) read without ``--config``, the first that exists.
    ``extra_flags``: the job's own flags, each True when it takes a value (a repeated
    one keeps its values, one per line). Raises :class:`UsageError`.
    """
    values: Dict[str, str] = {k: str(v) for k, v in defaults.SCRIPT_DEFAULTS.items()}
    values.update({s.key: os.environ[s.key] for s in SETTINGS if os.environ.get(s.key)})
    configs = [argv[i + 1] if i + 1 < len(argv) else "" for i, a in enumerate(argv)
               if a == "--config"]
    candidates = [beside] if isinstance(beside, str) else list(beside)
    if not configs:
        configs = [c for c in candidates if c and os.path.isfile(c)][:1]
    for conf in configs:
        try:
            values.update(shellconf.read_into_environment(conf))
        except (OSError, shellconf.ConfError) as e:
            detail = e.strerror if isinstance(e, OSError) else str(e)
            raise UsageError("cannot read config file: %s (%s)" % (conf, detail)) from e
    by_flag = {s.flag: s for s in SETTINGS if s.flag}
    extra: Dict[str, str] = {}
    args: List[str] = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config":
            i += 2
            continue
        if arg == SECRETS_FLAG:
            secret = {s.key for s in SETTINGS if s.secret}
            for line in sys.stdin.read().splitlines():
                key, sep, value = line.partition("=")
                if sep and key in secret:
                    values[key] = value
            i += 1
            continue
        setting = by_flag.get(arg)
        if setting is not None:
            if setting.switch:
                values[setting.key] = "1"
                i += 1
            else:
                values[setting.key] = args[i + 1] if i + 1 < len(args) else ""
                i += 2
            continue
        if arg in extra_flags:
            if extra_flags[arg]:
                value = args[i + 1] if i + 1 < len(args) else ""
                extra[arg] = extra[arg] + "\n" + value if arg in extra else value
                i += 2
            else:
                extra[arg] = "1"
                i += 1
            continue
        raise UsageError("unknown argument: %s" % arg)
    return values, extra


def require(values: Dict[str, str], hint: str) -> None:
    """The settings every job needs."""
    if not values.get("BACKUP_DIR"):
        raise UsageError("BACKUP_DIR is not set (--backup-dir, or %s)" % hint)
    if not values.get("LOG_FILE"):
        raise UsageError("LOG_FILE is not set (--log-file)")
    if not values.get("COMPOSE_PROJECT"):
        raise UsageError("COMPOSE_PROJECT is not set (--project)")


def whole(values: Dict[str, str], key: str, low: Optional[int] = None,
          high: Optional[int] = None) -> int:
    """``values[key]`` as a whole number within [low, high], else a UsageError."""
    text = values.get(key, "")
    if not text.isdigit():
        raise UsageError("%s must be a whole number" % key)
    n = int(text)
    if low is not None and high is not None and not low <= n <= high:
        raise UsageError("%s must be %d..%d" % (key, low, high))
    if low is not None and n < low:
        raise UsageError("%s must be at least %d" % (key, low))
    return n

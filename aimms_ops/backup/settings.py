"""The backup script's settings for a host of the inventory: the installed ``.conf`` and the flags.

The settings themselves, their flags and kinds, are one table (:mod:`aimms_ops.core.settings`,
which also renders the scripts' flag parsing); :data:`VALUES` says what each one is for a
host. It gives ``fab backup`` its flags (:func:`script_args`) and ``install-backups`` the
settings file beside the script (:func:`script_settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aimms_ops.core import defaults
from aimms_ops.core.settings import SECRETS_FLAG, SETTINGS, Setting
from aimms_ops.inventory.model import Host


def _ping(attr: str, default: str = "") -> Callable[[Host], str]:
    return lambda h: str(getattr(h.ping, attr) or default) if h.ping else default


#: Each setting's value for a host, by its key (None: not set for this host).
VALUES: dict[str, Callable[[Host], str | None]] = {
    "BACKUP_DIR": lambda h: h.backup_dir,
    "LOG_FILE": lambda h: h.log_file,
    "COMPOSE_PROJECT": lambda h: h.compose.project,
    "COMPOSE_SERVICE": lambda h: h.compose.postgres_service,
    "PG_SUPERUSER": lambda h: h.postgres.superuser,
    "RETENTION_DAYS": lambda h: str(h.policy.within_days),
    "MIN_KEEP": lambda h: str(h.policy.min_keep),
    "LOCK_TIMEOUT": lambda h: str(h.lock_timeout),
    "COMPRESSION": lambda h: h.compression,
    "RETENTION_RULES": lambda h: h.policy.rules_text,
    "SAFETY_PIN_DAYS": lambda h: str(h.safety_pin_days),
    "ALLOW_SHRINK": lambda h: "1" if h.allow_shrink else "0",
    "PING_URL": _ping("url"),
    "PING_KIND": _ping("kind", defaults.PING_KIND),
    "PING_URL_VERIFY": _ping("verify_url"),
    "PING_URL_DRILL": _ping("drill_url"),
    "PING_TIMEOUT": _ping("timeout", str(defaults.PING_TIMEOUT)),
    "OFFSITE_CONFIG": lambda h: h.layout.offsite_config if h.offsite else None,
    "METRICS_DIR": lambda h: h.metrics_dir,
}


def _values(host: Host) -> Iterator[tuple[Setting, str | None]]:
    """Each setting of the table, in its order, with its value for ``host``."""
    for s in SETTINGS:
        yield s, VALUES[s.key](host)


def script_settings(host: Host) -> dict[str, str]:
    """The backup script's settings for ``host``, as its settings file holds them."""
    return {s.key: v for s, v in _values(host) if v is not None}


def script_args(host: Host, *extra: str, keys: tuple[str, ...] | None = None) -> list[str]:
    """The flags that give a script every setting of ``host`` (or those in ``keys``).

    A secret setting is not among them: :data:`SECRETS_FLAG` is, and the caller sends
    :func:`secret_input` on the script's stdin.
    """
    args: list[str] = []
    secrets = False
    for s, value in _values(host):
        if s.flag is None or value is None or (keys is not None and s.key not in keys):
            continue
        if s.secret:
            secrets = True
        elif s.switch:
            args += [s.flag] if value == "1" else []
        else:
            args += [s.flag, value]
    return [*args, *([SECRETS_FLAG] if secrets else []), *extra]


def secret_input(host: Host) -> bytes:
    """The secret settings of ``host`` as the script reads them on stdin: ``KEY=VALUE``
    lines (the inventory allows no newline in them)."""
    return "".join(f"{s.key}={value}\n" for s, value in _values(host)
                   if s.secret and s.flag is not None and value is not None).encode()

"""The backup script's settings: one table that renders the installed ``.conf`` and the flags.

:data:`SETTINGS` is the only list of them. It gives ``fab backup`` its flags
(:func:`script_args`), ``install-backups`` the settings file beside the script
(:func:`script_settings`), and the backup script its flag parsing: its
``# @include settings-flags.sh`` line becomes :func:`flag_cases` when it is rendered.
The variables and flags are ``aimms_ops.core.flags``, which the host program's deep
verify parses its command line with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aimms_ops.core import defaults
from aimms_ops.core.flags import FLAGS, SECRETS_FLAG, VERIFY_KEYS

__all__ = ["SECRETS_FLAG", "SETTINGS", "VERIFY_KEYS", "Setting", "flag_cases", "script_args",
           "script_settings", "secret_input"]
from aimms_ops.inventory.model import Host


@dataclass(frozen=True)
class Setting:
    """One setting: its shell variable, its flag (None: the settings file only), its value
    (the variable, the flag, switch and secret: ``aimms_ops.core.flags``)."""

    key: str
    flag: str | None
    value: Callable[[Host], str | None]  # None: not set for this host
    switch: bool = False  # a flag without a value, given when the value is "1"
    #: Never on a command line: fab sends it on the script's stdin (:func:`secret_input`).
    secret: bool = False


def _ping(attr: str, default: str = "") -> Callable[[Host], str]:
    return lambda h: str(getattr(h.ping, attr) or default) if h.ping else default


#: The value of each setting of ``core.flags.FLAGS`` for a host.
_VALUES: dict[str, Callable[[Host], str | None]] = {
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
    "PING_TIMEOUT": _ping("timeout", str(defaults.PING_TIMEOUT)),
    "OFFSITE_CONFIG": lambda h: h.layout.offsite_config if h.offsite else None,
}

SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.key, f.flag, _VALUES[f.key], f.switch, f.secret) for f in FLAGS)


def script_settings(host: Host) -> dict[str, str]:
    """The backup script's settings for ``host``, as its settings file holds them."""
    values = {s.key: s.value(host) for s in SETTINGS}
    return {k: v for k, v in values.items() if v is not None}


def script_args(host: Host, *extra: str, keys: tuple[str, ...] | None = None) -> list[str]:
    """The flags that give a script every setting of ``host`` (or those in ``keys``).

    A secret setting is not among them: :data:`SECRETS_FLAG` is, and the caller sends
    :func:`secret_input` on the script's stdin.
    """
    args: list[str] = []
    secrets = False
    for s in SETTINGS:
        value = s.value(host)
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
    lines = []
    for s in SETTINGS:
        value = s.value(host)
        if s.secret and s.flag is not None and value is not None:
            lines.append(f"{s.key}={value}\n")
    return "".join(lines).encode()


def flag_cases() -> str:
    """The ``case`` arms that parse these flags in the scripts (``settings-flags.sh``)."""
    arms = []
    for s in SETTINGS:
        if s.flag is None:
            continue
        body = f"{s.key}=1" if s.switch else f"{s.key}=${{2:-}}; shift"
        arms.append(f"        {s.flag}) {body} ;;")
    secret = [s for s in SETTINGS if s.secret and s.flag is not None]
    reads = " ".join(f"{s.key}=*) {s.key}=${{_line#{s.key}=}} ;;" for s in secret)
    arms.append(f"        {SECRETS_FLAG}) while IFS= read -r _line; do case $_line in "
                f"{reads} esac; done ;;")
    return "\n".join(arms)

"""The backup script's settings: one table that renders the installed ``.conf`` and the flags.

:data:`SETTINGS` is the only list of them. It gives ``fab backup`` its flags
(:func:`script_args`), ``install-backups`` the settings file beside the script
(:func:`script_settings`), and the scripts themselves their flag parsing: the
``# @include settings-flags.sh`` line of ``backup-postgres.sh`` and
``verify-backup.sh`` becomes :func:`flag_cases` when the script is rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aimms_ops.core import defaults
from aimms_ops.inventory.model import Host


@dataclass(frozen=True)
class Setting:
    """One setting: its shell variable, its flag (None: the settings file only), its value."""

    key: str
    flag: str | None
    value: Callable[[Host], str | None]  # None: not set for this host
    switch: bool = False  # a flag without a value, given when the value is "1"
    #: Never on a command line (the host's process list shows it to every user): fab
    #: sends it on the script's stdin (:func:`secret_input`), cron's run reads the
    #: settings file. The flag stays, for a run by hand.
    secret: bool = False


def _ping(attr: str, default: str = "") -> Callable[[Host], str]:
    return lambda h: str(getattr(h.ping, attr) or default) if h.ping else default


SETTINGS: tuple[Setting, ...] = (
    Setting("BACKUP_DIR", "--backup-dir", lambda h: h.backup_dir),
    Setting("LOG_FILE", "--log-file", lambda h: h.log_file),
    Setting("COMPOSE_PROJECT", "--project", lambda h: h.compose.project),
    Setting("COMPOSE_SERVICE", "--service", lambda h: h.compose.postgres_service),
    Setting("PG_SUPERUSER", "--superuser", lambda h: h.postgres.superuser),
    Setting("RETENTION_DAYS", "--retention-days", lambda h: str(h.policy.within_days)),
    Setting("MIN_KEEP", "--min-keep", lambda h: str(h.policy.min_keep)),
    Setting("LOCK_TIMEOUT", "--lock-timeout", lambda h: str(h.lock_timeout)),
    # gzip (.sql.gz) or zstd (.sql.zst): what the backups, safety copies included, are made with
    Setting("COMPRESSION", "--compression", lambda h: h.compression),
    Setting("RETENTION_RULES", "--retention-rules", lambda h: h.policy.rules_text),
    Setting("SAFETY_PIN_DAYS", "--safety-pin-days", lambda h: str(h.safety_pin_days)),
    Setting("ALLOW_SHRINK", "--allow-shrink", lambda h: "1" if h.allow_shrink else "0",
            switch=True),
    Setting("PING_URL", "--ping-url", _ping("url"), secret=True),
    Setting("PING_KIND", "--ping-kind", _ping("kind", defaults.PING_KIND)),
    Setting("PING_URL_VERIFY", None, _ping("verify_url")),
    Setting("PING_TIMEOUT", "--ping-timeout", _ping("timeout", str(defaults.PING_TIMEOUT))),
    # the targets the script pushes to after a good backup (offsite.sh)
    Setting("OFFSITE_CONFIG", "--offsite-config",
            lambda h: h.layout.offsite_config if h.offsite else None),
)

#: The settings the deep verify takes from the command line (it reads the rest, for its
#: pings, from the settings file when cron runs it).
VERIFY_KEYS = ("BACKUP_DIR", "LOG_FILE", "COMPOSE_PROJECT", "COMPOSE_SERVICE", "PG_SUPERUSER")


def script_settings(host: Host) -> dict[str, str]:
    """The backup script's settings for ``host``, as its settings file holds them."""
    values = {s.key: s.value(host) for s in SETTINGS}
    return {k: v for k, v in values.items() if v is not None}


#: The flag that makes a script read its secret settings from stdin (``KEY=VALUE`` lines).
SECRETS_FLAG = "--settings-stdin"


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

"""The backup script's settings: one table of their names and flags.

:data:`SETTINGS` is the only list of them. It gives the host program's backup and deep
verify their flags (``agent/jobsettings.py``), and ``fab backup`` and
``install-backups`` the order and kind of each setting; what each one is for a host of
the inventory is :data:`aimms_ops.backup.settings.VALUES`, keyed by :attr:`Setting.key`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One setting: its shell variable, its flag (None: the settings file only)."""

    key: str
    flag: str | None
    switch: bool = False  # a flag without a value, given when the value is "1"
    #: Never on a command line (the host's process list shows it to every user): fab
    #: sends it on the script's stdin (``secret_input``), cron's run reads the
    #: settings file. The flag stays, for a run by hand.
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("BACKUP_DIR", "--backup-dir"),
    Setting("LOG_FILE", "--log-file"),
    Setting("COMPOSE_PROJECT", "--project"),
    Setting("COMPOSE_SERVICE", "--service"),
    Setting("PG_SUPERUSER", "--superuser"),
    Setting("RETENTION_DAYS", "--retention-days"),
    Setting("MIN_KEEP", "--min-keep"),
    Setting("LOCK_TIMEOUT", "--lock-timeout"),
    # gzip (.sql.gz) or zstd (.sql.zst): what the backups, safety copies included, are made with
    Setting("COMPRESSION", "--compression"),
    Setting("RETENTION_RULES", "--retention-rules"),
    Setting("SAFETY_PIN_DAYS", "--safety-pin-days"),
    Setting("ALLOW_SHRINK", "--allow-shrink", switch=True),
    Setting("PING_URL", "--ping-url", secret=True),
    Setting("PING_KIND", "--ping-kind"),
    Setting("PING_URL_VERIFY", None),
    Setting("PING_URL_DRILL", None),
    Setting("PING_TIMEOUT", "--ping-timeout"),
    # the targets the host program pushes to after a good backup (agent/offsite.py)
    Setting("OFFSITE_CONFIG", "--offsite-config"),
    # where the backup and the drill write their Prometheus textfile metrics (core/metrics.py)
    Setting("METRICS_DIR", "--metrics-dir"),
)

#: The settings the deep verify takes from the command line (it reads the rest, for its
#: pings, from the settings file when cron runs it).
VERIFY_KEYS = ("BACKUP_DIR", "LOG_FILE", "COMPOSE_PROJECT", "COMPOSE_SERVICE", "PG_SUPERUSER")
#: The drill's: the verify's, and where its sources and metrics are.
DRILL_KEYS = (*VERIFY_KEYS, "LOCK_TIMEOUT", "OFFSITE_CONFIG", "METRICS_DIR")

#: The flag that makes a script read its secret settings from stdin (``KEY=VALUE`` lines).
SECRETS_FLAG = "--settings-stdin"

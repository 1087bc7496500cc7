"""The settings of the host's jobs as the scripts and the host program take them: each
one's shell variable and flag, the one table.

``aimms_ops.backup.settings`` gives each its value for a host (the installed ``.conf``
and the flags ``fab`` passes); the backup script's flag parsing is rendered from it
(``settings-flags.sh``); the host program's deep verify (``agent/verify.py``) parses
its command line with it.
"""

from typing import NamedTuple, Optional


class Flag(NamedTuple):
    """A setting: its shell variable, its flag (None: the settings file only)."""

    key: str
    flag: Optional[str]
    #: A flag without a value, given when the value is "1".
    switch: bool = False
    #: Never on a command line (the host's process list shows it to every user): fab
    #: sends it on the script's stdin (SECRETS_FLAG), cron's run reads the settings
    #: file. The flag stays, for a run by hand.
    secret: bool = False


FLAGS = (
    Flag("BACKUP_DIR", "--backup-dir"),
    Flag("LOG_FILE", "--log-file"),
    Flag("COMPOSE_PROJECT", "--project"),
    Flag("COMPOSE_SERVICE", "--service"),
    Flag("PG_SUPERUSER", "--superuser"),
    Flag("RETENTION_DAYS", "--retention-days"),
    Flag("MIN_KEEP", "--min-keep"),
    Flag("LOCK_TIMEOUT", "--lock-timeout"),
    # gzip (.sql.gz) or zstd (.sql.zst): what the backups, safety copies included, are made with
    Flag("COMPRESSION", "--compression"),
    Flag("RETENTION_RULES", "--retention-rules"),
    Flag("SAFETY_PIN_DAYS", "--safety-pin-days"),
    Flag("ALLOW_SHRINK", "--allow-shrink", switch=True),
    Flag("PING_URL", "--ping-url", secret=True),
    Flag("PING_KIND", "--ping-kind"),
    Flag("PING_URL_VERIFY", None),
    Flag("PING_TIMEOUT", "--ping-timeout"),
    # the targets the script pushes to after a good backup (offsite.sh)
    Flag("OFFSITE_CONFIG", "--offsite-config"),
)

#: The flag that makes a job read its secret settings from stdin (``KEY=VALUE`` lines).
SECRETS_FLAG = "--settings-stdin"

#: The settings the deep verify takes from the command line (it reads the rest, for its
#: pings, from the settings file when cron runs it).
VERIFY_KEYS = ("BACKUP_DIR", "LOG_FILE", "COMPOSE_PROJECT", "COMPOSE_SERVICE", "PG_SUPERUSER")

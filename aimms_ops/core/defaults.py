"""The defaults of the settings, the one definition: the inventory's (an unset key), the
settings table's, and the host scripts' (a setting given neither by flag nor by the
settings file), which get them rendered in as ``@DEFAULT_KEY@``."""

#: Seconds a job waits for the lock another one holds.
LOCK_TIMEOUT = 600
#: Seconds a ping may take, its retries included.
PING_TIMEOUT = 45
PING_KIND = "healthchecks"
#: Days a safety copy (pre-restore, pre-rebuild) stays pinned.
SAFETY_PIN_DAYS = 14
#: The newest good backups retention keeps whatever their age.
MIN_KEEP = 3
#: Days a backup is kept by the backup script run without settings.
RETENTION_DAYS = 7
GZIP_LEVEL = 1
ZSTD_LEVEL = 1
COMPRESSOR = "auto"
#: The compose service of postgres, and the role pg_dumpall connects as.
COMPOSE_SERVICE = "postgres"
PG_SUPERUSER = "postgres"

#: What the host scripts are given (``@DEFAULT_KEY@``).
SCRIPT_DEFAULTS = {
    "LOCK_TIMEOUT": LOCK_TIMEOUT, "PING_TIMEOUT": PING_TIMEOUT, "PING_KIND": PING_KIND,
    "SAFETY_PIN_DAYS": SAFETY_PIN_DAYS, "MIN_KEEP": MIN_KEEP,
    "RETENTION_DAYS": RETENTION_DAYS, "GZIP_LEVEL": GZIP_LEVEL, "ZSTD_LEVEL": ZSTD_LEVEL,
    "COMPRESSOR": COMPRESSOR, "COMPOSE_SERVICE": COMPOSE_SERVICE,
    "PG_SUPERUSER": PG_SUPERUSER, "ALLOW_SHRINK": 0,
}

"""The inventory's model: which hosts exist and where everything lives on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aimms_ops.core import defaults
from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.layout import HostLayout
from aimms_ops.core.names import DEFAULT_COMPRESSION
from aimms_ops.core.retention import Policy
from aimms_ops.inventory.drill import Drill
from aimms_ops.inventory.offsite import Offsite

ENV_VAR = "AIMMS_OPS_INVENTORY"


DEFAULT_FILE = "inventory.yml"


@dataclass(frozen=True)
class Compose:
    project_dir: str
    file: str
    project: str
    postgres_service: str

    @property
    def file_path(self) -> str:
        """The compose file's absolute path on the host."""
        if self.file.startswith("/"):
            return self.file
        return f"{self.project_dir.rstrip('/')}/{self.file}"


@dataclass(frozen=True)
class Postgres:
    superuser: str


#: Keys of ``postgres`` that nothing reads: still accepted (any value), each with a
#: warning that it is ignored and may be removed. They go in a later release.
IGNORED_POSTGRES_KEYS = ("app_user", "databases")


@dataclass(frozen=True)
class Volumes:
    postgres: str
    redis: str

    def names(self) -> tuple[str, ...]:
        return (self.postgres, self.redis)


@dataclass(frozen=True)
class Ping:
    """Where the host's jobs report how they went (``ping``)."""

    url: str
    kind: str = "healthchecks"
    verify_url: str | None = None
    drill_url: str | None = None
    #: Seconds a ping may take in all, retries included (``ping.timeout``).
    timeout: int = defaults.PING_TIMEOUT


@dataclass(frozen=True)
class Pitr:
    """Point-in-time recovery on pgBackRest (``pitr:``; core/pitr.py)."""

    #: the repository, a folder on the host
    repo: str
    #: a derived image that has pgbackrest (default: built from the live image)
    image: str | None = None
    full_schedule: str = "0 3 * * 0"
    diff_schedule: str = "0 3 * * 1-6"
    #: full backups kept (with the differentials and WAL they need)
    retention_full: int = 2
    #: the offsite target the repository is copied to (every minute), if any
    offsite: str | None = None


@dataclass(frozen=True)
class Host:
    """One host of the inventory, as the tasks see it."""

    name: str
    backup_dir: str
    backup_script: str
    log_file: str
    cron_schedule: str
    compose: Compose
    postgres: Postgres
    volumes: Volumes
    #: retention_days (within_days), the retention mapping's GFS counts, min_keep
    policy: Policy = field(default_factory=Policy)
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    verify_schedule: str | None = None
    lock_timeout: int = defaults.LOCK_TIMEOUT
    safety_pin_days: int = defaults.SAFETY_PIN_DAYS
    allow_shrink: bool = False
    ping: Ping | None = None
    #: how the backups are compressed: gzip (.sql.gz) or zstd (.sql.zst); names.COMPRESSIONS
    compression: str = DEFAULT_COMPRESSION

    offsite: Offsite = field(default_factory=Offsite)
    pitr: Pitr | None = None
    #: the drill (inventory/drill.py) and where the metrics files go (None: none written)
    drill: Drill | None = None
    metrics_dir: str | None = None

    @property
    def layout(self) -> HostLayout:
        """Where aimms-ops keeps its files on this host."""
        return HostLayout(self.backup_dir, self.log_file, self.backup_script)


@dataclass(frozen=True)
class Inventory:
    path: Path
    default_host: str
    hosts: Mapping[str, Host]
    download_dir: str = "./backups"
    #: One line each, for keys that are accepted but ignored (the task layer prints them).
    warnings: tuple[str, ...] = ()

    def host(self, name: str | None) -> Host:
        """The host called ``name``, or the default host when ``name`` is None."""
        key = name or self.default_host
        try:
            return self.hosts[key]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise OpsError(
                f"{self.path}: no host named {shown(key)} in the inventory (hosts: {known})",
                "pass -H with one of those names, or add the host to the inventory",
            ) from None

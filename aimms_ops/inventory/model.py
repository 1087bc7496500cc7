"""The inventory's model: which hosts exist and where everything lives on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aimms_ops.backup.retention import Policy
from aimms_ops.errors import OpsError, shown
from aimms_ops.host.layout import HostLayout
from aimms_ops.offsite.config import Offsite

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
class Retention:
    """The ``retention`` mapping: GFS counts (borg prune's rules); 0 means not used."""

    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0


@dataclass(frozen=True)
class Ping:
    """Where the host's jobs report how they went (``ping``)."""

    url: str
    kind: str = "healthchecks"
    verify_url: str | None = None


@dataclass(frozen=True)
class Host:
    """One host of the inventory, as the tasks see it."""

    name: str
    backup_dir: str
    backup_script: str
    log_file: str
    cron_schedule: str
    retention_days: int
    compose: Compose
    postgres: Postgres
    volumes: Volumes
    min_keep: int = 3
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    verify_schedule: str | None = None
    lock_timeout: int = 600
    retention: Retention | None = None
    safety_pin_days: int = 14
    allow_shrink: bool = False
    ping: Ping | None = None

    @property
    def policy(self) -> Policy:
        """The retention policy: the ``retention`` rules, or ``retention_days`` alone."""
        r = self.retention or Retention()
        return Policy(within_days=self.retention_days, daily=r.keep_daily,
                      weekly=r.keep_weekly, monthly=r.keep_monthly, yearly=r.keep_yearly,
                      min_keep=self.min_keep)
    offsite: Offsite = field(default_factory=Offsite)

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

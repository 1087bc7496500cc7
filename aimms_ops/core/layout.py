"""Where aimms-ops keeps its files on a host: one definition, read by every module.

The inventory names three places (``backup_dir``, ``log_file``, ``backup_script``);
everything else sits beside the backup script, so that the seed's bare
``backup-postgres.sh`` finds its settings without a flag.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from aimms_ops.core import lock

#: Run in a throwaway container with the volumes at /from (read-only) and /to: /to emptied
#: (a retried copy starts clean), then every file copied with owners, modes and times
#: (rebuild-volume's keep and PITR's swap).
VOLUME_COPY_SH = "find /to -mindepth 1 -delete && cp -a /from/. /to/"

#: The label of a volume that keeps the data a rebuild or a PITR restore replaced (its
#: value: the volume it was copied from); ``fab volumes`` lists them, ``fab rebuild-volume
#: --drop-kept=NAME`` removes one.
KEPT_LABEL = "org.aimms-ops.kept-from"

#: The packaged scripts installed on the host (aimms_ops/scripts/).
BACKUP_SCRIPT = "backup-postgres.sh"
VERIFY_SCRIPT = "verify-backup.sh"
DRILL_SCRIPT = "drill.sh"
#: The host program (aimms_ops/agent as a zipapp), beside the backup script.
PROGRAM = "aimms-ops.pyz"

#: The host's lock files, in the backup dir (core.lock is the model and their one
#: definition), by their old script names (CLUSTER_LOCK, BACKUP_LOCK, VERIFY_LOCK).
LOCK_FILES = {f"{k.upper()}_LOCK": v for k, v in lock.LOCK_FILES.items()}


@dataclass(frozen=True)
class HostLayout:
    """The host's files, from the inventory's ``backup_dir``, ``log_file`` and ``backup_script``."""

    backup_dir: str
    log_file: str
    backup_script: str

    @property
    def config_file(self) -> str:
        """The backup script's settings (written by install-backups), beside the script."""
        return f"{self.backup_script}.conf"

    @property
    def install_record(self) -> str:
        """What the backups were installed for (``key=value``), beside the script."""
        return f"{self.backup_script}.installed"

    @property
    def offsite_config(self) -> str:
        """The offsite targets the backup script pushes to, beside the script."""
        return f"{self.backup_script}.offsite"

    @property
    def cluster_lock(self) -> str:
        """Restore and rebuild hold it exclusive; backup and the deep verify shared."""
        return posixpath.join(self.backup_dir, LOCK_FILES["CLUSTER_LOCK"])

    @property
    def program(self) -> str:
        """The host program the installed scripts run, beside the backup script."""
        return posixpath.join(posixpath.dirname(self.backup_script), PROGRAM)

    @property
    def verify_script(self) -> str:
        """The deep verify script, in the backup script's folder."""
        return posixpath.join(posixpath.dirname(self.backup_script), VERIFY_SCRIPT)

    @property
    def drill_script(self) -> str:
        """The drill script, in the backup script's folder."""
        return posixpath.join(posixpath.dirname(self.backup_script), DRILL_SCRIPT)


def compose_label(project: str) -> str:
    """The compose project label of containers, as compose v1 and v2 write it (lower case,
    characters other than a-z 0-9 - _ removed): the one definition, on both sides."""
    return re.sub(r"[^a-z0-9_-]", "", project.lower())

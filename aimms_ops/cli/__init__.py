"""The command line: the task collection that ``fab`` and ``aimms-ops`` run.

One module per group of tasks; :mod:`aimms_ops.cli.base` holds what they share (the
error boundary, the inventory, the connection, the typed confirmation). Task modules
import the domain modules inside each task, so that ``fab -l`` stays fast.
"""

from invoke import Collection

from aimms_ops.cli.backup import (
    backup,
    download,
    install_backups,
    list_backups,
    logs,
    pin,
    prune,
    unpin,
)
from aimms_ops.cli.drill import drill
from aimms_ops.cli.monitor import check, doctor, info, status, verify, volumes
from aimms_ops.cli.offsite import offsite_sync
from aimms_ops.cli.pitr import pitr_backup, pitr_off
from aimms_ops.cli.rebuild import rebuild_volume
from aimms_ops.cli.replaced import drop_replaced, restore_undo
from aimms_ops.cli.restore import restore

ns = Collection(check, backup, list_backups, download, logs, prune, install_backups, restore,
                status, verify, volumes, doctor, rebuild_volume, pin, unpin, offsite_sync,
                restore_undo, drop_replaced, info, drill, pitr_backup, pitr_off)

"""The installed command ``aimms-ops``: Fabric's ``Program`` over the package's tasks.

The same tasks, flags and ``-H`` as ``fab`` in the checkout (Fabric's "Distributing a
CLI"), from any directory: the tasks come from the package, not from a fabfile, and
the inventory is found as :func:`aimms_ops.inventory.loader.inventory_path` says.
"""

from __future__ import annotations

import sys

from fabric import Config, Executor
from fabric.main import Fab

from aimms_ops import __version__
from aimms_ops.cli import ns
from aimms_ops.cli.coreopts import check_core_options, stacks_on_sigusr1

NAME = "aimms-ops"

program = Fab(name=NAME, version=__version__, namespace=ns, executor_class=Executor,
              config_class=Config, binary=NAME, binary_names=[NAME])


def main() -> None:
    """Entry point of the console script."""
    check_core_options(sys.argv, set(ns.task_names))
    stacks_on_sigusr1()
    try:
        program.run()
    except BrokenPipeError:
        # The reader went away (`aimms-ops -l | head`): stop quietly, no traceback.
        from aimms_ops.output.console import reader_gone

        reader_gone()
        sys.exit(1)

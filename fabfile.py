"""aimms-ops tasks: `fab -l` lists them, `fab --help TASK` explains one."""

import sys

from aimms_ops.cli import ns
from aimms_ops.cli.coreopts import check_core_options, quiet_broken_pipe, stacks_on_sigusr1

check_core_options(sys.argv, set(ns.task_names))
quiet_broken_pipe()
stacks_on_sigusr1()

__all__ = ["ns"]

"""aimms-ops tasks: `fab -l` lists them, `fab --help TASK` explains one."""

import sys

from aimms_ops.cli import ns
from aimms_ops.cli.base import check_hosts_argument

check_hosts_argument(sys.argv)

__all__ = ["ns"]

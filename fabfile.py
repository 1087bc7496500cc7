"""aimms-ops tasks: `fab -l` lists them, `fab --help TASK` explains one."""

import sys

from aimms_ops.tasks import check_hosts_argument, ns

check_hosts_argument(sys.argv)

__all__ = ["ns"]

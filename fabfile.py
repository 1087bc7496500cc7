"""aimms-ops tasks: `fab -l` lists them, `fab --help TASK` explains one."""

from aimms_ops.tasks import ns

__all__ = ["ns"]

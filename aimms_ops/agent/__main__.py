"""``python3 aimms-ops.pyz COMMAND ...``: the host program's entry point."""

import sys

from aimms_ops.agent.main import main

sys.exit(main(sys.argv[1:]))

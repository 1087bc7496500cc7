"""Two commands on the cluster's running container, found by compose's labels now (a plan
can name it before it exists: rebuild-volume recreates it):

- ``replaced PROJECT SERVICE SUPERUSER LOCK WAIT MODE [HEX...]`` (fab runs it directly): the
  databases restores set aside (``aimms_ops.dump.swap``): MODE ``aside`` lists them (a
  ``facts`` event), ``undo`` swaps those of the last restore back in, ``drop-aside``
  drops those named (all when none is), both holding the cluster lock exclusive, as a
  restore does; what they say are events (``note``, ``error``, the lock's ``wait``).
- ``postgres-exec [--detach] PROJECT SERVICE COMMAND...`` (``postgres-exec.sh``): ``docker
  exec -i`` COMMAND in it, stdin passed on (this process becomes docker); ``--detach``:
  ``docker exec -d``, COMMAND left running in the container (the restore's ANALYZE).

Exit 10 when no container of the service is running; 64 usage; 75/73 the lock.
"""

import os
import signal
import sys
from typing import List

from aimms_ops.agent.restore import NOT_RUNNING, lock_cluster, running_container, say
from aimms_ops.core import events
from aimms_ops.core.lock import Lock
from aimms_ops.dump import cli as dump_cli

MODES = ("aside", "undo", "drop-aside")


def replaced_main(argv: List[str]) -> int:
    if len(argv) < 6 or argv[5] not in MODES:
        say("usage: aimms-ops.pyz replaced PROJECT SERVICE SUPERUSER LOCK WAIT "
            "aside|undo|drop-aside [HEX...]")
        return 64
    project, service, superuser, lock, wait, mode = argv[:6]
    cid = running_container(project, service)
    if cid is None:
        return NOT_RUNNING
    if mode == "aside":
        return int(dump_cli.swap_main(mode, [cid, superuser, *argv[6:]], events.line))
    held = lock_cluster(lock, wait, mode)
    if not isinstance(held, Lock):
        return held
    with held:
        return int(dump_cli.swap_main(mode, [cid, superuser, *argv[6:]], events.line))


def postgres_exec(argv: List[str]) -> int:
    detach = argv[:1] == ["--detach"]
    if detach:
        argv = argv[1:]
    if len(argv) < 3:
        say("usage: aimms-ops.pyz postgres-exec [--detach] PROJECT SERVICE COMMAND...")
        return 64
    cid = running_container(argv[0], argv[1])
    if cid is None:
        return NOT_RUNNING
    sys.stdout.flush()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # python ignores it; docker must not
    try:
        os.execvp("docker", ["docker", "exec", "-d" if detach else "-i", cid,  # noqa: S606
                             *argv[2:]])
    except OSError as e:
        say("aimms-ops: cannot run docker: %s" % e.strerror)
    return 127

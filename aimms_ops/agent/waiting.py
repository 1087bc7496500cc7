"""``wait-postgres PROJECT SERVICE SUPERUSER TIMEOUT``: wait, polling every half second,
until the postgres of the compose service really accepts connections: pg_isready
answers, a real query runs, the server listens (not the private server an image's
entrypoint runs while it initialises an empty data directory) and it is the same server
on two polls in a row. Its ``facts`` event (core.events) says ``container`` (its id) and
``seconds``; after TIMEOUT seconds
exits 1 with what it saw last on stderr."""

import argparse
import sys
import time
from typing import Any, Callable, Optional, Tuple

from aimms_ops.agent import cluster
from aimms_ops.agent.hostfacts import last_line, run
from aimms_ops.core import events

SQL = "SELECT 1, current_setting('listen_addresses') <> '', pg_postmaster_start_time()"
POLL_SECONDS = 0.5


def add_commands(sub: Any) -> None:
    p = sub.add_parser("wait-postgres", help="wait until postgres accepts connections")
    p.add_argument("project")
    p.add_argument("service")
    p.add_argument("superuser")
    p.add_argument("timeout", type=int)
    p.set_defaults(run=wait_postgres)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def poll(project: str, service: str, superuser: str) -> Tuple[str, Optional[str], str]:
    """(container, the server's start time when it answers as a listening server, what
    was seen)."""
    cid = cluster.container(project, service)
    if not cid:
        st = run(["docker", "ps", "-a", "--filter",
                  "label=com.docker.compose.project=" + cluster.compose_label(project),
                  "--filter", "label=com.docker.compose.service=" + service,
                  "--format", "{{.Status}}"])[1]
        first = _text(st).split("\n", 1)[0].strip()
        return "", None, "no running %s container (%s)" % (service, first or "none")
    rc, out = run(["docker", "exec", cid, "pg_isready", "-U", superuser, "-d", "postgres"],
                  merged=True)
    if rc != 0:
        return cid, None, "pg_isready: " + _text(last_line(out))
    rc, out = run(["docker", "exec", cid, "psql", "-X", "-A", "-t", "-U", superuser, "-d",
                   "postgres", "-c", SQL], merged=True)
    if rc != 0:
        return cid, None, "psql: " + _text(last_line(out))
    row = _text(out).strip("\n")
    parts = row.split("|")
    if len(parts) != 3 or parts[0] != "1":
        return cid, None, "psql answered: " + row
    if parts[1] != "t":
        return cid, None, "the server is still initialising (it does not listen yet)"
    return cid, parts[2], "answering since " + parts[2]


def wait(project: str, service: str, superuser: str, timeout: int,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    start = clock()
    prev: Optional[str] = None
    while True:
        cid, started, last = poll(project, service, superuser)
        elapsed = int(clock() - start)
        if started is not None and started == prev:
            print(events.facts_line("wait-postgres", {"container": cid, "seconds": elapsed}))
            return 0
        prev = started
        if elapsed >= timeout:
            sys.stderr.write("aimms-ops: postgres did not accept connections within %ds: %s\n"
                             % (timeout, last))
            if cid:
                logs = run(["docker", "logs", "--tail", "3", cid], merged=True)[1]
                for line in _text(logs).splitlines():
                    sys.stderr.write("aimms-ops: log: %s\n" % line)
            return 1
        sleep(POLL_SECONDS)


def wait_postgres(args: argparse.Namespace) -> int:
    return wait(args.project, args.service, args.superuser, args.timeout)

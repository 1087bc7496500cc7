"""Pings: telling a monitor how a job goes (healthchecks.io, Uptime Kuma), with curl.

- healthchecks: EVENT start -> URL/start, ok -> URL/0, exit:N -> URL/N, fail -> URL/fail,
  log -> URL/log (a message, no change of state); ``?rid=RID`` pairs a start with its
  end; a body (the job's last log lines, at most 100 kB) is POSTed.
- uptime-kuma: URL?status=up|down&msg=MSG&ping=MS (ok and log are up; start is not
  sent: Uptime Kuma has no start signal).

Bounded by ``timeout`` seconds (the ping.timeout setting): each try gets a third of it
(at most 10 s), curl retries 3 times (refused connections too) for at most two thirds of
it, and the whole call is killed at ``timeout``. The URL reaches curl on its stdin, never
on a command line the host's process list shows. A ping never fails the job: the caller
gets curl's error as text, or None.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional

from aimms_ops.core import defaults

KINDS = ("healthchecks", "uptime-kuma")
_HC_EVENTS = {"start": "start", "ok": "0", "fail": "fail", "log": "log"}
BODY_LIMIT = 100000


def _bound(timeout: object) -> int:
    try:
        value = int(str(timeout))
    except ValueError:
        return defaults.PING_TIMEOUT
    return value if value >= 3 else defaults.PING_TIMEOUT


def curl_args(kind: str, url: str, event: str, rid: str, msg: str = "",
              body_file: str = "", ms: Optional[int] = None,
              timeout: object = defaults.PING_TIMEOUT) -> Optional[List[str]]:
    """curl's arguments and the URL it reads from stdin (the last item), or None when
    nothing is sent (a start to Uptime Kuma). ValueError for an unknown kind or event."""
    bound = _bound(timeout)
    per_try = min(bound // 3, 10)
    args = ["-fsS", "-m", str(per_try), "--retry", "3", "--retry-connrefused",
            "--retry-max-time", str(bound * 2 // 3), "-o", "/dev/null", "-K", "-"]
    if kind == "healthchecks":
        if event.startswith("exit:"):
            tail = event[len("exit:"):]
        elif event in _HC_EVENTS:
            tail = _HC_EVENTS[event]
        else:
            raise ValueError("unknown ping event %s" % event)
        full = "%s/%s?rid=%s" % (url.rstrip("/"), tail, rid)
        if body_file and os.access(body_file, os.R_OK):
            args += ["--data-binary", "@" + body_file, "-H", "Content-Type: text/plain"]
    elif kind == "uptime-kuma":
        if event == "start":
            return None
        state = "up" if event in ("ok", "log") else "down"
        full = url
        args += ["-G", "--data-urlencode", "status=" + state, "--data-urlencode",
                 "msg=" + msg[:200]]
        if ms is not None:
            args += ["--data-urlencode", "ping=%d" % ms]
    else:
        raise ValueError("unknown ping kind %s" % kind)
    return [*args, full]


def send(kind: str, url: str, event: str, rid: str, msg: str = "", body: str = "",
         ms: Optional[int] = None, timeout: object = defaults.PING_TIMEOUT) -> Optional[str]:
    """Send one ping; None when it went, else why it did not (one line)."""
    if shutil.which("curl") is None:
        return "curl is not installed on the host"
    body_file = ""
    try:
        if body:
            fd, body_file = tempfile.mkstemp(prefix="aimms-ping.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(body.encode("utf-8", "replace")[-BODY_LIMIT:])
        try:
            args = curl_args(kind, url, event, rid, msg, body_file, ms, timeout)
        except ValueError as e:
            return str(e)
        if args is None:
            return None
        full = args.pop()
        bound = _bound(timeout)
        config = 'url = "%s"\n' % full.replace("\\", "\\\\").replace('"', '\\"')
        try:
            proc = subprocess.run(["curl", *args], input=config.encode(), timeout=bound,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            # Killed at the bound: what curl said of its tries so far, if anything.
            said = [ln for ln in (e.stderr or b"").decode("utf-8", "replace").splitlines()
                    if ln.strip()]
            return said[-1].strip() if said else "no answer within %ds" % bound
        if proc.returncode == 0:
            return None
        err = " ".join(proc.stderr.decode("utf-8", "replace").split())
        return err or "curl exit status %d" % proc.returncode
    finally:
        if body_file:
            try:
                os.unlink(body_file)
            except OSError:
                pass


def add_commands(sub: object) -> None:
    p = sub.add_parser("ping-test", help="send a test ping, as the jobs would")  # type: ignore[attr-defined]
    p.add_argument("kind")
    p.add_argument("url", help="the URL, or - for the first line of stdin")
    p.add_argument("timeout", nargs="?", default=str(defaults.PING_TIMEOUT))
    p.set_defaults(run=ping_test)


def ping_test(args: "argparse.Namespace") -> int:
    """A ``facts`` event: ``ok`` and ``seconds``, with curl's ``error`` when it failed."""
    import socket
    import sys
    import time
    import uuid

    url = args.url
    if url == "-":
        url = sys.stdin.readline().rstrip("\n")
    started = time.time()
    body = "%s test ping from aimms-ops (fab doctor --ping) on %s\n" % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), socket.gethostname())
    why = send(args.kind, url, "log", str(uuid.uuid4()), "aimms-ops test ping",
               body, 0, args.timeout)
    from aimms_ops.agent.hostfacts import Report

    out = Report("ping-test")
    out.put("ok", why is None)
    if why is not None:
        out.put("error", why)
    out.put("seconds", int(time.time() - started))
    return out.send()

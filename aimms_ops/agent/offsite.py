"""The offsite copies of the host program: push, prune, list and read them.

``offsite --backup-dir DIR --log-file FILE --offsite-config FILE [--lock-timeout S] CMD``:

- ``sync [--target NAME] [--dry-run]``: push what each target lacks, then its retention,
  under the backup lock (fab offsite-sync); an ``offsite`` event per push, keep and
  remove, then an ``offsite-result`` event per target (exit 1 if one failed);
- ``list [--target NAME]``: a ``target`` event per target (ok, or why not), then a
  ``copy`` event per copy (its .meta's fields) and a ``partial`` event per push cut short;
- ``cat TARGET OBJECT``: the bytes of NAME.age or NAME.age.meta;
- ``mark-verified TARGET BACKUP``: record that the copy of BACKUP was read back whole;
- ``push-all --run-id ID [--echo] [--report]``: what the backup script runs after a good
  backup, under the backup lock it holds: sync every target, one ``RESULT offsite T ok
  ...|failed: REASON`` log line each (and ``offsite-result`` events with --report).
  Never fails (exit 0): a failed push never fails the backup.

Every push encrypts the backup with age to the recipients and uploads it with rclone
rcat, in one pass and constant memory: the plaintext is hashed on its way into age (a
backup that no longer matches its .sha256 is not pushed), the encrypted stream on its
way into rclone. The .meta is written last; whatever failed is removed from the target.
A target's retention runs only when every push to it in the run succeeded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

from aimms_ops.agent.backups import copies_plan
from aimms_ops.agent.offsite_push import local_sha256, push_one
from aimms_ops.agent.offsite_targets import (
    META,
    VERIFIED,
    OffsiteError,
    Settings,
    Target,
    check_tools,
    load,
    reason,
)
from aimms_ops.core import defaults, events, retention
from aimms_ops.core import lock as core_lock
from aimms_ops.core.lock import LOCK_FILES, Lock, LockBusy, LockOpenError, now_utc

USAGE_STATUS = 64


def _whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("--lock-timeout must be a whole number")
    return int(text)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("offsite", help="the offsite copies: push, prune, list, read")
    p.add_argument("--backup-dir", default="")
    p.add_argument("--log-file", default="")
    p.add_argument("--offsite-config", default="")
    p.add_argument("--lock-timeout", type=_whole_number, default=defaults.LOCK_TIMEOUT)
    cmds = p.add_subparsers(dest="offsite_command", metavar="COMMAND")
    cmds.required = True
    c = cmds.add_parser("sync", help="push what the targets lack, then their retention")
    c.add_argument("--target")
    c.add_argument("--dry-run", action="store_true")
    c.set_defaults(run=_command(sync_command))
    c = cmds.add_parser("list", help="the copies on the targets")
    c.add_argument("--target")
    c.set_defaults(run=_command(list_command))
    c = cmds.add_parser("cat", help="the bytes of a copy's object")
    c.add_argument("target")
    c.add_argument("object")
    c.set_defaults(run=_command(cat_command))
    c = cmds.add_parser("mark-verified", help="record that a copy was read back whole")
    c.add_argument("target")
    c.add_argument("backup")
    c.set_defaults(run=_command(mark_verified_command))
    c = cmds.add_parser("push-all", help="after a backup: sync every target, never fail")
    c.add_argument("--run-id", required=True)
    c.add_argument("--echo", action="store_true", help="the log lines on stderr too")
    c.add_argument("--report", action="store_true", help="offsite-result events on stdout")
    c.set_defaults(run=_command(push_all_command))


class Run:
    """One run's log (``TIME RUN_ID LINE`` appended to the log file, and on stderr with
    ``echo``) and report lines (stdout, with ``report``). Once the operator's session is
    gone, writes to it fail: the run goes on without it."""

    def __init__(self, log_file: str, run_id: str, echo: bool, report: bool,
                 work: str) -> None:
        self.log_file = log_file
        self.run_id = run_id
        self.echo = echo
        self.reporting = report
        self.work = work

    def log(self, line: str) -> None:
        text = "%s %s %s\n" % (now_utc(), self.run_id, line)
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            pass
        if self.echo:
            self.echo = _say(sys.stderr, text)

    def report(self, line: str) -> None:
        if self.reporting:
            self.reporting = _say(sys.stdout, line + "\n")

    def event(self, kind: str, **fields: object) -> None:
        """The event ``kind`` (core.events) on stdout, with ``report``."""
        self.report(events.line(kind, **fields))


def _say(stream: Any, text: str) -> bool:
    try:
        stream.write(text)
        stream.flush()
        return True
    except (OSError, ValueError):
        # The session is gone: what is still buffered must not fail the exit either.
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, stream.fileno())
            os.close(fd)
        except (OSError, ValueError):
            pass
        return False


def _fail(message: str, status: int = 1) -> int:
    sys.stderr.write("offsite failed: %s\n" % message)
    return status


def _command(fn: Any) -> Any:
    """A command run with the settings loaded, the tools checked and a work dir that is
    removed at the end (push-all handles its own failures)."""

    def run(args: argparse.Namespace) -> int:
        if not (args.backup_dir and args.log_file and args.offsite_config):
            sys.stderr.write("offsite-run.sh: --backup-dir, --log-file and --offsite-config "
                             "are needed\n")
            return USAGE_STATUS
        report = args.offsite_command != "push-all" or args.report
        try:
            work = tempfile.mkdtemp(prefix="aimms-offsite.")
        except OSError:
            if args.offsite_command == "push-all":
                Run(args.log_file, args.run_id, args.echo, False, "").log(
                    "RESULT offsite all failed: cannot create a temporary dir")
                return 0
            return _fail("cannot create a temporary dir")
        run_id = getattr(args, "run_id", None) or "offsite[%d]" % os.getpid()
        r = Run(args.log_file, run_id, getattr(args, "echo", False), report, work)
        try:
            if args.offsite_command == "push-all":
                return int(fn(args, r))
            try:
                settings = load(args.offsite_config)
                check_tools()
                return int(fn(args, r, settings))
            except OffsiteError as e:
                return _fail(str(e))
            except _Usage as e:
                return _fail(str(e), USAGE_STATUS)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return run


class _Usage(Exception):
    pass


def _check_name(name: str) -> None:
    if not retention.NAME_RE.match(name):
        raise _Usage("not a backup name: %s" % name)


# --- a target's sync ------------------------------------------------------------------


def sync_target(target: Target, run: Run, backup_dir: str, dry: bool,
                now: Optional[float] = None) -> str:
    """Push every good local backup the target lacks and its retention keeps (oldest
    first: what a failed run missed goes first), then apply its retention, only when
    every push of this run succeeded; then remove the objects of pushes cut short.
    Returns ``pushed=N pruned=N seconds=N``; an OffsiteError when a push failed."""
    started = time.time()
    t = target.name
    listing = target.listing()
    get = lambda key: target.settings.get(t, key)  # noqa: E731
    try:
        policy = retention.Policy(within_days=int(get("RETENTION_DAYS")),
                                  min_keep=int(get("MIN_KEEP")),
                                  **retention.parse_rules(get("RETENTION_RULES")))
        plan = copies_plan(backup_dir, sorted(listing.copies), policy,
                           time.time() if now is None else now)
    except (ValueError, OSError) as e:
        raise OffsiteError("the retention of %s failed: %s" % (t, e)) from None
    pushed: List[str] = []
    for d in reversed(plan):
        if not d.keep:
            continue
        mine = local_sha256(backup_dir, d.name)
        copy = listing.copies.get(d.name)
        if copy is not None and copy.whole:
            if not mine or mine == copy.plaintext_sha256:
                continue
            run.log("offsite %s: the copy of %s differs from the local backup (plaintext "
                    "sha256 %s, local %s): pushing it again"
                    % (t, d.name, copy.plaintext_sha256[:16], mine[:16]))
        if not mine:
            continue
        run.event("offsite", action="push", target=t, name=d.name, reason="")
        if dry:
            continue
        run.log("offsite %s: pushing %s" % (t, d.name))
        t0 = time.monotonic()
        ticker = events.Ticker(run.report, "push", os.path.getsize(
            os.path.join(backup_dir, d.name)), what="%s to %s" % (d.name, t), estimate=True)
        size = push_one(target, run.work, backup_dir, d.name, target.settings.recipients,
                        ticker.tick)
        ticker.end()
        pushed.append(d.name)
        run.log("offsite %s: pushed %s (%d bytes encrypted in %.2f s)"
                % (t, d.name, size, time.monotonic() - t0))
    removed = 0
    for d in plan:
        held = d.name in listing.copies
        if not held and d.keep is False:
            continue  # a local backup too old for this target is simply not pushed
        reason_text = " ".join(d.reason.split())
        run.event("offsite", action=d.action, target=t, name=d.name, reason=reason_text)
        if d.keep or dry or not held:
            continue
        for obj in (d.name + META, d.name + VERIFIED, d.name + ".age"):
            target.delete(obj)  # the .meta first: what is left is no copy any more
        removed += 1
        run.log("offsite %s: retention removed %s (%s)" % (t, d.name, reason_text))
    # Objects of a push cut short (no .meta): we hold the lock, nobody is writing them;
    # one pushed again in this run is a copy now.
    for name in listing.partial:
        if name in pushed:
            continue
        run.event("offsite", action="remove", target=t, name=name,
                  reason="partial upload (no .meta)")
        if not dry:
            target.delete(name + ".age")
            run.log("offsite %s: removed the partial upload %s.age" % (t, name))
    return "pushed=%d pruned=%d seconds=%d" % (len(pushed), removed, time.time() - started)


# --- the commands ---------------------------------------------------------------------


def sync_command(args: argparse.Namespace, run: Run, settings: Settings) -> int:
    if args.target:
        settings.check_target(args.target)
    if not os.path.isdir(args.backup_dir):
        raise OffsiteError("backup dir %s does not exist (run fab install-backups)"
                           % args.backup_dir)
    # The backup's lock: a backup (and its push) and a sync never run at once.
    path = os.path.join(args.backup_dir, LOCK_FILES["backup"])
    lk = Lock(path, "offsite sync")
    try:
        try:
            lk.acquire(0)
        except LockBusy as busy:
            run.log("waiting up to %ds for a backup or retention run (%s)"
                    % (args.lock_timeout, core_lock.held_by(busy.holders)))
            wait = {"for": "a backup or retention run", "up_to": args.lock_timeout,
                    "holder": core_lock.held_by(busy.holders)}
            run.event("wait", **wait)
            waited = time.monotonic()
            lk.acquire(args.lock_timeout)
            run.event("wait", waited=time.monotonic() - waited, **wait)
    except LockBusy as busy:
        raise OffsiteError("a backup or retention run is still running after %ds (lock %s "
                           "held by %s; wait for it to end)"
                           % (args.lock_timeout, path, core_lock.held_by(busy.holders))) from None
    except LockOpenError:
        raise OffsiteError("cannot open lock file %s" % path) from None
    status = 0
    with lk:
        for t in [args.target] if args.target else settings.targets:
            ok, detail = _sync_one(settings, t, run, args.backup_dir, args.dry_run)
            line = "%s ok %s" % (t, detail) if ok else "%s failed: %s" % (t, detail)
            if not args.dry_run:
                run.log("RESULT offsite %s" % line)
            run.event("offsite-result", target=t, ok=ok, detail=detail)
            status = status if ok else 1
    return status


def _sync_one(settings: Settings, t: str, run: Run, backup_dir: str, dry: bool) -> tuple:
    """(True, summary) or (False, reason) of one target's sync; nothing escapes."""
    try:
        return True, sync_target(Target(settings, t, run.work), run, backup_dir, dry)
    except OffsiteError as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001 - one target's bug must not stop the others
        return False, "internal error: %s: %s" % (type(e).__name__, e)


def push_all_command(args: argparse.Namespace, run: Run) -> int:
    push_all(args.offsite_config, args.backup_dir, run)
    return 0


def push_all(config: str, backup_dir: str, run: Run) -> None:
    """After a good backup (whose run holds the backup lock): sync every target of the
    settings ``config``, one RESULT line each; never raises."""
    try:
        settings = load(config)
    except OffsiteError as e:
        run.log("RESULT offsite all failed: %s" % e)
        run.event("offsite-result", target="all", ok=False, detail=str(e))
        return
    for t in settings.targets:
        try:
            check_tools()
            ok, detail = _sync_one(settings, t, run, backup_dir, False)
        except OffsiteError as e:
            ok, detail = False, str(e)
        line = "%s ok %s" % (t, detail) if ok else "%s failed: %s" % (t, detail)
        run.log("RESULT offsite %s" % line)
        run.event("offsite-result", target=t, ok=ok, detail=detail)


def list_command(args: argparse.Namespace, run: Run, settings: Settings) -> int:
    if args.target:
        settings.check_target(args.target)
    for t in [args.target] if args.target else settings.targets:
        try:
            listing = Target(settings, t, run.work).listing()
        except OffsiteError as e:
            run.event("target", target=t, ok=False, error=str(e))
            continue
        run.event("target", target=t, ok=True, error="")
        for name in sorted(listing.copies):
            run.event("copy", target=t, **listing.copies[name]._asdict())
        for name in listing.partial:
            run.event("partial", target=t, name=name)
    return 0


def cat_command(args: argparse.Namespace, run: Run, settings: Settings) -> int:
    settings.check_target(args.target)
    obj = args.object
    if obj.endswith(".age"):
        _check_name(obj[:-4])
    elif obj.endswith(META):
        _check_name(obj[:-len(META)])
    else:
        raise _Usage("not an offsite object: %s" % obj)
    target = Target(settings, args.target, run.work)
    sys.stdout.flush()
    with open(os.path.join(run.work, "cat.err"), "w+b") as err:
        status = subprocess.call(target.argv("cat", target.path(obj)), env=target.env,
                                 stdin=subprocess.DEVNULL, stderr=err)
        if status != 0:
            err.seek(0)
            raise OffsiteError("cannot read %s from %s: %s"
                               % (obj, args.target, reason(err.read())))
    return 0


def mark_verified_command(args: argparse.Namespace, run: Run, settings: Settings) -> int:
    settings.check_target(args.target)
    _check_name(args.backup)
    target = Target(settings, args.target, run.work)
    text = "verified=%s %s\n" % (args.backup, now_utc())
    res = target.run("rcat", target.path(args.backup + VERIFIED), data=text.encode())
    if res.returncode != 0:
        raise OffsiteError("cannot record the verify on %s: %s"
                           % (args.target, reason(res.stderr)))
    run.log("offsite %s: the copy of %s was read back and verified" % (args.target, args.backup))
    return 0

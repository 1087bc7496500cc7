"""Making the backup file: preflight, the dump, its checks, publishing it, then the
offsite copies, retention and the end of the run (``agent.backup`` runs it)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, List, Optional

from aimms_ops.agent import cluster, dumpfacts, dumping
from aimms_ops.agent.backups import pin_safety_copy, regular_sizes
from aimms_ops.agent.hosttools import _program, hostname
from aimms_ops.agent.job import JobFailed
from aimms_ops.core import retention, units
from aimms_ops.core.printf import printf_format

if TYPE_CHECKING:
    from aimms_ops.agent.backup import Backup


def _ext(compression: str) -> str:
    return dict(retention.EXTENSIONS)[compression]


def _newest_size(directory: str) -> int:
    found = retention.scan(directory)
    return max(found, key=lambda b: b.mtime).size if found else 0


def _free(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _name(directory: str, label: str, ext: str) -> str:
    while True:
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        name = "aimms_postgres_%s%s%s" % (stamp, "_" + label if label else "", ext)
        if not os.path.exists(os.path.join(directory, name)):
            return name
        time.sleep(1)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make(b: "Backup") -> int:
    job, s, d = b.job, b.s, b.dir
    label = s.get("--label", "")
    job.log("START backup of project %s service %s%s" % (
        s["COMPOSE_PROJECT"], s["COMPOSE_SERVICE"], " label " + label if label else ""))
    user = b.user
    if subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      check=False).returncode != 0:
        raise JobFailed("docker is not reachable as %s (is the daemon running? start it, or add "
                        "%s to the docker group)" % (user, user))
    cid = cluster.container(s["COMPOSE_PROJECT"], s["COMPOSE_SERVICE"])
    if not cid:
        # The command that starts it needs the compose file, which the host's settings do
        # not hold: fab check and fab status name it, for this host's compose.
        raise JobFailed("the %s container of compose project %s is not running (start it: "
                        "fab check names the command for this host)"
                        % (s["COMPOSE_SERVICE"], s["COMPOSE_PROJECT"]))
    cname = cluster.container_name(cid)
    job.log("container %s (%s)" % (cname, cid))
    b.cluster = cl = cluster.Cluster(cid, s["PG_SUPERUSER"])
    # A run killed with connections allowed on a database: put them back first.
    _close(b)
    job.cleanups.append(lambda: cluster.close_again(cl, d, job.log))
    _drop_expired(b, cid)

    last = _newest_size(d)
    avail = _free(d)
    if avail < last * 12 // 10:
        raise JobFailed("not enough free space in %s: %s free, the last backup took %s (free "
                        "some space, e.g. fab prune, or move backup_dir)"
                        % (d, units.size(avail), units.size(last)))
    job.log("disk: %s free, last backup %s" % (units.size(avail), units.size(last)))

    compression = s.get("COMPRESSION") or retention.EXTENSIONS[0][0]
    name = _name(d, label, _ext(compression))
    final = os.path.join(d, name)
    tmp = os.path.join(d, ".%s.tmp" % name)
    # Small side files live outside the backup dir, which may be the disk that is full.
    work = tempfile.mkdtemp(prefix="aimms-backup.%d." % os.getpid())
    job.cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    for path in (tmp, final + ".sha256.tmp"):
        job.cleanups.append(functools.partial(_remove, path))

    comp = dumping.pick(compression, int(s["GZIP_LEVEL"]), int(s["ZSTD_LEVEL"]),
                        s.get("COMPRESSOR", "auto"))
    if comp is None and compression == "zstd":
        raise JobFailed("compression is zstd but zstd is not installed on the host (install "
                        "zstd there, or set compression: gzip in the inventory)")
    if comp is None:
        raise JobFailed("compressor %s is not installed on the host (install it, or set "
                        "COMPRESSOR=auto)" % s.get("COMPRESSOR", "auto"))
    try:
        trailer = cluster.open_closed(cl, d, job.log)
        hexes, shown = cluster.dumped(cl)
    except (cluster.ClusterError, OSError) as e:
        raise JobFailed(str(e)) from None
    job.log("databases to dump (%d): %s" % (len(shown), ", ".join(shown)))
    job.log("DATABASES %s" % " ".join(hexes))
    argv: List[str] = ["docker", "exec", cid, "sh", "-c", dumping.INNER, "sh", s["PG_SUPERUSER"],
            *cluster.SIDE_COPY_PATTERNS, *dumping.PREFACE_SQL,
            printf_format(trailer)]
    job.log("dumping into %s with pg_dumpall -U %s, compressed by %s -%d on the host"
            % (name, s["PG_SUPERUSER"], comp.name, comp.level))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as dest, open(os.path.join(work, "stderr"), "w+b") as errf:
        # Its progress: the bytes written against the last backup's size (an estimate).
        ticker = job.ticker("dump", last or None, what=name, estimate=True)
        out = dumping.run(argv, comp, dest, errf, 4096 + len(trailer), progress=ticker.tick,
                          inspect_argv=[*_program(), "dump", "inspect"])
        ticker.end(out.size)
        try:
            dest.flush()
            os.fsync(dest.fileno())
        except OSError as e:
            out.write_error = out.write_error or e.strerror or str(e)
        errf.seek(0)
        errtext = errf.read().decode("utf-8", "replace")
    _close(b)
    _check(out, errtext, d)
    size = os.path.getsize(tmp)
    if size <= 0:
        raise JobFailed("the backup is empty")
    job.log("dump complete: %s, %s stream and completion marker checked"
            % (units.size(size), compression))

    with open(final + ".sha256.tmp", "w", encoding="ascii") as fh:
        fh.write("%s  %s\n" % (out.sha256, name))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(final + ".sha256.tmp", 0o600)
    suspicious = _size_guard(d, name, size, s.get("ALLOW_SHRINK") == "1")
    os.replace(final + ".sha256.tmp", final + ".sha256")
    os.replace(tmp, final)
    job.log("published %s" % name)
    _record_facts(b, out)
    # Safety copies of restore and rebuild are pinned (we hold the lock: no retention between).
    try:
        pin_safety_copy(d, name, int(s["SAFETY_PIN_DAYS"]), "%s@%s" % (user, hostname()))
    except OSError:
        job.log("warning: could not write %s.pin" % final)
    _fsync(d)
    seconds = int(time.time() - job.started)
    job.log("RESULT ok %s size=%d sha256=%s seconds=%d%s"
            % (name, size, out.sha256, seconds, " " + suspicious if suspicious else ""))
    job.event("result", name=name, path=final, size=size, sha256=out.sha256,
              seconds=seconds, container=cname, suspicious=suspicious or None)

    # Offsite copies first: a backup goes to the targets before retention may remove it.
    _offsite(b)
    if suspicious.startswith("suspicious:"):
        job.log("retention skipped: %s (if intended: fab backup --allow-shrink, or "
                "allow_shrink in the inventory)" % suspicious)
    elif "--no-prune" not in s:
        b.prune()
    # The run is over: a slow monitor must not hold the locks (a restore may be waiting).
    job.release_locks()
    if suspicious.startswith("suspicious:"):
        job.ping_end("fail", suspicious, suspicious)
    else:
        job.ping_end("ok", "RESULT ok %s size=%d seconds=%d" % (name, size, seconds))
    return 0


def _close(b: "Backup") -> None:
    try:
        cluster.close_again(b.cluster, b.dir, b.job.log)
    except cluster.ClusterError as e:
        b.job.log(str(e))
        raise JobFailed(str(e)) from None


def _drop_expired(b: "Backup", cid: str) -> None:
    """The databases restores set aside longer than they are kept are dropped (never
    dumped either way); a failure is logged and the backup goes on."""
    from aimms_ops.dump import swap
    from aimms_ops.dump.beside import KEEP_REPLACED_DAYS

    def log(msg: str, kind: str = "note", **fields: object) -> None:
        b.job.log(msg)

    try:
        swap.drop_expired(swap.Cluster(cid, b.s["PG_SUPERUSER"]), log)
    except (swap.SwapError, ValueError, OSError) as e:
        b.job.log("warning: cannot drop the databases set aside by restores more than %d "
                  "days ago (fab drop-replaced does): %s" % (KEEP_REPLACED_DAYS, e))


def _check(out: dumping.Outcome, errtext: str, d: str) -> None:
    """The pipeline's verdict, the first failure first (a failed write makes the stages
    before it fail too)."""
    status = None
    lines: List[str] = []
    for line in errtext.splitlines():
        if line.startswith(dumping.STATUS_PREFIX):
            status = line[len(dumping.STATUS_PREFIX):].strip()
        elif line.strip():
            lines.append(line)
    errline = lines[-1] if lines else ""
    if out.write_error:
        raise JobFailed("writing the backup failed: %s (is %s full?)" % (out.write_error, d))
    if out.dump_status or out.zip_status:
        raise JobFailed("the dump failed (status %s): %s"
                        % (out.dump_status or out.zip_status, errline or "no message"))
    if status != "0":
        raise JobFailed("pg_dumpall failed (status %s): %s"
                        % (status or "unknown", errline or "no message"))
    if out.check_status:
        raise JobFailed("the written backup does not decompress: %s"
                        % (errline or "status %s" % out.check_status))
    if dumping.MARKER not in out.tail.split(b"\n"):
        raise JobFailed("the dump has no completion marker: it is incomplete")
    if len(out.sha256) != 64:
        raise JobFailed("the checksum of the backup failed")


def _record_facts(b: "Backup", out: dumping.Outcome) -> None:
    """What the backup holds, kept for its restores (``agent.dumpfacts``); a failure is
    logged and the backup goes on (a restore then reads the whole dump first)."""
    facts = dumpfacts.from_report(out.facts)
    if facts is None:
        b.job.log("warning: the dump reader did not find this backup complete; a restore "
                  "will read the whole dump before it starts")
    elif not dumpfacts.store(b.dir, out.sha256, facts):
        b.job.log("warning: cannot write %s/%s: a restore will read the whole dump before "
                  "it starts" % (b.dir, dumpfacts.FOLDER))


def _size_guard(d: str, name: str, size: int, allow: bool) -> str:
    """The size-drop guard against the regular backups before this one."""
    median: Optional[float] = retention.size_drop(size, regular_sizes(d, name))
    if median is None:
        return ""
    word = "shrink allowed" if allow else "suspicious"
    return "%s: size dropped from %s to %s" % (word, units.size(median), units.size(size))


def _offsite(b: "Backup") -> None:
    """The push to the offsite targets (never fails the backup)."""
    conf = b.s.get("OFFSITE_CONFIG", "")
    if not conf:
        return
    from aimms_ops.agent import offsite_hook

    offsite_hook.after_backup(b)

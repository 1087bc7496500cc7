"""The push of one offsite copy: ``age -r R... < BACKUP | rclone rcat TARGET:NAME.age``
in one pass and constant memory, then NAME.age.meta, written last.

The plaintext is hashed on its way into age (a feeding thread): a backup that no longer
matches its .sha256 is not pushed (the upload is cut before it completes). The encrypted
bytes are hashed on their way into rclone, and the store's size of the object checked
against what was sent. Whatever failed is removed from the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
from typing import Any, Callable, List, Optional, Tuple

from aimms_ops.agent.offsite_targets import META, OffsiteError, Target, hostname, reason
from aimms_ops.core import units
from aimms_ops.core.lock import now_utc

#: What a push reads and writes at a time.
CHUNK = 1 << 20
_SHA = re.compile(r"^[0-9a-f]{64}$")


def local_sha256(backup_dir: str, name: str) -> str:
    """The sha256 recorded beside the backup ``name`` ('' when there is none)."""
    try:
        with open(os.path.join(backup_dir, name + ".sha256"), encoding="utf-8",
                  errors="replace") as fh:
            return (fh.read(200).split() or [""])[0]
    except OSError:
        return ""


def push_one(target: Target, work: str, backup_dir: str, name: str,
             recipients: List[str], progress: Optional[Callable[[int], None]] = None) -> int:
    """Encrypt BACKUP_DIR/NAME to ``recipients`` and upload it, then its .meta; the size
    of the stored object. An OffsiteError (and nothing left on the target) otherwise.
    ``progress``: told the encrypted bytes sent so far."""
    path = os.path.join(backup_dir, name)
    expected = local_sha256(backup_dir, name)
    if not _SHA.match(expected):
        raise OffsiteError("%s has no .sha256" % name)
    if not recipients:
        raise OffsiteError("no age recipient in %s (set offsite_recipients)"
                           % target.settings.path)
    obj = name + ".age"
    try:
        sent = _stream(target, work, path, obj, recipients, expected, progress)
    except OffsiteError:
        target.delete(obj)
        raise
    # rclone rcat checked the size it sent against what the store made; the .meta records
    # the store's size and the sha256 of the bytes sent (fab verify --offsite reads both).
    res = target.run("lsf", "--format", "s", target.path(obj))
    size = res.stdout.decode("ascii", "replace").strip()
    try:
        if not size.isdigit() or int(size) <= 0:
            raise OffsiteError("the store does not show %s after its upload: %s"
                               % (obj, reason(res.stderr, "no size")))
        if int(size) != sent[1]:
            raise OffsiteError("the store holds %s bytes of %s, %d were sent"
                               % (size, obj, sent[1]))
        meta = ("name=%s\nobject=%s\nplaintext_sha256=%s\nplaintext_size=%d\n"
                "encrypted_sha256=%s\nencrypted_size=%s\npushed_at=%s\npushed_from=%s\n"
                "recipients=%s\n" % (name, obj, expected, os.path.getsize(path), sent[0],
                                     size, now_utc(), hostname(), " ".join(recipients)))
        res = target.run("rcat", target.path(name + META), data=meta.encode())
        if res.returncode != 0:
            raise OffsiteError("writing %s%s failed: %s" % (name, META, reason(res.stderr)))
    except (OffsiteError, OSError) as e:
        target.delete(obj)
        if isinstance(e, OSError):
            raise OffsiteError("cannot read %s: %s" % (path, e.strerror)) from None
        raise
    return int(size)


def _stream(target: Target, work: str, path: str, obj: str, recipients: List[str],
            expected: str, progress: Optional[Callable[[int], None]]) -> Tuple[str, int]:
    """age < PATH | rclone rcat OBJ: the plaintext hashed on its way into age (a feeding
    thread), the encrypted bytes on their way into rclone. (sha256, size) of the sent
    bytes; an OffsiteError when anything failed (the caller removes the object)."""
    try:
        src = open(path, "rb")
    except OSError as e:
        raise OffsiteError("cannot read %s: %s" % (path, e.strerror)) from None
    age_err = open(os.path.join(work, "age.err"), "w+b")
    up_err = open(os.path.join(work, "rclone.err"), "w+b")
    argv = ["age"] + [w for r in recipients for w in ("-r", r)]
    plain = hashlib.sha256()
    read_error: List[str] = []

    def feed(into: Any) -> None:
        try:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                plain.update(chunk)
                into.write(chunk)
        except BrokenPipeError:
            pass  # age is gone: its status says why
        except OSError as e:
            read_error.append(e.strerror or str(e))
        finally:
            try:
                into.close()
            except OSError:
                pass

    with src, age_err, up_err:
        age = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=age_err)
        up = target.popen("rcat", target.path(obj), stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=up_err)
        feeder = threading.Thread(target=feed, args=(age.stdin,), daemon=True)
        feeder.start()
        enc = hashlib.sha256()
        sent = 0
        upload_broke = False
        assert age.stdout is not None and up.stdin is not None
        for chunk in iter(lambda: age.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
            enc.update(chunk)
            try:
                up.stdin.write(chunk)
            except OSError:
                upload_broke = True
                age.kill()
                break
            sent += len(chunk)
            if progress is not None:
                progress(sent)
        age.stdout.close()
        feeder.join()
        age_status = age.wait()
        got = plain.hexdigest()
        ours = None  # what failed on this side (the upload must not complete then)
        if age_status != 0 and not upload_broke:
            ours = "age failed on %s: %s" % (obj[:-4], _last_line(age_err))
        elif read_error:
            ours = "cannot read %s: %s" % (path, read_error[0])
        elif got != expected and not upload_broke:
            ours = ("%s does not match its .sha256 (read %s, recorded %s): not pushed, check "
                    "it with fab verify" % (obj[:-4], got[:16], expected[:16]))
        if ours is not None:
            up.kill()
        else:
            try:
                up.stdin.close()
            except OSError:
                pass
        up_status = up.wait()
        if ours is not None:
            raise OffsiteError(ours)
        if up_status != 0 or upload_broke:
            up_err.seek(0)
            why = "upload of %s failed: %s" % (obj[:-4], reason(
                up_err.read(), "rclone status %d" % up_status))
            raise OffsiteError(why + _full_disk(target, path))
    return enc.hexdigest(), sent


def _last_line(fh: Any) -> str:
    fh.seek(0)
    lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


def _full_disk(target: Target, path: str) -> str:
    """SFTP says only "Failure" for a full disk: ask an SSH target how much room it has."""
    if target.type != "ssh":
        return ""
    res = target.run("about", "--json", target.base)
    try:
        free = json.loads(res.stdout.decode("utf-8", "replace"))["free"]
        if isinstance(free, int) and free < os.path.getsize(path):
            return (" (the target's disk is full: %s free in %s; free space there)"
                    % (units.size(free), target.settings.get(target.name, "PATH")))
    except (ValueError, KeyError, TypeError, OSError):
        pass
    return ""

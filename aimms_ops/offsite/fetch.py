"""Fetch an offsite copy and decrypt it here, on the operator's machine.

A copy is fetched encrypted, checked against the sha256 recorded beside it, decrypted
with pyrage (the age identity never goes to the host), and checked against the
backup's own sha256 before anything uses it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimms_ops.core.errors import OpsError
from aimms_ops.host import bundle
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.inventory.offsite import IDENTITY_ENV
from aimms_ops.offsite.copies import RUN_SCRIPT, OffsiteCopy, run_args, script_error


def load_identities(host: Host, explicit: str | None = None) -> tuple[list, str]:
    """The age identities that decrypt the copies, and the file they came from.

    ``--identity`` first, then $AIMMS_OPS_AGE_IDENTITY, then the inventory's
    ``offsite_identity``. The file stays on this machine.
    """
    path = explicit or os.environ.get(IDENTITY_ENV) or host.offsite.identity
    if not path:
        raise OpsError("no age identity to decrypt the offsite copies with",
                       f"pass --identity=FILE, set {IDENTITY_ENV}, or set offsite_identity "
                       "in the inventory")
    p = Path(os.path.expanduser(path))
    try:
        from pyrage import x25519
    except ImportError:
        raise OpsError("pyrage is not installed here: it decrypts the offsite copies",
                       "pip install 'aimms-ops[offsite]' (or pip install pyrage)") from None
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpsError(f"cannot read the age identity {p}: {exc.strerror or exc}",
                       "pass --identity=FILE with the file age-keygen made") from None
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                ids.append(x25519.Identity.from_str(line))
            except Exception:  # noqa: BLE001 - pyrage raises its own types
                raise OpsError(f"{p}: a line is not a valid age identity",
                               "use the file age-keygen made") from None
    if not ids:
        raise OpsError(f"{p} holds no age identity (AGE-SECRET-KEY-…)",
                       "use the file age-keygen made")
    return ids, str(p)


class _Hashing:
    """A writer that hashes (and counts) what it passes on to ``fh``."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        self.fh.write(data)
        return len(data)


@dataclass(frozen=True)
class Fetched:
    path: Path
    copy: OffsiteCopy
    seconds: float
    identity: str


def fetch(remote: HostRemote, copy: OffsiteCopy, dest: Path, identities: list, identity: str,
          progress: Callable[[int], None] | None = None) -> Fetched:
    """Fetch ``copy`` through the host, check and decrypt it into ``dest/NAME``.

    The encrypted bytes go to ``dest/.NAME.age.part`` and must match the encrypted
    sha256 of the copy's ``.meta``; the decryption goes to ``dest/NAME.part`` and must
    match its plaintext sha256. Only then is it renamed to ``dest/NAME`` with a
    ``.sha256`` beside it (0600). On any failure nothing is left but what was there.
    """
    started = time.monotonic()
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    enc_part = dest / f".{copy.name}.age.part"
    plain_part = dest / f"{copy.name}.part"
    final = dest / copy.name
    try:
        return _fetch(remote, copy, enc_part, plain_part, final, identities, identity,
                      progress, started)
    except OSError as exc:
        raise OpsError(f"cannot write the copy of {copy.name} in {dest}: "
                       f"{exc.strerror or exc}", "free space there, or choose another "
                       "download_dir") from None
    finally:
        for p in (enc_part, plain_part):
            p.unlink(missing_ok=True)


def _fetch(remote: HostRemote, copy: OffsiteCopy, enc_part: Path, plain_part: Path, final: Path,
           identities: list, identity: str, progress: Callable[[int], None] | None,
           started: float) -> Fetched:
    import pyrage

    where = f"the copy of {copy.name} on {copy.target}"
    fd = os.open(enc_part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        w = _Hashing(fh)
        cmd = bundle.script_command(RUN_SCRIPT, [*run_args(remote.host), "cat", copy.target,
                                                f"{copy.name}.age"])
        res = remote.stream_from_remote(cmd, w, progress=progress,
                                        what=f"the fetch of {copy.name}")
    if not res.ok:
        raise OpsError(f"cannot fetch {where}: "
                       f"{res.last_error_line().removeprefix('offsite failed: ')}",
                       "nothing was changed; see fab status")
    if w.size != copy.encrypted_size or w.h.hexdigest() != copy.encrypted_sha256:
        raise OpsError(f"{where} is corrupt: {w.size} bytes with sha256 "
                       f"{w.h.hexdigest()[:16]}…, its .meta records {copy.encrypted_size} "
                       f"bytes and {copy.encrypted_sha256[:16]}…",
                       "nothing was changed; push it again with fab offsite-sync if the "
                       "host still has the backup, or use another copy")
    fd = os.open(plain_part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with enc_part.open("rb") as src, os.fdopen(fd, "wb") as fh:
        p = _Hashing(fh)
        try:
            pyrage.decrypt_io(src, p, identities)
        except (pyrage.DecryptError, pyrage.IdentityError) as exc:
            raise OpsError(f"cannot decrypt {where} with {identity}: {exc}",
                           "nothing was changed; use the identity whose public key is in "
                           "offsite_recipients") from None
        fh.flush()
        os.fsync(fh.fileno())
    digest = p.h.hexdigest()
    if digest != copy.plaintext_sha256 or p.size != copy.plaintext_size:
        raise OpsError(f"{where} decrypts to a backup whose sha256 {digest[:16]}… differs "
                       f"from the recorded {copy.plaintext_sha256[:16]}…",
                       "nothing was changed; use another copy")
    os.replace(plain_part, final)
    side = final.with_name(final.name + ".sha256")
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{digest}  {final.name}\n")
    return Fetched(final, copy, time.monotonic() - started, identity)


def mark_verified(remote: HostRemote, copy: OffsiteCopy) -> None:
    """Record on the target that ``copy`` was read back and found good."""
    res = remote.run_script(RUN_SCRIPT, *run_args(remote.host), "mark-verified", copy.target,
                            copy.name)
    if not res.ok:
        raise script_error(remote, res)

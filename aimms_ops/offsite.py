"""Offsite copies: list, sync, fetch and verify the encrypted copies on a host's targets.

The host pushes the copies itself (offsite.sh, inside the backup run) and is the only
one holding the store's credentials: every task here asks the host, through
``offsite-run.sh``, to list, push or stream a copy. Decryption happens here, on the
operator's machine, with the age identity (never sent to the host): a copy is fetched
encrypted, checked against the sha256 recorded beside it, decrypted with pyrage,
and checked against the backup's own sha256 before anything uses it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import shell
from .backups import NAME_RE, SAFETY_LABELS, SHA_RE, created_from_name, validate_name
from .checks import Check, State
from .errors import ConnectionLost, OpsError, shown
from .inventory import Host
from .offsite_config import IDENTITY_ENV, Target, conf_path
from .remote import Remote

RUN_SCRIPT = "offsite-run.sh"
_PUSH_RESULT = re.compile(r"^(\S+) (?:backup|offsite)\[\d+\] RESULT offsite (\S+) "
                          r"(ok|failed:)\s*(.*)$")


@dataclass(frozen=True)
class OffsiteCopy:
    """The copy of one backup on one target, as its ``.meta`` describes it."""

    target: str
    name: str
    plaintext_sha256: str
    plaintext_size: int
    encrypted_sha256: str
    encrypted_size: int
    pushed_at: datetime | None
    object_size: int | None
    verified_at: datetime | None = None

    @property
    def complete(self) -> bool:
        """The object is there and as large as its ``.meta`` says."""
        return self.object_size is not None and self.object_size == self.encrypted_size

    @property
    def created(self) -> datetime | None:
        return created_from_name(self.name)

    @property
    def safety(self) -> bool:
        """A copy of a safety backup (backups.SAFETY_LABELS): never what latest means."""
        m = NAME_RE.fullmatch(self.name)
        return bool(m and m.group(3) in SAFETY_LABELS)

    @property
    def name_key(self) -> str:
        """The backup's UTC stamp from its name, for ordering (labels do not count)."""
        m = NAME_RE.fullmatch(self.name)
        return (m.group(1) + m.group(2)) if m else ""

    def as_dict(self) -> dict[str, object]:
        def ts(d: datetime | None) -> str | None:
            return d.isoformat().replace("+00:00", "Z") if d else None

        m = NAME_RE.fullmatch(self.name)
        return {"name": self.name, "path": f"{self.target}:{self.name}.age",
                "size": self.plaintext_size, "sha256": self.plaintext_sha256,
                "created": ts(self.created), "location": "offsite", "target": self.target,
                "checksum": "recorded", "label": m.group(3) if m else None,
                "encrypted_size": self.encrypted_size,
                "encrypted_sha256": self.encrypted_sha256, "pushed_at": ts(self.pushed_at),
                "complete": self.complete, "verified_at": ts(self.verified_at)}


@dataclass
class TargetListing:
    """What one target holds, or why it could not be listed."""

    target: str
    ok: bool
    error: str = ""
    copies: list[OffsiteCopy] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)

    def newest(self) -> OffsiteCopy | None:
        """The newest whole copy of a regular backup (never a safety copy)."""
        whole = [c for c in self.copies if c.complete and not c.safety]
        return max(whole, key=lambda c: c.name_key) if whole else None


def _time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_list(text: str) -> list[TargetListing]:
    """The output of ``offsite-run.sh list`` (pure): one TargetListing per target."""
    out: dict[str, TargetListing] = {}
    for line in text.splitlines():
        if line.startswith("target "):
            _, name, rest = [*line.split(" ", 2), ""][:3]
            if rest == "ok":
                out[name] = TargetListing(name, True)
            else:
                out[name] = TargetListing(name, False, rest.removeprefix("failed: ").strip())
        elif line.startswith("copy "):
            target, _, fields = line[5:].partition("\t")
            parts = fields.split("\t")
            listing = out.get(target)
            if listing is None:
                continue
            if parts[0] == "partial" and len(parts) >= 2:
                listing.partial.append(parts[1])
                continue
            if len(parts) != 8 or not NAME_RE.fullmatch(parts[0]):
                continue
            name, psha, psize, esha, esize, pushed, osize, verified = parts
            if not SHA_RE.fullmatch(psha) or not SHA_RE.fullmatch(esha):
                continue
            listing.copies.append(OffsiteCopy(
                target=target, name=name, plaintext_sha256=psha,
                plaintext_size=_int(psize) or 0, encrypted_sha256=esha,
                encrypted_size=_int(esize) or 0, pushed_at=_time(pushed),
                object_size=_int(osize), verified_at=_time(verified)))
    for listing in out.values():
        listing.copies.sort(key=lambda c: c.name_key, reverse=True)
    return list(out.values())


def require(host: Host, target: str | None = None) -> list[Target]:
    """The host's targets (just ``target`` when given); an OpsError when there is none."""
    if not host.offsite:
        raise OpsError(f"host {host.name} has no offsite target in the inventory",
                       "add offsite: and offsite_recipients: to it (see the README), "
                       "then run fab install-backups")
    if target is None:
        return list(host.offsite.targets)
    return [host.offsite.target(target)]


def run_args(host: Host) -> list[str]:
    """The settings offsite-run.sh needs, as its leading flags."""
    return ["--backup-dir", host.backup_dir, "--log-file", host.log_file,
            "--lock-timeout", str(host.lock_timeout),
            "--offsite-config", conf_path(host.backup_script)]


def _script_error(remote: Remote, res) -> OpsError:
    line = res.last_error_line()
    line = line.removeprefix("offsite failed: ").removeprefix("offsite-run.sh: ")
    return OpsError(f"offsite on {remote.name}: {line}",
                    "see fab logs" if "install-backups" not in line else None)


def list_copies(remote: Remote, target: str | None = None) -> list[TargetListing]:
    """What each target holds (a target that cannot be listed says why)."""
    require(remote.host, target)
    args = [*run_args(remote.host), "list", *(["--target", target] if target else [])]
    res = remote.run_script(RUN_SCRIPT, *args)
    if not res.ok:
        raise _script_error(remote, res)
    return parse_list(res.stdout)


# --- sync ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetSync:
    target: str
    ok: bool
    detail: str
    pushed: tuple[str, ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    kept: tuple[tuple[str, str], ...] = ()


def parse_sync(stdout: str, targets: list[str]) -> list[TargetSync]:
    """The report lines of ``offsite-run.sh sync`` (pure), one TargetSync per target."""
    pushed: dict[str, list[str]] = {t: [] for t in targets}
    removed: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    kept: dict[str, list[tuple[str, str]]] = {t: [] for t in targets}
    results: dict[str, tuple[bool, str]] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        target, _, rest = value.partition(" ")
        if target not in pushed:
            continue
        name, _, reason = rest.partition(" ")
        if key == "offsite.push":
            pushed[target].append(name)
        elif key == "offsite.remove":
            removed[target].append((name, reason))
        elif key == "offsite.keep":
            kept[target].append((name, reason))
        elif key == "offsite.result":
            ok = rest.startswith("ok")
            results[target] = (ok, rest[3:].strip() if ok else rest.removeprefix("failed:")
                               .strip())
    out = []
    for t in targets:
        ok, detail = results.get(t, (False, "no result reported (see fab logs)"))
        out.append(TargetSync(t, ok, detail, tuple(pushed[t]), tuple(removed[t]),
                              tuple(kept[t])))
    return out


def sync(remote: Remote, target: str | None = None, dry_run: bool = False,
         on_log: Callable[[str], None] | None = None) -> list[TargetSync]:
    """Push every good local backup a target lacks (and its retention keeps), then prune."""
    targets = [t.name for t in require(remote.host, target)]
    args = [*run_args(remote.host), "sync", *(["--target", target] if target else []),
            *(["--dry-run"] if dry_run else [])]
    try:
        res = remote.run_script(RUN_SCRIPT, *args, on_stderr=on_log)
    except ConnectionLost as exc:
        raise ConnectionLost(f"{exc.message} (the sync may go on on the host)",
                             "run the same offsite-sync again: it pushes what is missing",
                             code=exc.code) from None
    results = parse_sync(res.stdout, targets)
    if not res.ok and not any("offsite.result=" in ln for ln in res.stdout.splitlines()):
        raise _script_error(remote, res)
    return results


# --- fetch and verify ------------------------------------------------------------------


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


def pick_copy(listing: TargetListing, name: str) -> OffsiteCopy:
    """The copy called ``name`` (or the newest whole one for ``latest``) on a target."""
    if not listing.ok:
        raise OpsError(f"cannot list offsite target {listing.target}: {listing.error}",
                       "fix the target (fab status shows it), or choose another with --from")
    if name == "latest":
        newest = listing.newest()
        if newest is None:
            raise OpsError(f"offsite target {listing.target} holds no copy of a regular "
                           "backup yet (safety copies are never latest)",
                           "push one: fab offsite-sync; or name a copy with --file")
        return newest
    validate_name(name)
    for c in listing.copies:
        if c.name == name:
            if not c.complete:
                raise OpsError(f"the copy of {name} on {listing.target} is incomplete "
                               f"({c.object_size or 0} of {c.encrypted_size} bytes)",
                               "run fab offsite-sync to push it again, or pick another copy")
            return c
    raise OpsError(f"no copy of {shown(name)} on offsite target {listing.target}",
                   "see fab list-backups")


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


def fetch(remote: Remote, copy: OffsiteCopy, dest: Path, identities: list, identity: str,
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


def _fetch(remote: Remote, copy: OffsiteCopy, enc_part: Path, plain_part: Path, final: Path,
           identities: list, identity: str, progress: Callable[[int], None] | None,
           started: float) -> Fetched:
    import pyrage

    where = f"the copy of {copy.name} on {copy.target}"
    fd = os.open(enc_part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        w = _Hashing(fh)
        cmd = shell.script_command(RUN_SCRIPT, [*run_args(remote.host), "cat", copy.target,
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


def mark_verified(remote: Remote, copy: OffsiteCopy) -> None:
    """Record on the target that ``copy`` was read back and found good."""
    res = remote.run_script(RUN_SCRIPT, *run_args(remote.host), "mark-verified", copy.target,
                            copy.name)
    if not res.ok:
        raise _script_error(remote, res)


# --- status ------------------------------------------------------------------------------


def parse_push_results(log_text: str) -> dict[str, tuple[datetime | None, bool, str]]:
    """The last ``RESULT offsite NAME ok|failed:`` line of each target (pure)."""
    out: dict[str, tuple[datetime | None, bool, str]] = {}
    for line in log_text.splitlines():
        m = _PUSH_RESULT.match(line)
        if not m:
            continue
        try:
            at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            at = None
        out[m.group(2)] = (at, m.group(3) == "ok", m.group(4).strip())
    return out


def judge(listings: list, pushes: dict, now: datetime, max_age: int,
                  max_age_text: str) -> list[Check]:
    """One check per target (pure): its newest whole copy and its last push."""
    from .units import age as format_age

    checks = []
    for lst in listings:
        name = f"offsite {lst.target}"
        # The newest of the target's own result and one for all targets (settings missing).
        mine, every = pushes.get(lst.target), pushes.get("all")
        if mine is None or (every is not None and every[0] and mine[0] and every[0] > mine[0]):
            mine = every
        at, ok, reason = mine or (None, True, "")
        if not ok:
            when = f" {format_age((now - at).total_seconds())} ago" if at else ""
            checks.append(Check(name, State.CRITICAL, f"last push failed{when}: {reason}",
                                "fix it; the next backup, or fab offsite-sync, pushes what "
                                "is missing"))
            continue
        if not lst.ok:
            checks.append(Check(name, State.CRITICAL, f"cannot list the copies: {lst.error}",
                                "fix the target or its credentials, then fab offsite-sync"))
            continue
        newest = lst.newest()
        if newest is None or newest.created is None:
            checks.append(Check(name, State.CRITICAL, "no copy on the target yet",
                                "run fab offsite-sync"))
            continue
        age = (now - newest.created).total_seconds()
        if age > max_age:
            checks.append(Check(name, State.CRITICAL, f"newest copy is {format_age(age)} old "
                                f"(max {max_age_text}): {newest.name}",
                                "see fab logs; fab offsite-sync pushes what is missing"))
            continue
        last = "last push ok" + (f" {format_age((now - at).total_seconds())} ago" if at else "")
        checks.append(Check(name, State.OK, f"newest copy {format_age(age)} ago "
                            f"({newest.name}); {last}"))
    return checks

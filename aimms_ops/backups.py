"""Backups: names, listing, the backup run itself, download and retention.

The backup is made on the host by the packaged ``backup-postgres.sh`` (the same
file cron runs); this module builds its arguments, parses what it reports and
returns data for the task layer to render.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import shell
from .errors import ConnectionLost, OpsError, shown
from .inventory import Host
from .remote import DiskFile, Remote
from .retention import NAME_RE, Pin, parse_pin

BACKUP_SCRIPT = "backup-postgres.sh"
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}")
SHA_RE = re.compile(r"^[0-9a-f]{64}")
#: Labels of the safety copies that restore and rebuild take first: pinned for
#: safety_pin_days by the backup script, and never what ``latest`` means.
SAFETY_LABELS = ("pre-restore", "pre-rebuild")
NAME_HINT = ("expected a name like aimms_postgres_20260101_020000.sql.gz, or latest; "
             "see fab list-backups")


@dataclass(frozen=True)
class BackupFile:
    """A backup on the host (``remote``) or in the local download folder (``local``)."""

    name: str
    path: str
    size: int
    sha256: str | None
    created: datetime
    location: str
    pin: Pin | None = None

    @property
    def pinned(self) -> bool:
        """Pinned now: never removed by retention (an expired pin does not count)."""
        return self.pin is not None and self.pin.active(time.time())

    @property
    def label(self) -> str | None:
        m = NAME_RE.fullmatch(self.name)
        return m.group(3) if m else None

    @property
    def safety(self) -> bool:
        """A safety copy of the state before a restore or a rebuild, not a regular backup."""
        return self.label in SAFETY_LABELS

    @property
    def checksum_state(self) -> str:
        return "recorded" if self.sha256 else "missing"

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("pin")
        d["created"] = self.created.isoformat().replace("+00:00", "Z")
        d["checksum"] = self.checksum_state
        d["label"] = self.label
        d["safety"] = self.safety
        d["pinned"] = self.pinned
        d["pin_reason"] = self.pin.reason if self.pinned and self.pin else None
        d["pinned_by"] = self.pin.by if self.pinned and self.pin else None
        until = self.pin.until if self.pinned and self.pin else None
        d["pinned_until"] = (datetime.fromtimestamp(until, tz=UTC).isoformat()
                             .replace("+00:00", "Z") if until else None)
        return d


@dataclass(frozen=True)
class BackupResult:
    """What one run of the backup script made."""

    name: str
    path: str
    size: int
    sha256: str
    seconds: int
    container: str
    pruned: tuple[str, ...] = ()
    suspicious: str | None = None  # "suspicious: size dropped from X to Y" (the guard)


@dataclass(frozen=True)
class PruneDecision:
    name: str
    action: str  # "keep" or "remove"
    reason: str
    rule: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "action": self.action, "rule": self.rule,
                "reason": self.reason}


def validate_label(label: str, *, safety: bool = False) -> str:
    """A backup label: letters, digits, '-' and '_' only; the safety labels are reserved."""
    if not LABEL_RE.fullmatch(label or ""):
        raise OpsError(f"invalid label {shown(label)}: a label allows letters, digits, - and _ "
                       "only (at most 64)", "for example --label=pre-migration")
    if (label in SAFETY_LABELS) != safety:
        raise OpsError(f"the label {label} is reserved for the safety copies that restore and "
                       "rebuild-volume take", "pick another label, e.g. --label=pre-migration")
    return label


def validate_name(name: str) -> str:
    """A backup file name, never a path: refuses '/', '..' and shell metacharacters."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise OpsError(f"not a backup name: {shown(name)}", NAME_HINT)
    return name


def created_from_name(name: str) -> datetime | None:
    m = NAME_RE.fullmatch(name)
    if not m:
        return None
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


# --- the backup script ---------------------------------------------------------------


def script_settings(host: Host) -> dict[str, str]:
    """The backup script's settings for ``host`` (also written to its config file)."""
    settings = {
        "BACKUP_DIR": host.backup_dir,
        "LOG_FILE": host.log_file,
        "COMPOSE_PROJECT": host.compose.project,
        "COMPOSE_SERVICE": host.compose.postgres_service,
        "PG_SUPERUSER": host.postgres.superuser,
        "RETENTION_DAYS": str(host.retention_days),
        "MIN_KEEP": str(host.min_keep),
        "LOCK_TIMEOUT": str(host.lock_timeout),
        **retention_settings(host),
    }
    if host.offsite:  # the targets the script pushes to after a good backup (offsite.sh)
        settings["OFFSITE_CONFIG"] = f"{host.backup_script}.offsite"
    return settings


def retention_settings(host: Host) -> dict[str, str]:
    """The settings of retention, pins, the size-drop guard and pings."""
    ping = host.ping
    return {
        "RETENTION_RULES": host.policy.rules_text,
        "SAFETY_PIN_DAYS": str(host.safety_pin_days),
        "ALLOW_SHRINK": "1" if host.allow_shrink else "0",
        "PING_URL": ping.url if ping else "",
        "PING_KIND": ping.kind if ping else "healthchecks",
        "PING_URL_VERIFY": (ping.verify_url or "") if ping else "",
    }


_FLAG = {"BACKUP_DIR": "--backup-dir", "LOG_FILE": "--log-file", "COMPOSE_PROJECT": "--project",
         "COMPOSE_SERVICE": "--service", "PG_SUPERUSER": "--superuser",
         "RETENTION_DAYS": "--retention-days", "MIN_KEEP": "--min-keep",
         "LOCK_TIMEOUT": "--lock-timeout", "RETENTION_RULES": "--retention-rules",
         "SAFETY_PIN_DAYS": "--safety-pin-days", "PING_URL": "--ping-url",
         "PING_KIND": "--ping-kind",
         "OFFSITE_CONFIG": "--offsite-config"}


def script_args(host: Host, *extra: str) -> list[str]:
    """Command-line flags that give the backup script every setting of ``host``."""
    args: list[str] = []
    for key, value in script_settings(host).items():
        if key in _FLAG:
            args += [_FLAG[key], value]
    if host.allow_shrink:
        args.append("--allow-shrink")
    return [*args, *extra]


def parse_result(stdout: str) -> dict[str, str]:
    """The ``result.KEY=VALUE`` lines of the backup script."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("result."):
            out[key] = value
    return out


#: The rules a prune line can name (retention.py's, and the day-based fallback's).
_RULE = re.compile(r"^(?:pinned|min_keep|within|older|empty|none|orphan|"
                   r"(?:daily|weekly|monthly|yearly)(?:\[oldest\])?)$")


def parse_prune(stdout: str) -> list[PruneDecision]:
    """The ``prune.keep=NAME RULE REASON`` / ``prune.remove=...`` lines, in order."""
    decisions = []
    for line in stdout.splitlines():
        for action in ("keep", "remove"):
            prefix = f"prune.{action}="
            if line.startswith(prefix):
                name, _, rest = line[len(prefix):].partition(" ")
                rule, _, reason = rest.partition(" ")
                if not _RULE.fullmatch(rule):
                    rule, reason = "", rest
                decisions.append(PruneDecision(name, action, reason, rule))
    return decisions


def run_backup(remote: Remote, label: str | None = None,
               on_log: Callable[[str], None] | None = None, *,
               safety: bool = False, allow_shrink: bool = False) -> BackupResult:
    """Make a backup now with the packaged script (the one cron runs).

    ``safety``: a safety copy, labelled with one of SAFETY_LABELS, which the script
    pins for ``safety_pin_days``. ``allow_shrink`` accepts a backup that the size-drop
    guard would call suspicious.
    """
    extra = ["--echo", "--report"]
    if allow_shrink:
        extra.append("--allow-shrink")
    if label:
        extra += ["--label", validate_label(label, safety=safety)]
    try:
        res = remote.run_script(BACKUP_SCRIPT, *script_args(remote.host, *extra),
                                on_stderr=on_log)
    except ConnectionLost as exc:
        raise ConnectionLost(f"{exc.message} (the backup itself goes on on the host)",
                             "see its RESULT line with fab logs, and fab list-backups",
                             code=exc.code) from None
    if not res.ok:
        raise OpsError(f"backup on {remote.name} failed: {_failure_reason(res.stderr)}",
                       f"see fab logs; nothing was published in {remote.host.backup_dir}")
    r = parse_result(res.stdout)
    try:
        return BackupResult(
            name=r["result.name"], path=r["result.path"], size=int(r["result.size"]),
            sha256=r["result.sha256"], seconds=int(r["result.seconds"]),
            container=r.get("result.container", ""),
            pruned=tuple(d.name for d in parse_prune(res.stdout) if d.action == "remove"),
            suspicious=r.get("result.suspicious"),
        )
    except (KeyError, ValueError):
        raise OpsError(f"the backup script on {remote.name} reported no result",
                       "see fab logs") from None


def _failure_reason(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if "RESULT failed:" in line:
            return line.split("RESULT failed:", 1)[1].strip()
        if line.startswith(("backup failed:", "backup-postgres.sh:")):
            return line.split(":", 1)[1].strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def plan_digest(plan: list[PruneDecision]) -> str:
    """What the host checks before it removes anything: the decision it would apply must
    be the one shown (sha256 of its ``ACTION<TAB>NAME`` lines; orphans aside)."""
    text = "".join(f"{d.action}\t{d.name}\n" for d in plan if d.rule != "orphan")
    return hashlib.sha256(text.encode()).hexdigest()


def prune(remote: Remote, *, dry_run: bool,
          expect: list[PruneDecision] | None = None) -> list[PruneDecision]:
    """Apply (or with ``dry_run`` only plan) the retention policy on the host.

    With ``expect`` (the plan a dry run returned) the host removes nothing unless its
    decision is still exactly that one.
    """
    extra = ["--prune-only", "--report"] + (["--dry-run"] if dry_run else [])
    if expect is not None:
        extra += ["--expect-plan", plan_digest(expect)]
    res = remote.run_script(BACKUP_SCRIPT, *script_args(remote.host, *extra))
    if not res.ok:
        raise OpsError(f"retention on {remote.name} failed: {_failure_reason(res.stderr)}",
                       "see fab logs")
    return parse_prune(res.stdout)


# --- listing -------------------------------------------------------------------------


def parse_listing(text: str, backup_dir: str) -> list[BackupFile] | None:
    """Parse list-backups.sh output; None when the backup dir does not exist."""
    if text.strip() == "missing":
        return None
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) not in (4, 5) or not NAME_RE.fullmatch(parts[2]):
            continue
        mtime, size, name, sha = parts[:4]
        out.append(BackupFile(
            name=name, path=f"{backup_dir.rstrip('/')}/{name}", size=int(size),
            sha256=sha if SHA_RE.fullmatch(sha) else None,
            created=datetime.fromtimestamp(int(mtime), tz=UTC), location="remote",
            pin=_pin_field(parts[4]) if len(parts) == 5 else None,
        ))
    return out


def _pin_field(field: str) -> Pin | None:
    if field in ("", "-"):
        return None
    try:
        return parse_pin(base64.b64decode(field).decode("utf-8", "replace"))
    except (binascii.Error, ValueError):
        return Pin(reason="unreadable pin file")


def list_remote(remote: Remote) -> list[BackupFile]:
    """The backups on the host, newest first (empty when the dir does not exist)."""
    res = remote.run_script("list-backups.sh", remote.host.backup_dir)
    if not res.ok:
        raise OpsError(f"cannot list backups on {remote.name}: {res.last_error_line()}")
    return parse_listing(res.stdout, remote.host.backup_dir) or []


def list_local(folder: Path) -> list[BackupFile]:
    """The backups already downloaded into ``folder``, newest first."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if not NAME_RE.fullmatch(p.name) or not p.is_file():
            continue
        sha = None
        side = p.with_name(p.name + ".sha256")
        if side.is_file():
            first = side.read_text(errors="replace").split()[:1]
            sha = first[0] if first and SHA_RE.fullmatch(first[0]) else None
        st = p.stat()
        out.append(BackupFile(name=p.name, path=str(p.resolve()), size=st.st_size, sha256=sha,
                              created=datetime.fromtimestamp(st.st_mtime, tz=UTC),
                              location="local"))
    out.sort(key=lambda b: b.created, reverse=True)
    return out


def pick(backups: list[BackupFile], name: str) -> BackupFile:
    """The backup called ``name`` from a listing (newest first).

    ``latest`` is the newest regular backup (scheduled or fab backup), never a safety
    copy: after a restore it is still the backup the operator means.
    """
    if name == "latest":
        regular = [b for b in backups if not b.safety]
        if regular:
            return regular[0]
        if backups:
            raise OpsError("there is no regular backup on the host, only safety copies "
                           f"({', '.join(b.name for b in backups[:3])})",
                           "name one with --file=NAME, or make a backup: fab backup")
        raise OpsError("there are no backups on the host yet", "make one: fab backup")
    validate_name(name)
    for b in backups:
        if b.name == name:
            return b
    raise OpsError(f"no backup named {name} on the host", "see fab list-backups")


# --- download ------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    seconds: float
    resumed_from: int
    already_present: bool = False


def _remote_sha256(remote: Remote, backup: BackupFile) -> str:
    if backup.sha256:
        return backup.sha256
    res = remote.run(["sha256sum", "--", backup.path], what="sha256sum")
    digest = res.stdout.split()[:1]
    if not res.ok or not digest or not SHA_RE.fullmatch(digest[0]):
        raise OpsError(f"cannot checksum {backup.name} on {remote.name}: "
                       f"{res.last_error_line()}")
    return digest[0]


def _hash_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h


class _HashingWriter:
    def __init__(self, fh, h) -> None:
        self.fh = fh
        self.h = h

    def write(self, data: bytes) -> int:
        self.h.update(data)
        try:
            return self.fh.write(data)
        except OSError as exc:
            # An OpsError, so that the stream does not take it for a network error.
            raise _local_error(exc, "cannot write the download") from None


def _local_error(exc: OSError, what: str) -> OpsError:
    """A local file system error of a download as one line: what, where, why, the fix."""
    where = str(exc.filename or "")
    if len(where) > 80:
        where = where[:77] + "..."
    return OpsError(f"{what}: {where + ': ' if where else ''}{exc.strerror or exc}",
                    "free space or fix the permissions there, or choose another --dest; "
                    "then run the same download again: it resumes")


def download(remote: Remote, backup: BackupFile, dest: Path, *,
             progress_factory: Callable[[int, int], object] | None = None,
             ) -> Download:
    """Copy ``backup`` into ``dest`` through a ``.part`` file that a rerun resumes.

    The result is verified against the host's sha256 before it is renamed into
    place; files are 0600. ``progress_factory(total, initial)`` returns a context
    manager yielding an ``advance(n)`` callable.
    """
    expected = _remote_sha256(remote, backup)
    try:
        return _download(remote, backup, dest, expected, progress_factory)
    except OSError as exc:
        raise _local_error(exc, "cannot write the download") from None


def _download(remote: Remote, backup: BackupFile, dest: Path, expected: str,
              progress_factory: Callable[[int, int], object] | None) -> Download:
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = dest / backup.name
    part = dest / (backup.name + ".part")
    if final.is_file() and final.stat().st_size == backup.size:
        if _hash_file(final).hexdigest() == expected:
            _write_sidecar(final, expected)
            return Download(final, backup.size, expected, 0.0, 0, already_present=True)
    offset = part.stat().st_size if part.is_file() else 0
    if offset > backup.size:
        part.unlink()
        offset = 0
    h = _hash_file(part) if offset else hashlib.sha256()
    started = time.monotonic()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as fh:
        writer = _HashingWriter(DiskFile(fh), h)
        cmd = shell.join(["tail", "-c", f"+{offset + 1}", "--", backup.path])
        if offset < backup.size:
            ctx = progress_factory(backup.size, offset) if progress_factory else None
            try:
                if ctx is not None:
                    with ctx as advance:  # type: ignore[attr-defined]
                        res = remote.stream_from_remote(cmd, writer, progress=advance)
                else:
                    res = remote.stream_from_remote(cmd, writer)
            except ConnectionLost as exc:
                raise ConnectionLost(f"download of {backup.name} stopped: {exc.message}",
                                     f"run the same download again: it resumes from {part}",
                                     code=exc.code) from None
            if not res.ok:
                raise OpsError(f"download of {backup.name} failed: {res.last_error_line()}",
                               "run the same download again: it resumes")
        fh.flush()
        os.fsync(fh.fileno())
    size = part.stat().st_size
    if size != backup.size:
        raise OpsError(f"download of {backup.name} is incomplete ({size} of {backup.size} "
                       "bytes)", "run the same download again: it resumes")
    digest = h.hexdigest()
    if digest != expected:
        part.unlink()
        raise OpsError(f"download of {backup.name} does not match its sha256 (got {digest[:12]}…, "
                       f"expected {expected[:12]}…); the partial file was removed",
                       "run the download again; if it fails again, run fab verify on the host")
    os.replace(part, final)
    _write_sidecar(final, expected)
    return Download(final, size, expected, time.monotonic() - started, offset)


def _write_sidecar(final: Path, digest: str) -> None:
    side = final.with_name(final.name + ".sha256")
    tmp = side.with_name(side.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{digest}  {final.name}\n")
    os.replace(tmp, side)
    os.chmod(final, 0o600)


def read_log(remote: Remote, lines: int) -> str:
    """The last ``lines`` lines of the backup log on the host."""
    if not 1 <= lines <= 100_000:
        raise OpsError(f"--lines must be between 1 and 100000, got {lines}")
    res = remote.run(["tail", "-n", str(lines), "--", remote.host.log_file], what="tail")
    if not res.ok:
        raise OpsError(f"cannot read {remote.host.log_file} on {remote.name}: "
                       f"{res.last_error_line()}", "has a backup run yet? fab install-backups")
    return res.stdout


# --- pins ----------------------------------------------------------------------------

PIN_REASON_MAX = 200


def validate_reason(reason: str) -> str:
    """A pin's reason: one line of printable text, at most 200 characters."""
    if not isinstance(reason, str) or len(reason) > PIN_REASON_MAX or not reason.isprintable():
        raise OpsError(f"invalid --reason {shown(reason)}: one line of printable text, at most "
                       f"{PIN_REASON_MAX} characters", "e.g. --reason='before the migration'")
    return reason


def set_pin(remote: Remote, name: str, *, pinned: bool, by: str = "",
            reason: str = "") -> bool:
    """Pin (or unpin) the backup ``name`` on the host; unpin returns whether it was pinned."""
    validate_name(name)
    host = remote.host
    if pinned:
        args = ["pin", host.backup_dir, name, by, validate_reason(reason)]
    else:
        args = ["unpin", host.backup_dir, name]
    res = remote.run_script("pin.sh", *args)
    if res.rc == 66:
        raise OpsError(f"no backup named {name} on {remote.name}", "see fab list-backups")
    if not res.ok:
        raise OpsError(f"cannot {'pin' if pinned else 'unpin'} {name} on {remote.name}: "
                       f"{res.last_error_line()}")
    return pinned or "was=1" in res.stdout.splitlines()

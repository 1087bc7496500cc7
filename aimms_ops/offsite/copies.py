"""Offsite copies: what each target holds, as the host lists it, and how current it is.

The host pushes the copies itself (the host program's offsite push-all, inside the
backup run) and is the only one holding the store's credentials: every task asks the
host, through ``offsite-run.sh`` (the host program's ``offsite`` command), to list, push
or stream a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aimms_ops.core.checks import Check, State
from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.names import SAFETY_LABELS, SHA_RE, created_from_name, validate_name
from aimms_ops.core.retention import NAME_RE
from aimms_ops.host.events import Events, parse
from aimms_ops.host.remote import Remote
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host
from aimms_ops.inventory.offsite import Target

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


def _int(value: object) -> int | None:
    text = str(value)
    return int(text) if text.isdigit() else None


def parse_list(found: Events) -> list[TargetListing]:
    """The events of ``offsite-run.sh list`` (pure): one TargetListing per target."""
    out: dict[str, TargetListing] = {}
    for e in found.all:
        kind, target = e["event"], str(e.get("target", ""))
        if kind == "target":
            out[target] = TargetListing(target, e.get("ok") is True, str(e.get("error", "")))
            continue
        listing = out.get(target)
        if listing is None:
            continue
        name = str(e.get("name", ""))
        if kind == "partial":
            listing.partial.append(name)
        elif kind == "copy":
            psha, esha = str(e.get("plaintext_sha256")), str(e.get("encrypted_sha256"))
            if not (NAME_RE.fullmatch(name) and SHA_RE.fullmatch(psha)
                    and SHA_RE.fullmatch(esha)):
                continue
            listing.copies.append(OffsiteCopy(
                target=target, name=name, plaintext_sha256=psha,
                plaintext_size=_int(e.get("plaintext_size")) or 0, encrypted_sha256=esha,
                encrypted_size=_int(e.get("encrypted_size")) or 0,
                pushed_at=_time(str(e.get("pushed_at"))),
                object_size=_int(e.get("object_size")),
                verified_at=_time(str(e.get("verified_at")))))
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
            "--offsite-config", host.layout.offsite_config]


def script_error(remote: Remote, res) -> OpsError:
    line = res.last_error_line()
    line = line.removeprefix("offsite failed: ").removeprefix("offsite-run.sh: ")
    return OpsError(f"offsite on {remote.name}: {line}",
                    "see fab logs" if "install-backups" not in line else None)


def list_copies(remote: HostRemote, target: str | None = None) -> list[TargetListing]:
    """What each target holds (a target that cannot be listed says why)."""
    require(remote.host, target)
    args = [*run_args(remote.host), "list", *(["--target", target] if target else [])]
    res = remote.run_script(RUN_SCRIPT, *args)
    if not res.ok:
        raise script_error(remote, res)
    return parse_list(parse(res.stdout))


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
    from aimms_ops.core.units import age as format_age

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

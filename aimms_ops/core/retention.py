"""Retention: which backups to keep and which to remove, and the rule that decided each.

One pure function, :func:`decide`, is the whole policy. It runs in two places from
this one file: imported on the operator's machine (tests, ``fab prune`` rendering),
and on the host, where the backup script inlines this file and runs it with the
host's ``python3`` (``main()`` below) to decide what its retention step removes.
So it uses the standard library only and runs on Python 3.7 and later.

The rules are borg prune's, on UTC calendar periods of each backup's time (its file's
modification time): rules apply in order (``within``, then ``daily``, ``weekly``,
``monthly``, ``yearly``); each keeps the newest backup of each period, newest periods
first, until it has kept N; a backup kept by an earlier rule does not count for a
later one (its period is used up all the same); when a rule cannot find N periods
it keeps the oldest backup (``daily[oldest]``). Only good backups (non-empty files)
fill periods. Then, whatever the rules say, the newest ``min_keep`` good backups are
kept, and pinned backups are never removed (they are set aside before the rules:
a pin does not use up a period).

An inventory with ``retention_days`` is the policy ``within=N days`` plus
``min_keep``: it keeps exactly what the day-based rule kept before (every backup
younger than N days, and the newest ``min_keep`` good ones whatever their age).
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

#: The compressions a backup is made with (the inventory's ``compression``, the first the
#: default) and the file name ending of each: the one definition (names, the host
#: scripts through lib.sh).
EXTENSIONS = (("gzip", ".sql.gz"), ("zstd", ".sql.zst"))
#: The name of a backup, the one definition (backups, the host scripts through lib.sh):
#: its UTC date and time, an optional label, one of the EXTENSIONS.
NAME_RE = re.compile(r"^aimms_postgres_(\d{8})_(\d{6})(?:_([A-Za-z0-9_-]{1,64}))?(?:"
                     + "|".join(re.escape(ext) for _, ext in EXTENSIONS) + ")$")
PIN_SUFFIX = ".pin"
#: The calendar period of each bucket rule (ISO week for weekly), in the order applied.
PERIODS = (("daily", "%Y-%m-%d"), ("weekly", "%G-W%V"), ("monthly", "%Y-%m"), ("yearly", "%Y"))
RULES = tuple(r for r, _ in PERIODS)


@dataclass(frozen=True)
class Pin:
    """A pin file beside a backup: who pinned it, when, why, and until when (or for ever)."""

    by: str = ""
    at: str = ""
    reason: str = ""
    until: float | None = None  # epoch seconds; None: for ever

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


@dataclass(frozen=True)
class Backup:
    """What retention needs to know of one backup."""

    name: str
    mtime: float  # epoch seconds (the file's modification time, UTC)
    size: int = 1
    pin: Pin | None = None

    @property
    def good(self) -> bool:
        """A real backup: the script never publishes an empty one."""
        return self.size > 0


@dataclass(frozen=True)
class Policy:
    """The retention policy: ``within`` days (the day-based rule), GFS counts, min_keep."""

    within_days: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    min_keep: int = 3

    @property
    def rules_text(self) -> str:
        """The GFS part as ``daily=7 weekly=4 ...`` (what the host script is given)."""
        return " ".join(f"{r}={getattr(self, r)}" for r in RULES if getattr(self, r))

    def describe(self) -> str:
        parts = []
        if self.within_days:
            parts.append(f"keep {self.within_days} days")
        parts += [f"{getattr(self, r)} {r}" for r in RULES if getattr(self, r)]
        parts.append(f"never fewer than the newest {self.min_keep}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Decision:
    name: str
    keep: bool
    rule: str  # pinned, within, daily .. yearly, daily[oldest] .., min_keep; older, empty, none
    reason: str
    mtime: float = 0.0

    @property
    def action(self) -> str:
        return "keep" if self.keep else "remove"


def parse_rules(text: str) -> dict[str, int]:
    """``daily=7 weekly=4`` into ``{"daily": 7, "weekly": 4}``; ValueError when malformed."""
    out: dict[str, int] = {}
    for part in text.replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep or key not in RULES or not value.isdigit():
            raise ValueError(f"bad retention rule {part!r} (expected e.g. daily=7)")
        out[key] = int(value)
    return out


def _age(now: float, mtime: float) -> str:
    return f"{max(0, int(now) - int(mtime)) // 86400}d old"


def _period(mtime: float, pattern: str) -> str:
    return datetime.fromtimestamp(mtime, tz=timezone.utc).strftime(pattern)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(backups: list[Backup], policy: Policy, now: float) -> list[Decision]:
    """Keep or remove each of ``backups`` under ``policy`` at time ``now`` (epoch seconds).

    Returns one Decision per backup, newest first, naming the rule that decided it.
    Pure: no clock, no disk.
    """
    ordered = sorted(backups, key=lambda b: (b.mtime, b.name), reverse=True)
    kept: dict[str, tuple[str, str]] = {}
    pinned = [b for b in ordered if b.pin is not None and b.pin.active(now)]
    for b in pinned:
        pin = b.pin
        assert pin is not None
        until = f" until {_iso(pin.until)}" if pin.until is not None else ""
        who = f" by {pin.by}" if pin.by else ""
        why = f": {pin.reason}" if pin.reason else ""
        kept[b.name] = ("pinned", f"pinned{who}{until}{why}")
    free = [b for b in ordered if b.name not in kept]

    if policy.within_days:
        cutoff = int(now) - policy.within_days * 86400
        for b in free:
            if int(b.mtime) >= cutoff:
                kept[b.name] = ("within", f"younger than {policy.within_days} days "
                                f"({_age(now, b.mtime)})")

    good = [b for b in free if b.good]
    for rule, pattern in PERIODS:
        n = getattr(policy, rule)
        if n <= 0:
            continue
        count = 0
        last = None
        for b in good:
            period = _period(b.mtime, pattern)
            if period == last:
                continue
            last = period
            if b.name in kept:
                continue  # its period is used up, but it counts for the earlier rule
            count += 1
            kept[b.name] = (rule, f"{rule} {count} of {n} ({period})")
            if count == n:
                break
        oldest = good[-1] if good else None
        if oldest is not None and count < n and oldest.name not in kept:
            kept[oldest.name] = (f"{rule}[oldest]", f"the oldest backup, kept because {rule} "
                                 f"has only {count} of {n} ({_period(oldest.mtime, pattern)})")

    i = 0
    for b in ordered:
        if not b.good:
            continue
        i += 1
        if i > policy.min_keep:
            break
        if b.name not in kept:
            kept[b.name] = ("min_keep", f"newest {i} of {policy.min_keep} kept whatever their "
                            f"age ({_age(now, b.mtime)})")

    out = []
    for b in ordered:
        if b.name in kept:
            rule, reason = kept[b.name]
            out.append(Decision(b.name, True, rule, reason, b.mtime))
        elif not b.good:
            out.append(Decision(b.name, False, "empty", f"empty file, not a backup "
                                f"({_age(now, b.mtime)})", b.mtime))
        elif policy.within_days and not any(getattr(policy, r) for r in RULES):
            out.append(Decision(b.name, False, "older", f"older than {policy.within_days} days "
                                f"({_age(now, b.mtime)})", b.mtime))
        else:
            out.append(Decision(b.name, False, "none", f"no rule keeps it "
                                f"({_period(b.mtime, '%Y-%m-%d')}, {_age(now, b.mtime)})",
                                b.mtime))
    return out


# --- pins -----------------------------------------------------------------------------


def parse_pin(text: str) -> Pin:
    """A pin file's ``key=value`` lines (by, at, until, reason); unknown keys ignored."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    until = None
    if values.get("until"):
        try:
            until = datetime.strptime(values["until"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc).timestamp()
        except ValueError:
            until = None  # unreadable: pinned for ever rather than not at all
    return Pin(by=values.get("by", ""), at=values.get("at", ""), reason=values.get("reason", ""),
               until=until)


def pin_text(by: str, at: float, reason: str, until: float | None = None) -> str:
    """The text of a pin file (what ``fab pin`` and the backup script write)."""
    lines = [f"by={by}", f"at={_iso(at)}", f"until={_iso(until) if until else ''}",
             f"reason={reason}"]
    return "\n".join(lines) + "\n"


# --- on the host ----------------------------------------------------------------------


def scan(directory: str) -> list[Backup]:
    """The backups in ``directory`` with their pins (the host side of :func:`decide`)."""
    out = []
    with os.scandir(directory) as it:
        entries = [e for e in it if NAME_RE.match(e.name) and e.is_file(follow_symlinks=False)]
    for e in entries:
        st = e.stat(follow_symlinks=False)
        pin = None
        pin_path = os.path.join(directory, e.name + PIN_SUFFIX)
        if os.path.isfile(pin_path):
            try:
                with open(pin_path, encoding="utf-8", errors="replace") as fh:
                    pin = parse_pin(fh.read(4096))
            except OSError:
                pin = Pin(reason="unreadable pin file")
        out.append(Backup(e.name, st.st_mtime, st.st_size, pin))
    return out


def main(argv: list[str]) -> int:
    """``python3 retention.py DIR NOW WITHIN_DAYS MIN_KEEP [RULES]``: one line per backup.

    Prints ``keep|remove<TAB>NAME<TAB>RULE<TAB>REASON``, newest first. Removes nothing:
    the backup script applies the decision.
    """
    if len(argv) not in (4, 5):
        print("usage: retention.py DIR NOW WITHIN_DAYS MIN_KEEP [RULES]", file=sys.stderr)
        return 64
    directory, now_text, within, min_keep = argv[:4]
    try:
        rules = parse_rules(argv[4] if len(argv) == 5 else "")
        policy = Policy(within_days=int(within), min_keep=int(min_keep), **rules)
        now = float(now_text) if now_text else time.time()
    except ValueError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 64
    try:
        backups = scan(directory)
    except OSError as exc:
        print(f"retention: cannot read {directory}: {exc.strerror}", file=sys.stderr)
        return 1
    for d in decide(backups, policy, now):
        reason = d.reason.replace("\t", " ").replace("\n", " ")
        print(f"{d.action}\t{d.name}\t{d.rule}\t{reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

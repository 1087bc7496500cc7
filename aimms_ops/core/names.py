"""What a backup is called: its name, label, checksum format and pin reason.

The name pattern itself is ``retention.NAME_RE`` and the file name endings of the
compressions ``retention.EXTENSIONS`` (the host runs that file too).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from aimms_ops.core.errors import OpsError, shown
from aimms_ops.core.retention import EXTENSIONS, NAME_RE, SAFETY_LABELS, Pin

LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}")


SHA_RE = re.compile(r"^[0-9a-f]{64}")


#: The compressions a backup can be made with (inventory ``compression``); the first
#: is the default.
COMPRESSIONS = tuple(c for c, _ in EXTENSIONS)
DEFAULT_COMPRESSION = COMPRESSIONS[0]
#: The file name endings of the backups, as one regular expression (no groups).
EXTENSION_RE = "(?:" + "|".join(re.escape(ext) for _, ext in EXTENSIONS) + ")"
#: The compression of each dump format (names.dump_format): ``gz`` is gzip, ``zst`` zstd.
FORMAT_COMPRESSION = {ext.rsplit(".", 1)[1]: c for c, ext in EXTENSIONS}
#: What a dump file given to restore or rebuild-volume may be.
DUMP_FILE_HINT = (f"a local {', '.join(ext for _, ext in EXTENSIONS)} or .sql, the name of a "
                  "backup on the host, or latest")

NAME_HINT = (f"expected a name like aimms_postgres_20260101_020000{EXTENSIONS[0][1]} (or "
             f"{', '.join(ext for _, ext in EXTENSIONS[1:])}), or latest; see fab list-backups")


def dump_format(name: str) -> str:
    """The format of a dump file by its name: ``gz`` or ``zst`` (the last part of an
    ending of EXTENSIONS: any ``.gz``, any ``.zst``), else ``plain`` (a ``.sql``)."""
    for fmt in FORMAT_COMPRESSION:
        if name.endswith("." + fmt):
            return fmt
    return "plain"


def stream_check(fmt: str) -> str:
    """The name of the check that a dump of format ``fmt`` decompresses to its end:
    ``gzip stream`` or ``zstd stream`` (``gzip stream`` for plain SQL, as before)."""
    return f"{FORMAT_COMPRESSION.get(fmt, DEFAULT_COMPRESSION)} stream"


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
        d["pinned_until"] = (datetime.fromtimestamp(until, tz=timezone.utc).isoformat()
                             .replace("+00:00", "Z") if until else None)
        return d


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
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


PIN_REASON_MAX = 200


def validate_reason(reason: str) -> str:
    """A pin's reason: one line of printable text, at most 200 characters."""
    if not isinstance(reason, str) or len(reason) > PIN_REASON_MAX or not reason.isprintable():
        raise OpsError(f"invalid --reason {shown(reason)}: one line of printable text, at most "
                       f"{PIN_REASON_MAX} characters", "e.g. --reason='before the migration'")
    return reason

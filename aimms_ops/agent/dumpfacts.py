"""What each backup holds, recorded when it is made, so that a restore need not read the
whole dump again before it starts.

The backup's own check reads the decompressed stream to its end; the dump reader reads
it beside (``agent.dumping``) and its facts (``aimms_ops.dump.facts.fields``: header,
completion, size, databases, roles) are kept in ``BACKUP_DIR/.dump-facts/SHA256.vN.json``,
named by the sha256 of the file they describe: they hold for any file with those bytes,
and for no other. ``inspect-dump`` (``agent.dumpfile``) then hashes the file and, when
the hash is the one its ``.sha256`` recorded and facts are kept for it, reports them
instead of decompressing and scanning it again. The facts are kept only for a stream the
backup checked (it decompresses to its end, with its completion marker), so a file whose
hash matches was checked. Retention removes the facts of a backup it removes
(:func:`tidy`). Anything unreadable here is ignored: the restore then reads the dump.
"""

import json
import os
import re
from typing import Dict, Optional

from aimms_ops.core import events
from aimms_ops.dump.facts import INSPECT

#: The folder, in the backup dir.
FOLDER = ".dump-facts"
#: The version of what is kept: facts read by an older reader are not used.
VERSION = 1
_SHA = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"([0-9a-f]{64})\.v([0-9]+)\.json")


def _path(directory: str, sha256: str) -> str:
    return os.path.join(directory, FOLDER, "%s.v%d.json" % (sha256, VERSION))


def recorded(path: str) -> str:
    """The sha256 the backup recorded for ``path``: the first field of the first line of
    the .sha256 beside it ('' when there is none)."""
    try:
        with open(path + ".sha256", "rb") as fh:
            line = fh.readline()
    except OSError:
        return ""
    return line.rstrip(b"\n").split(b" ", 1)[0].decode("ascii", "replace")


def complete(facts: object) -> Optional[Dict[str, object]]:
    """``facts`` (the dump reader's fields) when they are those of a complete dump, else
    None: the only facts kept or used."""
    if not isinstance(facts, dict) or not facts.get("header") or not facts.get("complete"):
        return None
    return facts


def from_report(said: str) -> Optional[Dict[str, object]]:
    """The facts of a complete dump in the dump reader's report, or None."""
    return complete(events.facts_in(said, INSPECT))


def store(directory: str, sha256: str, facts: Dict[str, object]) -> bool:
    """Keep ``facts`` for the file whose sha256 is ``sha256``; False when it cannot."""
    if not _SHA.fullmatch(sha256):
        return False
    path = _path(directory, sha256)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Private whatever the umask: the names of the databases are in it.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            json.dump(facts, fh, sort_keys=True, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def load(directory: str, sha256: str) -> Optional[Dict[str, object]]:
    """The facts kept for the file whose sha256 is ``sha256``, or None."""
    if not _SHA.fullmatch(sha256):
        return None
    try:
        with open(_path(directory, sha256), encoding="ascii") as fh:
            return complete(json.load(fh))
    except (OSError, ValueError):
        return None


def tidy(directory: str, dry_run: bool = False) -> None:
    """The facts of files no backup's ``.sha256`` names any more are removed, with those
    of another version and what a killed run left half-written."""
    folder = os.path.join(directory, FOLDER)
    try:
        kept = os.listdir(folder)
    except OSError:
        return
    named = {recorded(os.path.join(directory, name[:-len(".sha256")]))
             for name in os.listdir(directory) if name.endswith(".sha256")}
    for name in kept:
        m = _FILE.fullmatch(name)
        if dry_run or (m is None and not name.endswith(".tmp")):
            continue
        if m is not None and m.group(1) in named and int(m.group(2)) == VERSION:
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass

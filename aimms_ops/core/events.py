"""What the host program tells the operator's session: one JSON object per line.

A job run with ``--report`` writes its events on stdout, each a line
``{"event": KIND, ...}``; its log lines go to stderr (``--echo``) and to its log file.
The operator's side reads them with :mod:`aimms_ops.host.events`; nothing else parses
what the host says. Names that are not UTF-8 travel as JSON strings with surrogate
escapes (``"\\udce9"``), so they come back byte for byte.

The kinds and their fields:

- ``progress``: ``stage`` (``dump``, ``restore``, ``push``, ``replay``, ``fetch``), ``done`` and
  ``total`` (bytes; ``total`` null when unknown, or an estimate when ``estimate`` is
  true), ``what`` (a name). At most one each :data:`PROGRESS_EVERY` per
  stage, and one when it ends.
- ``wait``: ``for`` (what is awaited), ``holder`` (who holds it, as the lock's note
  says), ``up_to`` (seconds); ``waited`` once the wait is over.
- ``result``: a backup's ``name``, ``path``, ``size``, ``sha256``, ``seconds``,
  ``container``, ``suspicious``.
- ``prune``: ``action`` (keep or remove), ``name``, ``rule``, ``reason``.
- ``verify``: a deep verify's facts (``file``, ``path``, ``size``, ``sha256``,
  ``container``, ``volume``, ``image``, ``seconds``, ``result``, ``failed_check``,
  ``reason``); ``check``: ``name``, ``state``, ``detail``; ``database``: ``name``;
  ``table``: ``database``, ``table``, ``rows`` (and, from a drill, ``live_rows``: the
  live cluster's count now, null when it has no such table).
- ``drill``: a drill's facts (``source``, ``type``, ``what``, ``file``, ``size``,
  ``created``, ``rto_seconds``, ``rpo_seconds``, ``fetch_seconds``, ``start_seconds``,
  ``restore_seconds``, ``result``, ``failed_check``, ``reason``, ``seconds``), with the
  ``check``, ``database`` and ``table`` events above.
- ``offsite``: ``action`` (push, keep, remove), ``target``, ``name``, ``reason``;
  ``offsite-result``: ``target`` (``all`` when no target could be read), ``ok``,
  ``detail``; ``target``: ``target``, ``ok``, ``error``; ``copy``: ``target`` and the
  fields of the copy's .meta (``name``, ``plaintext_sha256``, ``plaintext_size``,
  ``encrypted_sha256``, ``encrypted_size``, ``pushed_at``, ``object_size``,
  ``verified_at``); ``partial``: ``target``, ``name`` (a push cut short).
- ``step``: ``name``, ``detail``: a long job's step as it starts (PITR on/off, restore).
- ``pitr``: PITR's facts (agent/pitr.py ``gather``); ``pitr-result``: a PITR backup's
  ``type``, ``label``, ``size``, ``repo_size``, ``seconds``, ``oldest``;
  ``pitr-restored``: ``to``, ``stopped`` (where recovery stopped), ``seconds``, ``kept``
  (the volume with the old data), ``recovered_after`` (seconds to a checked cluster).
- ``facts``: what one read-only command found (``facts``, ``list-backups``,
  ``status-facts``, ``install-state``, ``volume-facts``, ``rebuild-facts``, ``hold``,
  ``wait-postgres``; ``python``, which the shell writes before the program can run):
  ``of`` (the command) and ``facts``, an object of each fact by its dotted name (text of
  any characters, a list or an object). One event, the command's last line: a stdout
  without it was cut short. A fact or a field the reader does not know is ignored.
- The restore stream's (``restore-stream``), besides ``wait`` and ``progress``:
  ``section``: ``database``, ``line`` (where the filter's output enters a database);
  ``inserted``: ``after``, ``lines`` (a block the filter added: psql's line numbers
  count it); ``stages``: ``status`` (the exit statuses of source, decompressor, filter,
  psql); ``replaced``: ``database``, ``kept_as``; ``undone``: ``text`` (a failed restore
  removed what it built: the live cluster is as it was); ``error``: ``text`` (why it
  failed, or refused); ``note``: ``text`` (what it did, for the record). psql's own
  messages stay on stderr, as psql wrote them.
"""

import json
import time
from typing import Any, Callable, Dict, Iterable, Optional

#: Every line of an event starts so; anything else on the stream is not an event.
PREFIX = '{"event":'

#: Seconds between two progress events of one stage.
PROGRESS_EVERY = 0.5


def line(kind: str, **fields: Any) -> str:
    """The event ``kind`` with ``fields``, as one line (no newline)."""
    return json.dumps(dict(event=kind, **fields), separators=(",", ":"), ensure_ascii=True)


def facts_line(of: str, facts: Dict[str, Any]) -> str:
    """The ``facts`` event of command ``of`` (no newline)."""
    return line("facts", of=of, facts=facts)


def read(text: str) -> Optional[Dict[str, Any]]:
    """The event on the line ``text``, or None when it holds none."""
    if not text.startswith(PREFIX):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        return None
    return obj


def last_facts(found: Iterable[Dict[str, Any]], of: str) -> Optional[Dict[str, Any]]:
    """The facts of the last ``facts`` event of command ``of`` among the events ``found``,
    or None."""
    last = None
    for event in found:
        if event["event"] == "facts" and event.get("of") == of and \
                isinstance(event.get("facts"), dict):
            last = event["facts"]
    return last


def facts_in(text: str, of: str) -> Optional[Dict[str, Any]]:
    """The facts command ``of`` printed in ``text`` (its last report), or None."""
    return last_facts((e for e in map(read, text.splitlines()) if e is not None), of)


class Ticker:
    """The progress of one stage: ``tick(done)`` sends an event at most once per
    :data:`PROGRESS_EVERY`; ``end(done)`` sends the last one."""

    def __init__(self, send: Callable[[str], object], stage: str, total: Optional[int],
                 *, what: str = "", estimate: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.stage = stage
        self.total = total
        self.what = what
        self.estimate = estimate
        self.clock = clock
        self.last = clock()
        self.done = 0  # sent
        self.seen = 0  # told

    def _send(self, done: int) -> None:
        self.done = done
        self.send(line("progress", stage=self.stage, what=self.what, done=done,
                       total=self.total, estimate=self.estimate))

    def tick(self, done: int) -> None:
        """``done`` bytes so far (never less than told before)."""
        self.seen = max(self.seen, done)
        now = self.clock()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self._send(self.seen)

    def end(self, done: Optional[int] = None) -> None:
        """The last event: ``done`` bytes, or as many as were told."""
        self._send(self.seen if done is None else done)

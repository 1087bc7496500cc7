"""The host program's events (core.events), their one reader (host.events) and what the
screen makes of them (output.progress): bars that move, waits that say what they wait
for, plain lines under a pipe, one unit format, 80 columns."""

from __future__ import annotations

import io
import re

from rich.console import Console

from aimms_ops.core import events
from aimms_ops.host import events as host_events
from aimms_ops.output import progress


def test_an_event_is_one_json_line_and_a_name_that_is_not_utf8_comes_back_byte_for_byte():
    name = b"caf\xe9 \"db\"\n".decode("utf-8", "surrogateescape")
    text = events.line("database", name=name)
    assert "\n" not in text and text.isascii() and text.startswith(events.PREFIX)
    assert events.read(text) == {"event": "database", "name": name}
    assert events.read(text)["name"].encode("utf-8", "surrogateescape") == b"caf\xe9 \"db\"\n"
    for not_one in ("", "result.name=x", '{"event": 1}', '{"event":"x"', "[1]",
                    '{"event":"x"} trailing'):
        assert events.read(not_one) is None, not_one


def test_the_reader_hands_on_events_as_they_come_and_keeps_them_in_order():
    seen = []
    found = host_events.Events(seen.append)
    for text in ("noise", events.line("wait", up_to=5), events.line("result", name="a"),
                 events.line("result", name="b")):
        found.feed(text)
    assert [e["event"] for e in seen] == ["wait", "result", "result"]
    assert found.last("result") == {"event": "result", "name": "b"}
    assert found.last("prune") is None and list(found.of("wait")) == [seen[0]]


def test_facts_carry_any_text_and_come_back_whole_or_as_one_error():
    """A command's facts: values with newlines, ``=``, tabs and bytes that are not UTF-8
    come back as they were; a fact or a field the reader does not know is ignored; a
    stdout cut anywhere before the event's end is one error of one line."""
    odd = b"caf\xe9 'x'\n=y\tz".decode("utf-8", "surrogateescape")
    sent = {"postgres.databases": ["postgres", odd], "compose.config": "a: b=c\n  d: 'e'\n",
            "record": "k=v\nk2=v=2\n", "docker.ok": "1", "size": 10, "flag": True,
            "none": None, "nested": {"a": [1, "b"]}}
    text = "noise line\n" + events.facts_line("facts", sent) + "\n"
    assert text.isascii() and len(text.splitlines()) == 2
    got = host_events.facts(text, "facts", "aidset")
    assert got["postgres.databases"][1].encode("utf-8", "surrogateescape") == \
        b"caf\xe9 'x'\n=y\tz"
    assert got["compose.config"] == sent["compose.config"] and got["record"] == sent["record"]
    assert (got["size"], got["flag"], got["none"]) == ("10", "1", "")
    assert host_events.text_of(got, "record") == sent["record"]
    assert host_events.text_of(got, "postgres.databases") == ""
    assert host_events.text_of({"x": odd}, "x", shown=True) == "caf\ufffd 'x'\n=y\tz"
    # A newer host program's report: a field, a fact and an event this reader does not know.
    newer = events.line("facts", of="facts", facts={**sent, "docker.rootless": "0"}, v=2)
    newer += "\n" + events.line("disk", of="facts", facts={}) + "\n"
    assert {k: v for k, v in host_events.facts(newer, "facts", "aidset").items()
            if k != "docker.rootless"} == got
    # Cut short: before the event, inside it, or another command's only.
    for cut in ("", text[:5], text[:len(text) // 2], text[:-3],
                events.facts_line("list-backups", {}) + "\n"):
        try:
            host_events.facts(cut, "facts", "aidset", "Killed")
        except host_events.CutShort as e:
            assert str(e) == ("the host program's facts on aidset ended before its report "
                              "(its output was cut short): Killed (run it again; if it fails "
                              "again, see fab doctor)")
        else:
            raise AssertionError(f"no error for {cut!r}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ticker_sends_at_most_once_a_period_never_goes_back_and_always_ends():
    sent: list[str] = []
    clock = Clock()
    t = events.Ticker(sent.append, "dump", 1000, what="f", estimate=True, clock=clock)
    for step in range(1, 13):
        clock.now += events.PROGRESS_EVERY / 4
        t.tick(step * 10)
    t.tick(5)  # a smaller figure (a process gone) is never sent
    clock.now += events.PROGRESS_EVERY
    t.tick(7)
    t.end()
    done = [events.read(s)["done"] for s in sent]
    assert done == [40, 80, 120, 120, 120]
    assert events.read(sent[0]) == {"event": "progress", "stage": "dump", "what": "f",
                                    "done": 40, "total": 1000, "estimate": True}


def _console(tty: bool, width: int = 80) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=width, color_system=None), buf


def test_under_a_pipe_progress_is_plain_lines_every_ten_seconds_and_at_the_end():
    console, buf = _console(False)
    clock = Clock()
    live = progress.Live(console, tty=False, clock=clock)
    for i in range(1, 41):
        clock.now += 1
        live(events.read(events.line("progress", stage="dump", what="b.sql.gz",
                                     done=i * 2**20, total=40 * 2**20, estimate=True)))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "dumping b.sql.gz: 11.0 MiB of ~40.0 MiB (27%), 1.0 MiB/s"
    assert lines[1] == "dumping b.sql.gz: 21.0 MiB of ~40.0 MiB (52%), 1.0 MiB/s"
    assert lines[-1] == "dumping b.sql.gz: 40.0 MiB of ~40.0 MiB (100%), 1.0 MiB/s"
    assert len(lines) == 4


def test_under_a_pipe_what_ends_within_ten_seconds_prints_nothing():
    """A small file checked in a moment: its error (if any) stays the only line."""
    console, buf = _console(False)
    clock = Clock()
    live = progress.Live(console, tty=False, clock=clock)
    advance = live.transfer("verifying passwd", 2400)
    clock.now += 0.2
    advance(2400)
    assert buf.getvalue() == ""


def test_a_wait_says_what_it_waits_for_who_holds_it_and_how_long_it_waited():
    console, buf = _console(False)
    live = progress.Live(console, tty=False)
    wait = {"for": "the cluster lock", "holder": "backup pid 4711 since 2026-12-07T02:00:03Z",
            "up_to": 600}
    live(events.read(events.line("wait", **wait)))
    live(events.read(events.line("wait", waited=12.34, **wait)))
    assert buf.getvalue().splitlines() == [
        "waiting for the cluster lock (backup pid 4711 since 2026-12-07T02:00:03Z), up to "
        "10m00s",
        "waited 12.3 s for the cluster lock (backup pid 4711 since 2026-12-07T02:00:03Z)"]


def test_on_a_terminal_of_80_columns_the_bar_moves_in_one_unit_format():
    console, buf = _console(True, 80)
    with progress.live(console) as live:
        advance = live.transfer("restoring", 145 * 2**20)
        advance(12 * 2**20)
        live.progress.refresh()
        first = buf.getvalue()
        advance(60 * 2**20)
        live.progress.refresh()
        live(events.read(events.line("progress", stage="dump", done=3 * 2**20, total=None,
                                     what="aimms_postgres_20261207_020119_pre-restore.sql.gz")))
        live.progress.refresh()
    screen = buf.getvalue()
    assert "restoring" in first and "12.0 MiB/145.0 MiB" in first
    assert "72.0 MiB/145.0 MiB" in screen and "dumping aimms_postgres_" in screen
    assert "3.0 MiB" in screen  # a long name gives way to the figures
    assert not re.search(r"\d MB\b|\d kB\b", screen)  # decimal units: never
    frames = [ln for ln in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", screen) if ln.strip()]
    assert max(len(ln) for ln in frames) <= 80


def test_the_fetch_bar_of_an_offsite_copy_keeps_its_figures_at_80_columns():
    """``restore --from=s3``'s bar once shrank to ``━━━ 0.… ? -:-…`` at 80 columns: the
    long description gives way (an ellipsis), the figures stay whole."""
    console, buf = _console(True, 80)
    with progress.live(console) as live:
        advance = live.transfer("fetching aimms_postgres_20261207_020119.sql.gz.age from s3",
                                145 * 2**20)
        advance(12 * 2**20)
        live.progress.refresh()
    frames = [ln for ln in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", buf.getvalue())
              if ln.strip()]
    assert any("12.0 MiB/145.0 MiB" in f and f.startswith("fetching aimms_postgres_")
               and "…" in f for f in frames), frames
    assert max(len(f) for f in frames) <= 80

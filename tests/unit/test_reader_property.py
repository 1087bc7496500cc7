"""The dump reader proven on any data: every way to cut its input reads the same.

The reader is fed a dump in chunks of whatever size a pipe hands over. Whatever the cuts
(inside a row, inside ``\\.``, after a ``\\r``, inside a multi-line statement, one byte
at a time or several MiB), it must tell its handler the same parts, and every byte of
the input must reach the handler exactly once. A row wider than the 1 MiB read buffer
once made it hand on bytes twice (the rows of the next table then failed to load, or
loaded as extra rows of a one-column table).
"""

from __future__ import annotations

import itertools
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimms_ops.dump import reader as reader_mod
from aimms_ops.dump.reader import READ_CHUNK, Reader, end_of_copy
from tests.hostprog import HOST
from tests.unit.test_dumpscan_unit import AWKWARD, dump


class Record:
    """Every event of a reader, in order; runs of COPY data merged (their cuts may vary)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes, object]] = []

    def line(self, line: bytes, kind: str) -> None:
        self.events.append(("line", line, kind))

    def unit(self, lines: list[bytes]) -> None:
        self.events.append(("unit", b"".join(lines), len(lines)))

    def copy(self, data: bytes, start: int, end: int) -> None:
        data = data[start:end]
        if self.events and self.events[-1][0] == "copy":
            self.events[-1] = ("copy", self.events[-1][1] + data, None)
        else:
            self.events.append(("copy", data, None))

    def end(self, reader: Reader) -> None:
        self.events.append(("end", b"", (reader.complete, reader.in_copy,
                                         tuple(reader.sections))))

    def passed_on(self) -> bytes:
        return b"".join(e[1] for e in self.events)


def read(chunks) -> Record:
    rec = Record()
    reader = Reader(rec)
    for chunk in chunks:
        reader.feed(chunk)
    reader.close()
    return rec


def cut(data: bytes, points) -> list[bytes]:
    edges = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def wide_dump(first_row: int, rows: int = 100) -> bytes:
    """The dump that broke the reader: a table whose first row is ``first_row`` bytes
    wide, then a table of another shape (whose rows got the repeated bytes)."""
    notes = "".join(f"note {i}\n" for i in range(1, rows))
    body = ("CREATE TABLE public.aaa_notes (body text);\n"
            "CREATE TABLE public.bbb (a integer, b text);\n"
            "COPY public.aaa_notes (body) FROM stdin;\n"
            + "x" * first_row + "\n" + notes + "\\.\n\n"
            "COPY public.bbb (a, b) FROM stdin;\n1\tone\n2\ttwo\n\\.\n\n")
    return dump(sections={"app": "\\connect app\n" + body}).encode()


# ---------------------------------------------------------------- generated dumps
_ROW_BYTES = st.binary(max_size=300).map(
    lambda b: b.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    .replace(b"\t", b"\\t"))
_ROWS = st.lists(st.tuples(st.integers(0, 10**6), _ROW_BYTES), max_size=12)
_STATEMENTS = st.sampled_from([
    "CREATE TABLE public.t (a integer, b text);\n",
    "CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $_$\nSELECT ';\n"
    "\\.\nCOPY x FROM stdin;\n'\n$_$;\n",
    "COMMENT ON TABLE public.t IS E'a\\\\.\\nb;\\r\\n';\n",
    "CREATE VIEW public.v AS\n SELECT 1 AS \"a\"\"\n;b\";\n",
    "/* a /* nested */ comment; */ SELECT 1;\n",
    "SELECT 'it''s'\r\n;\r\n",
    "-- a comment; with COPY x FROM stdin;\n",
])


@st.composite
def generated_dumps(draw) -> bytes:
    sections = {}
    for d in range(draw(st.integers(1, 3))):
        parts = [f"\\connect db{d}\n"]
        for _ in range(draw(st.integers(0, 6))):
            if draw(st.booleans()):
                parts.append(draw(_STATEMENTS))
            else:
                rows = draw(_ROWS)
                parts.append("COPY public.t (a, b) FROM stdin;\n")
                data = b"".join(b"%d\t%s\n" % (a, b) for a, b in rows)
                parts.append(data.decode("latin-1") + "\\.\n\n")
        sections[f"db{d}"] = "".join(parts)
    return dump(sections=sections).encode("latin-1")


# ---------------------------------------------------------------- the properties
def test_every_single_cut_of_a_dump_reads_as_the_whole():
    data = AWKWARD.encode()
    whole = read([data]).events
    for i in range(len(data) + 1):
        assert read(cut(data, [i])).events == whole, f"cut at byte {i}"


def test_one_byte_at_a_time_reads_as_the_whole():
    data = AWKWARD.encode() + wide_dump(3000)
    assert read(data[i:i + 1] for i in range(len(data))).events == read([data]).events


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=generated_dumps(), points=st.lists(st.integers(0, 10**5), max_size=40))
def test_any_cuts_of_a_generated_dump_read_as_the_whole(data, points):
    whole = read([data])
    got = read(cut(data, [p % (len(data) + 1) for p in points]))
    assert got.events == whole.events
    assert got.passed_on() == data


@settings(max_examples=200)
@given(data=st.binary(max_size=2000), points=st.lists(st.integers(0, 2000), max_size=20))
def test_any_bytes_any_cuts_every_byte_passed_on_once(data, points):
    """A fuzz target for the lexer and the reader: arbitrary bytes never raise, every
    byte reaches the handler exactly once, and the cuts change nothing."""
    whole = read([data])
    assert whole.passed_on() == data
    assert read(cut(data, [p % (len(data) + 1) for p in points])).events == whole.events


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 3 * READ_CHUNK), left=st.integers(1, READ_CHUNK))
def test_a_row_wider_than_the_buffer_is_passed_on_once_wherever_it_falls(width, left):
    """The wide row starts with ``left`` bytes left of a 1 MiB read."""
    data = wide_dump(width)
    start = data.index(b"(body) FROM stdin;\n") + len(b"(body) FROM stdin;\n")
    head = start + left
    chunks = [data[:head]] + [data[i:i + READ_CHUNK] for i in range(head, len(data),
                                                                     READ_CHUNK)]
    rec = read(chunks)
    assert rec.passed_on() == data
    assert rec.events == read([data]).events


def test_rows_of_tens_of_megabytes_in_1_mib_reads():
    data = wide_dump(24 * 1024 * 1024, rows=3)
    rec = read(data[i:i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK))
    copies = [e[1] for e in rec.events if e[0] == "copy"]
    assert [c.count(b"\n") for c in copies] == [4, 3]  # 3 rows + \. and 2 rows + \.
    assert rec.passed_on() == data


def _filter(data: bytes, *args: str) -> bytes:
    proc = subprocess.run([*HOST, "dump", "filter", *args], input=data,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_the_filter_with_nothing_to_change_gives_back_the_dump_byte_for_byte():
    """A dump whose first row is wider than what is left of the read buffer: the host's
    filter (its own 1 MiB reads from a pipe) gives back every byte once."""
    for width in (READ_CHUNK - 100, READ_CHUNK + 1, 3 * READ_CHUNK + 17):
        data = wide_dump(width)
        assert _filter(data) == data, f"first row of {width} bytes"


@settings(max_examples=40, deadline=None)
@given(data=generated_dumps())
def test_the_filter_gives_back_a_generated_dump_it_has_nothing_to_change_in(data):
    assert _filter(data) == data


def _end_of_copy_by_definition(data: bytes, pos: int) -> int:
    """The first ``\\.`` line from ``pos`` (a line start), as COPY defines its end."""
    if data.startswith(b"\\.\n", pos):
        return pos
    j = data.find(b"\n\\.\n", pos)
    return j + 1 if j >= 0 else -1


@settings(max_examples=500)
@given(data=st.lists(st.sampled_from([b"\\", b".", b"\n", b"a", b"\\N\t", b"\\.\n",
                                      b"\n\\.", b"\\\\.\n"]), max_size=300).map(b"".join),
       pos=st.integers(0, 50), dense=st.booleans())
def test_the_end_of_copy_data_is_found_wherever_it_is_and_however_dense_the_backslashes(
        data, pos, dense):
    # pos: a line start (the reader only searches from one)
    pos = min(pos, len(data))
    pos = data.rfind(b"\n", 0, pos) + 1 if pos else 0
    if dense:  # the other search, at once
        old = reader_mod._TRIES, reader_mod._DENSE
        reader_mod._TRIES, reader_mod._DENSE = 0, 1 << 30
        try:
            got = end_of_copy(data, pos)
        finally:
            reader_mod._TRIES, reader_mod._DENSE = old
    else:
        got = end_of_copy(data, pos)
    assert got == _end_of_copy_by_definition(data, pos)

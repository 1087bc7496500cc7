"""Property-based: every value an operator can type is refused with one line, or is safe.

The validation functions the tasks call are fed arbitrary text (and text built from
the shapes of attacks: shell metacharacters, quotes, newlines, ``..``, absolute paths,
empty and very long strings). Whatever they accept is proved harmless: a plain word
that needs no quoting, never a path, never an option. The same values go through the
real command line in test_bad_input.py.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimms_ops.backup import listing
from aimms_ops.cli import base as tasks
from aimms_ops.core import names, retention
from aimms_ops.core.errors import OpsError
from aimms_ops.inventory import loader, model
from aimms_ops.restore import source as dumpsource
from tests.hostprog import said

REPO = Path(__file__).resolve().parents[2]
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.$-]+$")

#: Pieces of hostile input, combined by the strategies below.
FRAGMENTS = ["$(touch /tmp/pwned)", "`id`", ";", "&&", "||", "|", ">", "<", "&", "'", '"',
             "\\", "\n", "\r", "\t", " ", "..", "../", "/", "/etc/passwd", "~", "~root", "*",
             "?", "[", "]", "{", "}", "-", "--", "-rf", "=", "#", "!", "%", "\x1b[31m", "é",
             "\u202e", "\x7f", "aimms_postgres_20260101_020000.sql.gz", "pre-migration",
             "aimms_web", "latest"]

hostile = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(FRAGMENTS), min_size=0, max_size=6).map("".join),
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(FRAGMENTS), st.text(max_size=10),
              st.sampled_from(FRAGMENTS)),
    st.integers(min_value=70, max_value=6000).map(lambda n: "x" * n),
).filter(lambda s: "\x00" not in s)

PROPS = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _one_clear_line(exc: OpsError) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert len(text) < 400, len(text)
    assert "Traceback" not in text


@PROPS
@given(hostile)
def test_a_label_is_refused_or_a_plain_word(value):
    try:
        got = names.validate_label(value)
    except OpsError as exc:
        _one_clear_line(exc)
        return
    assert got == value
    assert SAFE_WORD.fullmatch(got) and len(got) <= 64 and "." not in got
    assert shlex.quote(got) == got  # needs no quoting anywhere


@PROPS
@given(st.one_of(hostile, st.builds(lambda p, s: p + s, st.sampled_from(
    ["aimms_postgres_20260101_020000", "aimms_postgres_20260101_020000_x"]),
    st.sampled_from([".sql.gz", ".sql.gz/../x", ".sql.gz\n", ".sql.gz;id", "/..", ".sql"]))))
def test_a_backup_name_is_refused_or_a_plain_file_name(value):
    try:
        got = names.validate_name(value)
    except OpsError as exc:
        _one_clear_line(exc)
        return
    assert got == value and retention.NAME_RE.fullmatch(got)
    assert "/" not in got and ".." not in got and not got.startswith("-")
    assert shlex.quote(got) == got


@PROPS
@given(hostile)
def test_a_database_name_is_refused_or_an_identifier(value):
    if not loader.is_db_name(value):
        return
    assert SAFE_WORD.fullmatch(value) and not value.startswith(("-", "$"))
    assert len(value) <= 63 and "/" not in value and ".." not in value


@PROPS
@given(st.one_of(hostile, st.integers(min_value=-10, max_value=10 ** 12).map(str)))
def test_a_whole_number_flag_is_refused_or_an_int(value):
    try:
        got = tasks.whole_number("--lines", value)
    except OpsError as exc:
        _one_clear_line(exc)
        return
    assert isinstance(got, int)


@dataclass
class RecordingRemote:
    """Stands in for the host: records the scripts that would run, runs nothing."""

    host: model.Host
    calls: list[tuple] = field(default_factory=list)
    name: str = "aidset"

    def run_program(self, name, *args, **kw):
        self.calls.append((name, *args))
        from aimms_ops.host.remote import RunResult

        return RunResult(name, 0, said(name, {"exists": False}), "")


@pytest.fixture(scope="module")
def host():
    return loader.load(REPO / "inventory.yml").host(None)


@PROPS
@given(value=hostile)
def test_a_restore_source_reaches_the_host_only_as_a_backup_path(host, value):
    """Anything that is not a local file reaches the host only as backup_dir/NAME."""
    remote = RecordingRemote(host)
    try:
        dumpsource.resolve_source(remote, value)  # type: ignore[arg-type]
    except OpsError as exc:
        _one_clear_line(exc)
    if dumpsource.local_dump(value) is not None:
        return
    for call in remote.calls:
        assert call[0] == "inspect-dump"
        folder, _, name = call[1].rpartition("/")
        assert folder == host.backup_dir and retention.NAME_RE.fullmatch(name), call


@PROPS
@given(hostile)
def test_picking_a_backup_by_a_hostile_name_never_finds_one(value):
    found = listing.parse_listing({"backups": [
        {"mtime": 1700000000, "size": 10, "name": "aimms_postgres_20260101_020000.sql.gz"}]},
        "/b")
    try:
        got = listing.pick(found, value)
    except OpsError as exc:
        _one_clear_line(exc)
        return
    assert got.name in (value, "aimms_postgres_20260101_020000.sql.gz")


# --- the inventory: any value of any key --------------------------------------------------

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      hostile, st.lists(st.text(max_size=5), max_size=3),
                      st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))

LEAF_KEYS = [
    "default_host", "download_dir", "hosts.aidset.ssh_config",
    "hosts.aidset.accept_new_host_key", "hosts.aidset.backup_dir",
    "hosts.aidset.backup_script", "hosts.aidset.log_file", "hosts.aidset.cron_schedule",
    "hosts.aidset.retention_days", "hosts.aidset.min_keep", "hosts.aidset.verify_schedule",
    "hosts.aidset.lock_timeout", "hosts.aidset.compose.project_dir",
    "hosts.aidset.compose.file", "hosts.aidset.compose.project",
    "hosts.aidset.compose.postgres_service", "hosts.aidset.postgres.superuser",
    "hosts.aidset.postgres.app_user", "hosts.aidset.postgres.databases",
    "hosts.aidset.volumes.postgres", "hosts.aidset.volumes.redis",
    "hosts.aidset.retention", "hosts.aidset.safety_pin_days", "hosts.aidset.allow_shrink",
    "hosts.aidset.ping",
]


def _with(dotted: str, value) -> dict:
    data = yaml.safe_load((REPO / "inventory.yml").read_text())
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return data


def _safe_path(p: str) -> bool:
    return (p.startswith("/") and "\n" not in p and "\x00" not in p
            and ".." not in p.split("/"))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(LEAF_KEYS), ANY_VALUE)
def test_any_value_of_any_inventory_key_is_refused_naming_it_or_safe(key, value):
    path = Path("/nonexistent/inv.yml")
    try:
        inv = loader.parse(yaml.safe_dump(_with(key, value)), path)
    except OpsError as exc:
        _one_clear_line(exc)
        assert str(path) in str(exc)
        return
    h = inv.host(None)
    for p in (h.backup_dir, h.backup_script, h.log_file, h.compose.project_dir):
        assert _safe_path(p), p
    for name in (h.compose.project, h.compose.postgres_service, h.volumes.postgres,
                 h.volumes.redis):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name), name
    assert loader.is_db_name(h.postgres.superuser), h.postgres.superuser
    for sched in (h.cron_schedule, h.verify_schedule):
        assert sched is None or ("\n" not in sched and ";" not in sched and "$" not in sched
                                 and "`" not in sched and "|" not in sched)
    assert isinstance(h.policy.within_days, int) and h.policy.within_days >= 1
    assert isinstance(h.policy.min_keep, int) and h.policy.min_keep >= 1
    assert isinstance(h.lock_timeout, int) and h.lock_timeout >= 0
    assert isinstance(h.accept_new_host_key, bool)
    assert re.fullmatch(r"[a-z0-9= ]*", h.policy.rules_text)
    assert isinstance(h.safety_pin_days, int) and h.safety_pin_days >= 0
    assert isinstance(h.allow_shrink, bool)
    assert h.ping is None or (loader.is_ping_url(h.ping.url)
                              and h.ping.kind in ("healthchecks", "uptime-kuma"))

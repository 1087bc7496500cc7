"""Inventory validation: every problem is one line naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aimms_ops.core.errors import OpsError
from aimms_ops.inventory import loader, model

REPO = Path(__file__).resolve().parents[2]


def _good() -> dict:
    return yaml.safe_load((REPO / "inventory.yml").read_text())


def _load(tmp_path: Path, data) -> model.Inventory:
    p = tmp_path / "inv.yml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return loader.load(p)


def test_production_inventory_mirrors_the_seed():
    inv = loader.load(REPO / "inventory.yml")
    h = inv.host(None)
    assert h.name == "aidset"
    assert h.backup_dir == "/home/ec2-user/postgres-backups"
    assert h.backup_script == "/home/ec2-user/backup-postgres.sh"
    assert h.log_file == "/home/ec2-user/postgres-backup.log"
    assert h.cron_schedule == "0 2 * * *"
    assert h.policy.within_days == 7
    assert h.compose.file_path == "/home/ec2-user/aimms-web/docker-compose.prod.yml"
    assert h.postgres.superuser == "postgres"
    assert h.volumes.names() == ("aimms_postgres_data_prod", "aimms_redis_data_prod")
    assert h.accept_new_host_key is False


def test_env_var_selects_inventory(tmp_path, monkeypatch):
    data = _good()
    data["hosts"]["other"] = data["hosts"]["aidset"]
    p = tmp_path / "x.yml"
    p.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(model.ENV_VAR, str(p))
    inv = loader.load()
    assert inv.path == p
    assert inv.host("other").name == "other"


def test_unknown_host_lists_known(tmp_path):
    inv = _load(tmp_path, _good())
    with pytest.raises(OpsError, match=r"no host named 'nope'.*aidset"):
        inv.host("nope")


def test_missing_file(tmp_path):
    with pytest.raises(OpsError, match=r"nope\.yml: inventory file not found"):
        loader.load(tmp_path / "nope.yml")


@pytest.mark.parametrize("text, match", [
    ("hosts: [unclosed", r"YAML syntax error at line \d+"),
    ("- a\n- b\n", "top level: expected a mapping"),
    ("just a string", "top level: expected a mapping"),
    ("", "default_host: missing"),
])
def test_bad_yaml(tmp_path, text, match):
    with pytest.raises(OpsError, match=match) as exc:
        _load(tmp_path, text)
    assert "\n" not in str(exc.value)
    assert "inv.yml" in str(exc.value)


#: Valid values for optional mappings a nested key is set in.
_OPTIONAL = {"retention": {"keep_daily": 7}, "ping": {"url": "https://hc-ping.com/abc-123"}}


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, dict(_OPTIONAL.get(p, {})))
    node[last] = value
    return data


def _del(data: dict, dotted: str) -> dict:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    del node[last]
    return data


WRONG_TYPES = [
    ("hosts.aidset.backup_dir", 5, "an absolute path"),
    ("hosts.aidset.backup_dir", "relative/dir", "an absolute path"),
    ("hosts.aidset.backup_dir", "/a/../etc", "an absolute path"),
    ("hosts.aidset.backup_script", ["x"], "an absolute path"),
    ("hosts.aidset.log_file", True, "an absolute path"),
    ("hosts.aidset.cron_schedule", "every day", "cron schedule"),
    ("hosts.aidset.cron_schedule", "0 2 * * * ; rm -rf /", "cron schedule"),
    ("hosts.aidset.retention_days", "seven", "whole number"),
    ("hosts.aidset.retention_days", 0, "whole number"),
    ("hosts.aidset.retention_days", True, "whole number"),
    ("hosts.aidset.min_keep", 1.5, "whole number"),
    ("hosts.aidset.accept_new_host_key", "yes", "true or false"),
    ("hosts.aidset.compose", "x", "a mapping"),
    ("hosts.aidset.compose.project", "my project", "compose project name"),
    ("hosts.aidset.compose.project_dir", "~/aimms", "an absolute path"),
    ("hosts.aidset.compose.postgres_service", "pg;reboot", "service name"),
    ("hosts.aidset.postgres.superuser", 3, "role name"),
    ("hosts.aidset.volumes.postgres", "$(reboot)", "volume name"),
    ("hosts.aidset.volumes", ["a"], "a mapping"),
    ("hosts.aidset.ssh_config", 12, "ssh_config"),
    ("hosts.aidset.verify_schedule", "weekly", "cron schedule"),
    ("hosts.aidset.lock_timeout", -1, "whole number"),
    ("hosts", [], "mapping of host names"),
    ("default_host", "elsewhere", "one of the hosts"),
    ("download_dir", 7, "local directory"),
    ("download_dir", "", "local directory"),
    ("default_host", ["aidset"], "one of the hosts"),
    ("hosts", "aidset", "mapping of host names"),
    ("hosts.aidset", ["backup_dir"], "a mapping"),
    ("hosts.aidset", "x", "a mapping"),
    ("hosts.aidset.backup_dir", "/home/x\nrm -rf /", "an absolute path"),
    ("hosts.aidset.backup_dir", "", "an absolute path"),
    ("hosts.aidset.log_file", "/tmp/log\x00", "an absolute path"),
    ("hosts.aidset.cron_schedule", "0 2 * * * `reboot`", "cron schedule"),
    ("hosts.aidset.cron_schedule", 2, "cron schedule"),
    ("hosts.aidset.min_keep", 0, "whole number"),
    ("hosts.aidset.lock_timeout", "10", "whole number"),
    ("hosts.aidset.accept_new_host_key", 1, "true or false"),
    ("hosts.aidset.ssh_config", "", "ssh_config"),
    ("hosts.aidset.ssh_config", "a\nb", "ssh_config"),
    ("hosts.aidset.verify_schedule", 5, "cron schedule"),
    ("hosts.aidset.compose.file", 5, "file name or absolute path"),
    ("hosts.aidset.compose.file", "../docker-compose.yml", "file name or absolute path"),
    ("hosts.aidset.compose.project", "", "compose project name"),
    ("hosts.aidset.postgres", "postgres", "a mapping"),
    ("hosts.aidset.postgres.superuser", "postgres; DROP", "role name"),
    ("hosts.aidset.volumes.redis", "a b", "volume name"),
    ("hosts.aidset.volumes.postgres", "", "volume name"),
    ("hosts.aidset.retention", "daily", "a mapping"),
    ("hosts.aidset.retention.keep_daily", -1, "whole number"),
    ("hosts.aidset.retention.keep_weekly", "4", "whole number"),
    ("hosts.aidset.retention.keep_monthly", 1.5, "whole number"),
    ("hosts.aidset.retention.keep_yearly", True, "whole number"),
    ("hosts.aidset.retention.min_keep", 0, "whole number"),
    ("hosts.aidset.retention.bogus", 1, "no such key"),
    ("hosts.aidset.safety_pin_days", -1, "whole number of days"),
    ("hosts.aidset.allow_shrink", "yes", "true or false"),
    ("hosts.aidset.compression", "xz", "expected gzip or zstd, got 'xz'"),
    ("hosts.aidset.compression", "ZSTD", "expected gzip or zstd, got 'ZSTD'"),
    ("hosts.aidset.compression", True, "expected gzip or zstd"),
    ("hosts.aidset.ping", "https://hc-ping.com/x", "a mapping"),
    ("hosts.aidset.ping", {"kind": "healthchecks"}, "missing"),
    ("hosts.aidset.ping.url", "ftp://x", "http(s) URL"),
    ("hosts.aidset.ping.url", "https://x/'; reboot", "http(s) URL"),
    ("hosts.aidset.ping.url", "https://x/a b", "http(s) URL"),
    ("hosts.aidset.ping.kind", "nagios", "healthchecks or uptime-kuma"),
    ("hosts.aidset.ping.verify_url", 5, "http(s) URL"),
    ("hosts.aidset.ping.drill_url", "x", "http(s) URL"),
    ("hosts.aidset.ping.timeout", 2, "at least 3"),
    ("hosts.aidset.ping.timeout", "45", "whole number of seconds"),
    # Offsite targets (tests/test_offsite_unit.py tries each target key).
    ("hosts.aidset.offsite", {"name": "s3"}, "a list of targets"),
    ("hosts.aidset.offsite_recipients", ["not-a-key"], "age public keys"),
    ("hosts.aidset.offsite_identity", 5, "age identity file"),
    ("hosts.aidset.pitr", "yes", "a mapping"),
    ("hosts.aidset.pitr.repo", "pgbackrest", "an absolute path"),
    ("hosts.aidset.pitr.image", "Not An Image!", "a docker image name"),
    ("hosts.aidset.pitr.full_schedule", "weekly", "cron schedule"),
    ("hosts.aidset.pitr.diff_schedule", "0 3 * * * ; reboot", "cron schedule"),
    ("hosts.aidset.pitr.retention_full", 0, "at least 1"),
    ("hosts.aidset.pitr.bogus", 1, "no such key"),
    ("hosts.aidset.pitr.offsite", "nowhere", "offsite targets"),
    # The drill and the metrics (tests/unit/test_drill_unit.py tries each drill key).
    ("hosts.aidset.drill", "weekly", "a mapping with schedule"),
    ("hosts.aidset.drill.schedule", "sundays", "weekly, or a cron schedule"),
    ("hosts.aidset.metrics_dir", "metrics", "absolute path"),
]

#: Keys that hold settings; every one of them must appear in WRONG_TYPES above.
ALL_KEYS = {
    *(f"hosts.aidset.retention.{k}" for k in loader._RETENTION_KEYS),
    *(f"hosts.aidset.pitr.{k}" for k in loader._PITR_KEYS),
    *(f"hosts.aidset.ping.{k}" for k in ("url", "kind", "verify_url", "drill_url",
                                          "timeout")),
    "default_host", "hosts", "download_dir",
    *(f"hosts.aidset.{k}" for k in loader._HOST_KEYS),
    *(f"hosts.aidset.compose.{k}" for k in ("project_dir", "file", "project",
                                            "postgres_service")),
    "hosts.aidset.postgres.superuser",
    *(f"hosts.aidset.volumes.{k}" for k in ("postgres", "redis")),
}


def test_every_key_is_tried_with_a_wrong_value():
    """A key added to the inventory without a wrong-value case here fails this test."""
    missing = ALL_KEYS - {key for key, _, _ in WRONG_TYPES}
    assert not missing, f"add WRONG_TYPES rows for: {sorted(missing)}"


@pytest.mark.parametrize("key, value, expected", WRONG_TYPES)
def test_wrong_type_names_file_key_and_expectation(tmp_path, key, value, expected):
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, _set(_good(), key, value))
    msg = str(exc.value)
    assert "inv.yml" in msg
    assert key in msg
    assert expected in msg
    assert "\n" not in msg


def test_compression_is_gzip_unless_the_host_says_zstd(tmp_path):
    assert _load(tmp_path, _good()).host(None).compression == "gzip"
    inv = _load(tmp_path, _set(_good(), "hosts.aidset.compression", "zstd"))
    assert inv.host(None).compression == "zstd"


@pytest.mark.parametrize("key", [
    "hosts.aidset.backup_dir", "hosts.aidset.compose", "hosts.aidset.compose.file",
    "hosts.aidset.postgres.superuser", "hosts.aidset.volumes.redis", "default_host",
    "hosts.aidset.retention_days",
])
def test_missing_value(tmp_path, key):
    with pytest.raises(OpsError, match=re.escape(f"{key}: missing")):
        _load(tmp_path, _del(_good(), key))


@pytest.mark.parametrize("where", ["", "hosts.aidset.", "hosts.aidset.compose.",
                                   "hosts.aidset.postgres.", "hosts.aidset.volumes."])
def test_unknown_key(tmp_path, where):
    data = _set(_good(), where + "bogus_key", 1)
    with pytest.raises(OpsError, match=re.escape(f"{where}bogus_key: expected no such key")):
        _load(tmp_path, data)


@pytest.mark.parametrize("name", ["bad name", "a;b", "-H", "", "x" * 70, "../x"])
def test_a_host_name_that_is_not_a_name_is_refused(tmp_path, name):
    data = _good()
    data["hosts"] = {name: data["hosts"]["aidset"]}
    data["default_host"] = name
    with pytest.raises(OpsError, match="a host name of letters") as exc:
        _load(tmp_path, data)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("text, match", [
    ("default_host: aidset\nhosts: {aidset: 5}\n", "hosts.aidset: expected a mapping"),
    ("default_host: aidset\nhosts: [aidset]\n", "hosts: expected a mapping of host names"),
    ("default_host: aidset\nhosts: {aidset: }\n", "hosts.aidset: expected a mapping"),
    ("1: 2\n", "1: expected no such key"),
    ("? [a, b]\n: 1\n", "YAML syntax error|expected no such key"),
    ("default_host: aidset\nhosts: !!python/object:os.system {}\n", "YAML syntax error"),
])
def test_inventory_shapes_that_are_not_mappings(tmp_path, text, match):
    with pytest.raises(OpsError, match=match) as exc:
        _load(tmp_path, text)
    assert "\n" not in str(exc.value)


def test_relative_ssh_config_is_relative_to_inventory(tmp_path):
    data = _set(_good(), "hosts.aidset.ssh_config", "conf/ssh_config")
    inv = _load(tmp_path, data)
    assert inv.host(None).ssh_config == str(tmp_path / "conf" / "ssh_config")


def test_every_problem_is_reported_at_once_each_naming_its_key(tmp_path):
    """An unknown key no longer hides behind a missing default_host, nor a wrong type
    behind either: one error, one line, every problem numbered with its key."""
    data = _good()
    del data["default_host"]
    data["hosts"]["aidset"]["bogus_key"] = 1
    data["hosts"]["aidset"]["retention_days"] = "seven"
    del data["hosts"]["aidset"]["compose"]["project"]
    data["hosts"]["aidset"]["volumes"]["redis"] = "a b"
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, data)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'inv.yml'}: 5 problems: (1) ")
    for part in ("default_host: missing", "hosts.aidset.bogus_key: expected no such key",
                 "hosts.aidset.retention_days: expected a whole number",
                 "hosts.aidset.compose.project: missing",
                 "hosts.aidset.volumes.redis: expected a docker volume name"):
        assert part in msg, part
    assert msg.endswith("(fix the inventory file)")


def test_problems_of_several_hosts_are_all_reported(tmp_path):
    data = _good()
    data["hosts"]["second"] = dict(data["hosts"]["aidset"], backup_dir="relative")
    data["hosts"]["aidset"]["min_keep"] = 0
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, data)
    msg = str(exc.value)
    assert "2 problems" in msg
    assert "hosts.aidset.min_keep" in msg and "hosts.second.backup_dir" in msg


def test_a_part_that_is_not_a_mapping_is_one_problem_and_the_rest_is_still_checked(tmp_path):
    data = _good()
    data["hosts"]["aidset"]["compose"] = "x"
    data["hosts"]["aidset"]["log_file"] = "log"
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, data)
    msg = str(exc.value)
    assert "2 problems" in msg
    assert "hosts.aidset.compose: expected a mapping" in msg
    assert "hosts.aidset.log_file: expected an absolute path" in msg


def _write_good(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((REPO / "inventory.yml").read_text())
    return path


def test_the_inventory_is_looked_for_in_the_env_then_here_then_the_users_config(
        tmp_path, monkeypatch):
    here, home = tmp_path / "here", tmp_path / "home"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv(model.ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    user = _write_good(home / ".config" / "aimms-ops" / "inventory.yml")
    assert loader.load().path == user
    local = _write_good(here / "inventory.yml")
    assert loader.load().path.resolve() == local
    named = _write_good(tmp_path / "named.yml")
    monkeypatch.setenv(model.ENV_VAR, str(named))
    assert loader.load().path == named
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert loader.config_inventory() == tmp_path / "xdg" / "aimms-ops" / "inventory.yml"


def test_no_inventory_anywhere_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(model.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(OpsError) as exc:
        loader.load()
    msg = str(exc.value)
    assert model.ENV_VAR in msg and "./inventory.yml" in msg
    assert str(tmp_path / "xdg" / "aimms-ops" / "inventory.yml") in msg
    assert "\n" not in msg


# --- keys accepted but ignored ------------------------------------------------------------


def test_the_inventories_shipped_hold_no_ignored_key():
    assert loader.load(REPO / "inventory.yml").warnings == ()
    assert "app_user" not in (REPO / "sandbox" / "up.sh").read_text()


@pytest.mark.parametrize("value", ["aimms_user", ["aimms_web"], None, 5, "not; a role"])
def test_app_user_and_databases_are_accepted_with_a_warning_each(tmp_path, value):
    data = _good()
    data["hosts"]["aidset"]["postgres"].update(app_user=value, databases=value)
    inv = _load(tmp_path, data)
    assert inv.host(None).postgres == model.Postgres("postgres")
    assert inv.warnings == tuple(
        f"warning: {tmp_path / 'inv.yml'}: hosts.aidset.postgres.{k} is ignored (aimms-ops "
        "does not use it) and may be removed from the inventory" for k in ("app_user", "databases"))


def test_a_wrong_key_beside_an_ignored_one_is_still_refused(tmp_path):
    data = _good()
    data["hosts"]["aidset"]["postgres"].update(app_user="x", bogus=1)
    with pytest.raises(OpsError, match=r"hosts\.aidset\.postgres\.bogus: expected no such key"):
        _load(tmp_path, data)

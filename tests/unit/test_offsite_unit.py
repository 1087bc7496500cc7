"""Offsite: the inventory's targets, the host settings, and the parsers, without a host."""

from __future__ import annotations

import copy
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aimms_ops.core import events
from aimms_ops.core.errors import OpsError
from aimms_ops.host import events as host_events
from aimms_ops.inventory import loader, model
from aimms_ops.inventory import offsite as offsite_config
from aimms_ops.offsite import copies, sync

RECIPIENT = "age12h65j4h7w30xwa34kv5dl554nhvgz07p8qxjw5prmky68x7ks4jqufuk0k"
KNOWN = ("[127.0.0.1]:2201 ssh-ed25519 "
         "AAAAC3NzaC1lZDI1NTE5AAAAIHpQ2G2l1m3cZ0Yv4b3l7c8s0o0h0a7c9Ff4ZyqH0o1p")

GOOD = {
    "default_host": "aidset",
    "hosts": {"aidset": {
        "backup_dir": "/home/ec2-user/postgres-backups",
        "backup_script": "/home/ec2-user/backup-postgres.sh",
        "log_file": "/home/ec2-user/postgres-backup.log",
        "cron_schedule": "0 2 * * *", "retention_days": 7, "min_keep": 3,
        "compose": {"project_dir": "/home/ec2-user/aimms-web",
                    "file": "docker-compose.prod.yml", "project": "aimms-web",
                    "postgres_service": "postgres"},
        "postgres": {"superuser": "postgres", "app_user": "aimms_user",
                     "databases": ["aimms_web"]},
        "volumes": {"postgres": "pg", "redis": "redis"},
        "offsite_recipients": [RECIPIENT],
        "offsite_identity": "~/.config/aimms-ops/age.key",
        "offsite": [
            {"name": "s3", "type": "s3", "endpoint": "https://s3.eu-west-1.amazonaws.com",
             "bucket": "aimms-backups", "prefix": "prod/", "region": "eu-west-1",
             "credentials": "/home/ec2-user/.config/aimms-ops/s3-credentials",
             "retention_days": 30, "min_keep": 5},
            {"name": "vault", "type": "ssh", "host": "backup2.example.com", "user": "vault",
             "port": 2201, "path": "/srv/offsite", "known_hosts": KNOWN,
             "key_file": "/home/ec2-user/.ssh/offsite_ed25519"},
        ],
    }},
}


def _load(tmp_path: Path, data: dict) -> model.Inventory:
    p = tmp_path / "inv.yml"
    p.write_text(yaml.safe_dump(data))
    return loader.load(p)


def _with(change) -> dict:
    data = copy.deepcopy(GOOD)
    change(data["hosts"]["aidset"])
    return data


def test_a_good_offsite_block_parses_with_the_host_defaults(tmp_path):
    host = _load(tmp_path, GOOD).host(None)
    s3, vault = host.offsite.targets
    assert (s3.prefix, s3.retention_days, s3.min_keep) == ("prod", 30, 5)
    assert (vault.port, vault.retention_days, vault.min_keep) == (2201, 7, 3)
    assert host.offsite.recipients == (RECIPIENT,)
    assert host.offsite.identity.endswith("/.config/aimms-ops/age.key")
    assert vault.where == "vault@backup2.example.com:2201:/srv/offsite"


@pytest.mark.parametrize("key, value, expected", [
    ("name", "S3 target", "target name"),
    ("type", "ftp", "s3 or ssh"),
    ("endpoint", "s3.amazonaws.com", "http(s)://"),
    ("endpoint", "http://x/$(reboot)", "http(s)://"),
    ("bucket", "Bad_Bucket", "bucket name"),
    ("prefix", "../etc", "key prefix"),
    ("region", "EU WEST", "region"),
    ("credentials", "relative/creds", "absolute path"),
    ("retention_days", 0, "whole number"),
    ("min_keep", "3", "whole number"),
    ("secret_access_key", "abc", "keys never go in the inventory"),
    ("access_key_id", "AKIA", "keys never go in the inventory"),
    ("bogus", 1, "no such key"),
])
def test_a_bad_s3_value_is_named(tmp_path, key, value, expected):
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, _with(lambda h: h["offsite"][0].update({key: value})))
    msg = str(exc.value)
    assert "inv.yml" in msg and expected in msg and "\n" not in msg
    if key != "type":
        assert f"hosts.aidset.offsite[0].{key}" in msg
    assert "abc" not in msg or key != "secret_access_key" or "'secret_access_key'" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("host", "a b", "host name"),
    ("user", "root;reboot", "user name"),
    ("port", 70000, "TCP port"),
    ("path", "offsite", "absolute path"),
    ("known_hosts", "not a key line", "known_hosts line"),
    ("known_hosts", KNOWN + "\nextra", "known_hosts line"),
    ("known_hosts", "@revoked " + KNOWN, "known_hosts line"),
    ("key_file", "~/.ssh/id", "absolute path"),
])
def test_a_bad_ssh_value_is_named(tmp_path, key, value, expected):
    with pytest.raises(OpsError) as exc:
        _load(tmp_path, _with(lambda h: h["offsite"][1].update({key: value})))
    assert f"hosts.aidset.offsite[1].{key}" in str(exc.value)
    assert expected in str(exc.value)


def test_every_problem_of_the_offsite_block_is_named_at_once(tmp_path):
    def change(h):
        h["offsite"][0]["bucket"] = "X"
        del h["offsite"][0]["credentials"]
        h["offsite"][1]["port"] = 0
        h["offsite_recipients"] = ["age1nope"]

    with pytest.raises(OpsError) as exc:
        _load(tmp_path, _with(change))
    msg = str(exc.value)
    for key in ("offsite[0].bucket", "offsite[0].credentials: missing", "offsite[1].port",
                "offsite_recipients"):
        assert key in msg
    assert "\n" not in msg


@pytest.mark.parametrize("change, expected", [
    (lambda h: h.pop("offsite_recipients"), "offsite_recipients: missing"),
    (lambda h: h["offsite"].append(dict(h["offsite"][0])), "no other target"),
    (lambda h: h.update(offsite={"name": "x"}), "a list of targets"),
    (lambda h: h["offsite"][0].pop("type"), "s3 or ssh"),
    (lambda h: h["offsite"][1].pop("known_hosts"), "known_hosts: missing"),
])
def test_offsite_structure_problems(tmp_path, change, expected):
    with pytest.raises(OpsError, match=expected):
        _load(tmp_path, _with(change))


def test_a_host_without_offsite_has_no_offsite_setting(tmp_path):
    from aimms_ops.backup.settings import script_settings

    data = _with(lambda h: [h.pop(k) for k in ("offsite", "offsite_recipients",
                                                "offsite_identity")])
    host = _load(tmp_path, data).host(None)
    assert not host.offsite
    assert "OFFSITE_CONFIG" not in script_settings(host)
    with_off = _load(tmp_path, GOOD).host(None)
    assert script_settings(with_off)["OFFSITE_CONFIG"] == ("/home/ec2-user/"
                                                           "backup-postgres.sh.offsite")


def test_the_host_settings_hold_no_secret_and_are_quoted_shell(tmp_path):
    host = _load(tmp_path, GOOD).host(None)
    text = offsite_config.conf_text(host.offsite)
    out = subprocess.run(["bash", "-c", text + '\nprintf "%s|" "$OFFSITE_TARGETS" '
                          '"$OFFSITE_VAULT_KNOWN_HOSTS" "$OFFSITE_S3_PREFIX"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == f"s3 vault|{KNOWN}|prod|"
    assert "SECRET" not in text.upper().replace("NO SECRET", "")


# --- parsers -------------------------------------------------------------------------------

SHA1, SHA2 = "a" * 64, "b" * 64
N1 = "aimms_postgres_20261130_020000.sql.gz"
N2 = "aimms_postgres_20261201_020000_pre-restore.sql.gz"

def _copy(name: str, pushed: str, size: str) -> str:
    return events.line("copy", target="s3", name=name, plaintext_sha256=SHA1,
                       plaintext_size="100", encrypted_sha256=SHA2, encrypted_size="120",
                       pushed_at=pushed, object_size=size, verified_at="-")


LIST = host_events.parse("\n".join([
    events.line("target", target="s3", ok=True, error=""),
    _copy(N1, "2026-11-30T02:00:05Z", "120"),
    _copy(N2, "2026-12-01T02:00:05Z", "60"),
    events.line("partial", target="s3", name="aimms_postgres_20261201_030000.sql.gz"),
    events.line("copy", target="s3", name="garbage"),
    events.line("copy", target="nowhere", name=N1),
    "copy s3\tnot an event",
    events.line("target", target="vault", ok=False,
                error="cannot list vault: knownhosts: key mismatch"),
]))


def test_parse_list():
    s3, vault = copies.parse_list(LIST)
    assert s3.ok and [c.name for c in s3.copies] == [N2, N1]
    assert not s3.copies[0].complete and s3.copies[1].complete
    assert s3.partial == ["aimms_postgres_20261201_030000.sql.gz"]
    assert s3.newest().name == N1
    safety = copies.OffsiteCopy("s3", "aimms_postgres_20261202_020000_pre-restore.sql.gz",
                                 SHA1, 1, SHA2, 5, None, 5)
    assert safety.safety and safety.complete
    assert copies.TargetListing("s3", True, copies=[safety, *s3.copies]).newest().name == N1
    assert not vault.ok and "key mismatch" in vault.error
    d = s3.copies[1].as_dict()
    assert d["location"] == "offsite" and d["target"] == "s3" and d["sha256"] == SHA1


def test_pick_copy_refuses_incomplete_and_unknown():
    s3 = copies.parse_list(LIST)[0]
    assert copies.pick_copy(s3, "latest").name == N1
    with pytest.raises(OpsError, match="incomplete"):
        copies.pick_copy(s3, N2)
    with pytest.raises(OpsError, match="no copy"):
        copies.pick_copy(s3, "aimms_postgres_20200101_000000.sql.gz")
    with pytest.raises(OpsError, match="not a backup name"):
        copies.pick_copy(s3, "../etc/passwd")


def test_parse_sync():
    out = host_events.parse("\n".join([
        events.line("offsite", action="push", target="s3", name=N2, reason=""),
        events.line("offsite", action="remove", target="s3", name=N1,
                    reason="older than 7 days (9d old)"),
        events.line("offsite-result", target="s3", ok=True,
                    detail="pushed=1 pruned=1 seconds=3"),
        events.line("offsite-result", target="vault", ok=False,
                    detail="upload of x failed: connection refused"),
        "noise",
    ]))
    s3, vault = sync.parse_sync(out, ["s3", "vault"])
    assert s3.ok and s3.pushed == (N2,) and s3.removed == ((N1, "older than 7 days (9d old)"),)
    assert not vault.ok and vault.detail.startswith("upload of x failed")


def test_push_results_and_status_checks():
    log = "\n".join([
        "2026-12-01T02:00:09Z backup[7] RESULT ok x size=1 sha256=a seconds=1",
        "2026-12-01T02:00:10Z backup[7] RESULT offsite s3 failed: bucket gone",
        "2026-12-01T02:00:11Z backup[7] RESULT offsite vault ok pushed=1 pruned=0 seconds=1",
        "2026-12-01T03:00:00Z offsite[9] RESULT offsite vault ok pushed=0 pruned=0 seconds=0",
    ])
    pushes = copies.parse_push_results(log)
    assert pushes["s3"][1] is False and pushes["s3"][2] == "bucket gone"
    assert pushes["vault"][0] == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    s3 = copies.parse_list(LIST)[0]
    vault = copies.TargetListing("vault", True, copies=[s3.copies[1]])
    now = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    checks = copies.judge([s3, vault], pushes, now, 26 * 3600, "26h")
    assert checks[0].state.name == "CRITICAL" and "last push failed" in checks[0].detail
    assert checks[1].state.name == "OK" and "newest copy" in checks[1].detail
    late = copies.judge([vault], pushes, now + timedelta(days=3), 26 * 3600, "26h")
    assert late[0].state.name == "CRITICAL" and "old (max 26h)" in late[0].detail
    later = {**pushes, "all": (datetime(2026, 12, 1, 3, 30, tzinfo=UTC), False,
                               "offsite settings missing (run fab install-backups)")}
    assert "settings missing" in copies.judge([vault], later, now, 26 * 3600, "26h")[0].detail
    empty = copies.judge([copies.TargetListing("s3", True)], {}, now, 60, "1m")
    assert "no copy" in empty[0].detail

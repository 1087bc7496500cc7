"""Integration: fab check and host-key verification against the sandbox host."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import fab_error_line

pytestmark = pytest.mark.integration


def test_check_passes_on_the_sandbox(sandbox):
    proc = sandbox.fab("check")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for row in ("ssh", "docker", "compose project", "postgres container",
                "postgres accepting connections", "volume aimms_postgres_data_prod",
                "volume aimms_redis_data_prod", "backup dir"):
        assert row in proc.stdout
    assert "SHA256:" in proc.stdout
    assert "CRITICAL" not in proc.stdout


def _config_with_known_hosts(sandbox, tmp_path: Path, known_hosts: str) -> Path:
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts)
    text = sandbox.ssh_config.read_text()
    text = re.sub(r"(?m)^(\s*UserKnownHostsFile\s+).*$", rf"\g<1>{kh}", text)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(text)
    inv = tmp_path / "inventory.yml"
    inv.write_text(sandbox.inventory.read_text().replace(str(sandbox.ssh_config), str(cfg)))
    return inv


def _accept_new(inv: Path) -> None:
    text = inv.read_text().replace("  aidset:\n", "  aidset:\n    accept_new_host_key: true\n", 1)
    inv.write_text(text)


def _server_fingerprint(sandbox) -> str:
    line = Path(_known_hosts_path(sandbox)).read_text().split("\n")[0]
    proc = subprocess.run(["ssh-keygen", "-lf", "-"], input=line, text=True,
                          capture_output=True, check=True)
    return proc.stdout.split()[1]


def _known_hosts_path(sandbox) -> str:
    m = re.search(r"(?m)^\s*UserKnownHostsFile\s+(\S+)", sandbox.ssh_config.read_text())
    assert m
    return m.group(1)


def test_unknown_host_is_refused_with_fingerprint(sandbox, tmp_path):
    inv = _config_with_known_hosts(sandbox, tmp_path, "")
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "not a known host" in line
    assert _server_fingerprint(sandbox) in line
    assert "ssh-keyscan" in line


def _inventory_with_another_key(sandbox, tmp_path: Path) -> Path:
    """An inventory whose known_hosts holds another key for the sandbox's name."""
    real = Path(_known_hosts_path(sandbox)).read_text().split("\n")[0]
    name = real.split()[0]
    keyfile = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)],
                   check=True)
    other = keyfile.with_suffix(".pub").read_text().split()
    return _config_with_known_hosts(sandbox, tmp_path, f"{name} {other[0]} {other[1]}\n")


def test_changed_host_key_is_refused(sandbox, tmp_path):
    inv = _inventory_with_another_key(sandbox, tmp_path)
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "CHANGED" in line
    assert _server_fingerprint(sandbox) in line


def test_changed_key_refused_even_when_accepting_new_hosts(sandbox, tmp_path):
    inv = _inventory_with_another_key(sandbox, tmp_path)
    _accept_new(inv)
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode != 0
    assert "CHANGED" in fab_error_line(proc)


def test_accept_new_host_key_only_when_the_inventory_says_so(sandbox, tmp_path):
    inv = _config_with_known_hosts(sandbox, tmp_path, "")
    _accept_new(inv)
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode == 0, proc.stderr
    assert "trusted new host key" in proc.stderr
    kh = (tmp_path / "known_hosts").read_text()
    # What was written is what OpenSSH itself then accepts.
    cfg = tmp_path / "ssh_config"
    res = subprocess.run(["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "aidset", "true"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, (kh, res.stderr)


@pytest.mark.parametrize("content, match", [
    ("default_host: aidset\nhosts: {aidset: {bogus: 1}}\n", "hosts.aidset.bogus"),
    ("default_host: aidset\nhosts:\n  aidset: [", "YAML syntax error"),
    ("- 1\n", "top level: expected a mapping"),
])
def test_broken_inventory_is_one_line(sandbox, tmp_path, content, match):
    inv = tmp_path / "inv.yml"
    inv.write_text(content)
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert match in line and str(inv) in line
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1


def test_missing_inventory_is_one_line(sandbox, tmp_path):
    proc = sandbox.fab("check", inventory=tmp_path / "absent.yml")
    assert proc.returncode != 0
    assert "inventory file not found" in fab_error_line(proc)


def test_check_names_a_stopped_postgres(sandbox):
    sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml "
                "stop postgres")
    try:
        proc = sandbox.fab("check")
        assert proc.returncode != 0
        assert "postgres container" in fab_error_line(proc)
        assert "postgres accepting connections" in fab_error_line(proc)
    finally:
        sandbox.ssh("cd ~/aimms-web && docker-compose -p aimms-web -f docker-compose.prod.yml "
                    "up -d postgres")
        sandbox.wait_ready()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jump_config(sandbox, tmp_path: Path, bastion_port: str | None = None) -> Path:
    """An ssh_config where aidset is reached through a bastion (the sandbox itself)."""
    text = sandbox.ssh_config.read_text()
    body = text.split("Host aidset", 1)[1]
    bastion = body
    if bastion_port is not None:
        bastion = re.sub(r"(?m)^(\s*Port\s+)\d+", rf"\g<1>{bastion_port}", body)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host aidset{body.rstrip()}\n  ProxyJump bastion\n\nHost bastion{bastion}")
    inv = tmp_path / "inventory.yml"
    inv.write_text(sandbox.inventory.read_text().replace(str(sandbox.ssh_config), str(cfg)))
    return inv


def test_proxyjump_is_followed(sandbox, tmp_path):
    proc = sandbox.fab("check", inventory=_jump_config(sandbox, tmp_path))
    assert proc.returncode == 0, proc.stderr


def test_proxyjump_through_an_unreachable_bastion_fails_cleanly(sandbox, tmp_path):
    proc = sandbox.fab("check", inventory=_jump_config(sandbox, tmp_path, str(_free_port())))
    assert proc.returncode != 0
    assert "cannot connect to bastion" in fab_error_line(proc)


def _with_alias(sandbox, tmp_path: Path, known_hosts: str, alias: str) -> Path:
    inv = _config_with_known_hosts(sandbox, tmp_path, known_hosts)
    cfg = tmp_path / "ssh_config"
    text = cfg.read_text().replace("Host aidset\n", f"Host aidset\n  HostKeyAlias {alias}\n")
    cfg.write_text(text)
    return inv


def test_a_host_key_alias_is_honoured_as_openssh_honours_it(sandbox, tmp_path):
    """The key is known under the alias only (a tunnel, a forwarded port): both ssh and
    the tasks reach the host; unknown, the hint names the alias and works when pasted."""
    real = Path(_known_hosts_path(sandbox)).read_text().split("\n")[0]
    _, kind, key = real.split()[:3]
    inv = _with_alias(sandbox, tmp_path, f"aidset-real {kind} {key}\n", "aidset-real")
    cfg = tmp_path / "ssh_config"
    by_ssh = subprocess.run(["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "aidset", "true"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert by_ssh.returncode == 0, by_ssh.stderr
    proc = sandbox.fab("list-backups", inventory=inv)
    assert proc.returncode == 0, proc.stderr

    inv = _with_alias(sandbox, tmp_path, "", "aidset-real")
    proc = sandbox.fab("check", inventory=inv)
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "not a known host" in line and "aidset-real" in line, line
    hint = line.split("trust it with: ", 1)[1].removesuffix(")")
    subprocess.run(["bash", "-o", "pipefail", "-c", hint], check=True, timeout=60,
                   capture_output=True)
    assert (tmp_path / "known_hosts").read_text().startswith(f"aidset-real {kind} {key}")
    assert sandbox.fab("list-backups", inventory=inv).returncode == 0


def test_a_changed_key_under_a_host_key_alias_is_refused_naming_the_alias(sandbox, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    inv = _with_alias(sandbox, tmp_path, f"aidset-real {kind} {key}\n", "aidset-real")
    proc = sandbox.fab("list-backups", inventory=inv)
    assert proc.returncode != 0
    line = fab_error_line(proc)
    assert "CHANGED" in line and "aidset-real" in line, line

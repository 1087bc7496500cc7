"""ssh_config resolution through `ssh -G`, parsed purely, and against real OpenSSH."""

from __future__ import annotations

import os
import shutil

import pytest

from aimms_ops.core.errors import OpsError
from aimms_ops.host import ssh

SAMPLE = """\
user deploy
hostname 10.0.0.5
port 2222
identitiesonly yes
identityfile ~/.ssh/id_ed25519
identityfile /keys/prod
userknownhostsfile ~/.ssh/known_hosts /etc/team_known_hosts
globalknownhostsfile /etc/ssh/ssh_known_hosts
proxyjump bastion
connecttimeout 7
serveraliveinterval 20
"""


def test_parse_ssh_g():
    t = ssh.target_from_options("aidset", ssh.parse_ssh_g(SAMPLE))
    assert t.hostname == "10.0.0.5"
    assert t.port == 2222
    assert t.user == "deploy"
    assert t.identities_only is True
    assert t.identity_files == (os.path.expanduser("~/.ssh/id_ed25519"), "/keys/prod")
    assert t.known_hosts_files == (os.path.expanduser("~/.ssh/known_hosts"),
                                   "/etc/team_known_hosts", "/etc/ssh/ssh_known_hosts")
    assert t.proxy_jump == "bastion"
    assert t.connect_timeout == 7.0
    assert t.known_hosts_name == "[10.0.0.5]:2222"


def test_defaults():
    t = ssh.target_from_options("h", ssh.parse_ssh_g("hostname h\nproxyjump none\n"))
    assert t.port == 22 and t.proxy_jump is None and t.known_hosts_name == "h"
    assert t.host_key_alias is None


def test_a_host_key_alias_is_the_known_hosts_name_and_the_address_stays():
    t = ssh.target_from_options("h", ssh.parse_ssh_g(
        "hostname 127.0.0.1\nport 2200\nhostkeyalias db.internal\n"))
    assert t.known_hosts_name == "db.internal" and t.address_name == "[127.0.0.1]:2200"


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_resolve_follows_include(tmp_path):
    inc = tmp_path / "conf.d" / "prod.conf"
    inc.parent.mkdir()
    inc.write_text("Host aidset\n  HostName 127.0.0.9\n  Port 2200\n  User ec2-user\n")
    main = tmp_path / "config"
    main.write_text(f"Include {inc.parent}/*.conf\n")
    t = ssh.resolve("aidset", str(main))
    assert (t.hostname, t.port, t.user) == ("127.0.0.9", 2200, "ec2-user")


def test_missing_config_file(tmp_path):
    with pytest.raises(OpsError, match="ssh_config file not found"):
        ssh.resolve("aidset", str(tmp_path / "none"))

"""SSH connections that are safe to point at production.

The host is reached the way ``ssh NAME`` reaches it: ``ssh -G`` resolves the
user's ssh_config (Include, Match, ProxyJump and defaults included), and the
known_hosts files it names are loaded. An unknown host key is refused unless the
inventory explicitly accepts new hosts; a changed key is refused always. Fabric's
own Connection trusts every key, so the policy is set here before it opens.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from fabric import Config, Connection

from aimms_ops.core.errors import OpsError
from aimms_ops.host import shell

#: paramiko logs what its transport thread meets (``Socket exception: Connection reset by
#: peer``) through Python's last-resort handler, on stderr, after the task's own one line:
#: the task says what happened; paramiko's words stay off the screen.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Receive window and packet size for every channel. A download reads the whole
#: window at once and a writer thread queues a few windows' worth for the disk, so a
#: moderate window keeps the link busy; a larger one only costs memory (measured on
#: 1 GB over loopback: 2-4 MiB fastest, 16 MiB slower, 64 MiB half the speed).
WINDOW_SIZE = 4 * 1024 * 1024
MAX_PACKET_SIZE = 32768
#: Ciphers tried first: AES-GCM is about twice as fast as paramiko's default
#: aes128-ctr + hmac-sha2-256 on CPUs with AES-NI.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: Never offered: a 64-bit block cipher is unsafe with the re-key limit below.
REFUSED_CIPHERS = ("3des-cbc",)
#: Re-key after this many bytes in either direction, as OpenSSH does by default for
#: ciphers with 128-bit blocks (2^32 blocks = 64 GiB, RFC 4344), instead of paramiko's
#: 2^29 bytes. A re-key that paramiko starts while the server closes the channel
#: stalls the transport for 30 s and then fails (paramiko issue #822): it hit 2 of 3
#: downloads of exactly 512 MiB here; with this limit a transfer has to pass 64 GiB.
REKEY_BYTES = 2**36


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect, as OpenSSH resolves it for an alias."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    connect_timeout: float | None = None
    server_alive_interval: int = 0
    config_file: str | None = None
    host_key_alias: str | None = None
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False)

    @property
    def address_name(self) -> str:
        """The name paramiko looks the host's key up by: ``host``, or ``[host]:port``."""
        if self.port == 22:
            return self.hostname
        return f"[{self.hostname}]:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host has in known_hosts: OpenSSH's ``HostKeyAlias`` when the
        config sets one (a tunnel, a forwarded port: the key is the real host's), else
        ``host`` or ``[host]:port``."""
        return self.host_key_alias or self.address_name


def parse_ssh_g(text: str) -> dict[str, list[str]]:
    """Parse ``ssh -G`` output: one ``key value`` per line, keys may repeat."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        out.setdefault(key.lower(), []).append(value.strip())
    return out


def _expand(path: str) -> str:
    return os.path.expanduser(path) if path.startswith("~") else path


def target_from_options(alias: str, opts: dict[str, list[str]],
                        config_file: str | None = None) -> SshTarget:
    """Build an SshTarget from parsed ``ssh -G`` options."""

    def one(key: str, default: str | None = None) -> str | None:
        vals = opts.get(key)
        return vals[0] if vals else default

    known: list[str] = []
    for key in ("userknownhostsfile", "globalknownhostsfile"):
        for value in opts.get(key, []):
            known.extend(_expand(p) for p in value.split())
    timeout = one("connecttimeout")
    proxy = one("proxyjump")
    return SshTarget(
        alias=alias,
        hostname=one("hostname", alias) or alias,
        port=int(one("port", "22") or 22),
        user=one("user"),
        identity_files=tuple(_expand(p) for p in opts.get("identityfile", [])),
        identities_only=(one("identitiesonly", "no") == "yes"),
        known_hosts_files=tuple(known),
        proxy_jump=None if proxy in (None, "none") else proxy,
        connect_timeout=None if timeout in (None, "none") else float(timeout),
        server_alive_interval=int(one("serveraliveinterval", "0") or 0),
        config_file=config_file,
        host_key_alias=one("hostkeyalias"),
        extra=opts,
    )


def resolve(alias: str, config_file: str | None = None) -> SshTarget:
    """Resolve ``alias`` exactly as ``ssh alias`` would, through ``ssh -G``."""
    if config_file is not None and not Path(config_file).is_file():
        raise OpsError(f"ssh_config file not found: {config_file}",
                       "fix ssh_config in the inventory")
    ssh = shutil.which("ssh")
    if ssh is None:
        return _resolve_with_paramiko(alias, config_file)
    argv = [ssh]
    if config_file:
        argv += ["-F", config_file]
    argv += ["-G", "--", alias]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=30, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no detail"])[-1]
        where = config_file or "~/.ssh/config"
        raise OpsError(f"ssh cannot resolve host {alias!r}: {detail}", f"check {where}")
    return target_from_options(alias, parse_ssh_g(proc.stdout), config_file)


def _resolve_with_paramiko(alias: str, config_file: str | None) -> SshTarget:
    path = Path(config_file) if config_file else Path.home() / ".ssh" / "config"
    cfg = paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
    raw = cfg.lookup(alias)
    opts: dict[str, list[str]] = {}
    for key, value in raw.items():
        opts[key] = value if isinstance(value, list) else [str(value)]
    opts.setdefault("userknownhostsfile", ["~/.ssh/known_hosts"])
    return target_from_options(alias, opts, config_file)


# --- host keys -----------------------------------------------------------------


def _key_line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint, as ``ssh-keygen -lf`` prints it."""
    return key.fingerprint


@dataclass
class KnownHosts:
    """The known_hosts entries of a target, loaded tolerantly.

    ``@cert-authority`` lines are skipped (paramiko would drop the whole file);
    ``@revoked`` keys are remembered and refused.
    """

    keys: paramiko.HostKeys
    revoked: list[paramiko.PKey]
    files: tuple[str, ...]

    @classmethod
    def load(cls, files: tuple[str, ...]) -> KnownHosts:
        keys = paramiko.HostKeys()
        revoked: list[paramiko.PKey] = []
        for fname in files:
            try:
                lines = Path(fname).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                marker = None
                if line.startswith("@"):
                    marker, _, line = line.partition(" ")
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                except (paramiko.SSHException, ValueError, TypeError):
                    entry = None
                if entry is None or entry.key is None:
                    continue
                if marker == "@revoked":
                    revoked.append(entry.key)
                elif marker is None:
                    # The entry as parsed (all its names, hashed ones too): no public API.
                    keys._entries.append(entry)  # type: ignore[attr-defined]
        return cls(keys=keys, revoked=revoked, files=files)


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        t = self.target
        dest = t.known_hosts_files[0] if t.known_hosts_files else "~/.ssh/known_hosts"
        port = f" -p {t.port}" if t.port != 22 else ""
        raise OpsError(
            f"{t.alias} ({hostname}) is not a known host: it offers {key.get_name()} key "
            f"{fingerprint(key)}",
            f"if that is the server's key, trust it with: ssh-keyscan{port} -t "
            f"{key.get_name()} {t.hostname}{_renamed(t)} >> {dest}",
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust a host seen for the first time (the inventory asked for it)."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        files = self.target.known_hosts_files or (os.path.expanduser("~/.ssh/known_hosts"),)
        dest = Path(files[0])
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = self.target.known_hosts_name
        with dest.open("a", encoding="utf-8") as fh:
            fh.write(_key_line(name, key) + "\n")
        print(f"warning: trusted new host key for {name}: {key.get_name()} "
              f"{fingerprint(key)} (added to {dest})", file=sys.stderr)


def _renamed(t: SshTarget) -> str:
    """A sed that names ssh-keyscan's lines as known_hosts must (``HostKeyAlias``), or ''."""
    if not t.host_key_alias:
        return ""
    return " | " + shell.join(["sed", f"s/^[^ ]*/{t.host_key_alias}/"])


def _by_alias(known: KnownHosts, target: SshTarget) -> None:
    """Under ``HostKeyAlias``, the keys known for the alias are the keys of the address
    paramiko connects to (in memory: nothing is written)."""
    if not target.host_key_alias:
        return
    for keytype, key in (known.keys.lookup(target.host_key_alias) or {}).items():
        known.keys.add(target.address_name, keytype, key)


def _transport_factory(sock: socket.socket, **kwargs: object) -> paramiko.Transport:
    t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE,
                           default_max_packet_size=MAX_PACKET_SIZE, **kwargs)  # type: ignore[arg-type]
    opts = t.get_security_options()
    available = tuple(c for c in opts.ciphers if c not in REFUSED_CIPHERS)
    first = tuple(c for c in PREFERRED_CIPHERS if c in available)
    opts.ciphers = first + tuple(c for c in available if c not in first)
    t.packetizer.REKEY_BYTES = REKEY_BYTES
    return t


def connect(target: SshTarget, *, accept_new: bool = False,
            gateway: Connection | None = None) -> Connection:
    """Open a Fabric Connection to ``target`` that verifies the host key.

    Raises OpsError with one line for every failure a user can fix (unknown or
    changed host key, refused connection, failed authentication).
    """
    if target.proxy_jump and gateway is None:
        gateway = _connect_jump(target, accept_new=accept_new)
    keys = [f for f in target.identity_files if Path(f).is_file()]
    connect_kwargs: dict[str, object] = {
        "look_for_keys": False,
        "allow_agent": not target.identities_only,
        "transport_factory": _transport_factory,
    }
    if keys:
        connect_kwargs["key_filename"] = keys
    config = Config(overrides={"load_ssh_configs": False})
    conn = Connection(
        host=target.hostname, user=target.user, port=target.port, config=config,
        gateway=gateway, connect_timeout=target.connect_timeout or 30,
        connect_kwargs=connect_kwargs,
    )
    known = KnownHosts.load(target.known_hosts_files)
    _by_alias(known, target)
    client = conn.client
    client._system_host_keys = known.keys
    client._host_keys = paramiko.HostKeys()
    policy = _AcceptNew(target) if accept_new else _RefuseUnknown(target)
    client.set_missing_host_key_policy(policy)
    try:
        conn.open()
    except OpsError:
        conn.close()
        raise
    except paramiko.BadHostKeyException as exc:
        conn.close()
        raise OpsError(
            f"{target.alias} ({target.known_hosts_name}): the host key has CHANGED: the "
            f"server offers {exc.key.get_name()} {fingerprint(exc.key)}, known_hosts "
            f"expects {fingerprint(exc.expected_key)}; refusing to connect",
            "if the host was really reinstalled, remove the old key with ssh-keygen -R "
            f"'{target.known_hosts_name}' and verify the new one out of band",
        ) from None
    except paramiko.AuthenticationException as exc:
        conn.close()
        raise OpsError(f"{target.alias}: SSH authentication failed as {target.user}: {exc}",
                       "check User and IdentityFile in your ssh_config") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        conn.close()
        raise OpsError(
            f"cannot connect to {target.alias} ({target.hostname}:{target.port}): "
            f"{exc or type(exc).__name__}",
            f"check that `ssh {target.alias}` works",
        ) from None
    transport = client.get_transport()
    assert transport is not None
    server_key = transport.get_remote_server_key()
    if any(server_key == r for r in known.revoked):
        conn.close()
        raise OpsError(f"{target.alias}: the server's key {fingerprint(server_key)} is "
                       "marked @revoked in known_hosts; refusing to connect")
    if target.server_alive_interval:
        transport.set_keepalive(target.server_alive_interval)
    else:
        transport.set_keepalive(15)
    return conn


def _connect_jump(target: SshTarget, *, accept_new: bool) -> Connection:
    """Connect to the first hop of ``target.proxy_jump``, itself verified."""
    hops = [h for h in target.proxy_jump.split(",") if h] if target.proxy_jump else []
    gateway: Connection | None = None
    for hop in hops:
        user = None
        port = None
        host = hop
        if "@" in host:
            user, _, host = host.rpartition("@")
        if host.count(":") == 1:
            host, _, p = host.partition(":")
            port = int(p)
        jt = resolve(host, target.config_file)
        if user or port:
            jt = SshTarget(
                alias=jt.alias, hostname=jt.hostname, port=port or jt.port,
                user=user or jt.user, identity_files=jt.identity_files,
                identities_only=jt.identities_only, known_hosts_files=jt.known_hosts_files,
                connect_timeout=jt.connect_timeout, config_file=jt.config_file,
            )
        gateway = connect(jt, accept_new=accept_new, gateway=gateway)
    assert gateway is not None
    return gateway

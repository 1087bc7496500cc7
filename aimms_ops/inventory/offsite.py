"""Offsite targets in the inventory: parsed, validated, and turned into host settings.

A host's ``offsite:`` is a list of targets the host pushes an encrypted copy of
each good backup to, with rclone, right after the backup (the host program's offsite
push-all, aimms_ops/agent/offsite.py):

- ``type: s3``: ``endpoint``, ``bucket``, optional ``prefix`` and ``region``, and
  ``credentials``, the path of a file on the host (0600) holding the access key;
  the key itself is never in the inventory, on a command line or in a log.
- ``type: ssh``: a second host reached from the backup host: ``host``, ``user``,
  ``port``, ``path``, its ``known_hosts`` line (an unknown or changed key is
  refused) and ``key_file``, the backup host's private key for it.

Each has the host's retention policy (its GFS rules and pins included), or its own when
it sets any of ``retention_days``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``,
``keep_yearly`` (the others then 0) and ``min_keep`` (default: the host's). Copies are
encrypted with age to ``offsite_recipients`` (public keys); the identity that
decrypts them stays on the operator's machine (``offsite_identity``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimms_ops.core.errors import key_path, problem
from aimms_ops.core.retention import RULES, Policy
from aimms_ops.host import shell

TARGET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}")
RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX = re.compile(r"^[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?")
HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}")
REGION = re.compile(r"^[a-z0-9-]{1,32}")
KEY_TYPES = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-rsa"}
IDENTITY_ENV = "AIMMS_OPS_AGE_IDENTITY"

_POLICY_KEYS = ("retention_days", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
                "min_keep")
_COMMON = {"name", "type", *_POLICY_KEYS}
_S3_KEYS = _COMMON | {"endpoint", "bucket", "prefix", "region", "credentials"}
_SSH_KEYS = _COMMON | {"host", "user", "port", "path", "known_hosts", "key_file"}
_KEYS_ELSEWHERE = ("keys never go in the inventory: put them in the credentials file on the "
                "host (0600) and name that file in credentials")


@dataclass(frozen=True)
class Target:
    """One offsite target of a host."""

    name: str
    type: str  # "s3" or "ssh"
    retention_days: int
    min_keep: int
    #: the GFS part of its policy, as retention.Policy.rules_text gives it
    rules: str = ""
    # s3
    endpoint: str = ""
    bucket: str = ""
    prefix: str = ""
    region: str = "us-east-1"
    credentials: str = ""
    # ssh
    host: str = ""
    user: str = ""
    port: int = 22
    path: str = ""
    known_hosts: str = ""
    key_file: str = ""

    @property
    def where(self) -> str:
        """Where the copies are, for people: ``s3 http://…/bucket/prefix`` or ``user@host:path``."""
        if self.type == "s3":
            loc = f"{self.endpoint.rstrip('/')}/{self.bucket}"
            return f"{loc}/{self.prefix}" if self.prefix else loc
        port = f":{self.port}" if self.port != 22 else ""
        return f"{self.user}@{self.host}{port}:{self.path}"


@dataclass(frozen=True)
class Offsite:
    """A host's offsite settings: its targets, the age recipients, the local identity."""

    targets: tuple[Target, ...] = ()
    recipients: tuple[str, ...] = ()
    identity: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.targets)

    def target(self, name: str) -> Target:
        from aimms_ops.core.errors import OpsError, shown

        for t in self.targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.targets) or "none"
        raise OpsError(f"no offsite target named {shown(name, 40)} (targets: {known})",
                       "name one of the host's offsite targets in the inventory")


def _abs_path(v: Any) -> bool:
    return (isinstance(v, str) and v.startswith("/") and "\n" not in v and "\x00" not in v
            and ".." not in v.split("/") and len(v) < 1024)


def _int(minimum: int, maximum: int = 10**9) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, int) and not isinstance(v, bool)
                      and minimum <= v <= maximum)


def is_known_hosts_line(v: Any) -> bool:
    """``HOSTS KEYTYPE BASE64 [comment]``, one line, a key type OpenSSH uses."""
    if not isinstance(v, str) or "\n" in v or "\x00" in v:
        return False
    parts = v.split()
    if len(parts) < 3 or parts[1] not in KEY_TYPES or parts[0].startswith("@"):
        return False
    try:
        base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return False
    return all(re.fullmatch(r"[A-Za-z0-9.:\[\]*?,|=+/_-]+", p) for p in parts[:3])


def parse(data: Mapping[str, Any], key: str, policy: Policy, base: Path) -> Offsite:
    """The ``offsite``, ``offsite_recipients`` and ``offsite_identity`` keys of one host.

    Returns an Offsite whose ``problems`` lists every problem found (all at once),
    each ``KEY: expected …, got …``; the caller raises them as one error.
    """
    problems: list[str] = []

    def bad(where: str, expected: str, value: Any = None, missing: bool = False,
            unknown: bool = False) -> None:
        problems.append(problem(where, expected, value, missing=missing, unknown=unknown))

    raw = data.get("offsite")
    recips_raw = data.get("offsite_recipients")
    ident_raw = data.get("offsite_identity")
    targets: list[Target] = []
    if raw is not None and not isinstance(raw, list):
        bad(f"{key}.offsite", "a list of targets, each with name and type (s3 or ssh)", raw)
        raw = []
    seen: set[str] = set()
    for i, t in enumerate(raw or []):
        where = f"{key}.offsite[{i}]"
        target = _parse_target(t, where, policy, bad)
        if target is None:
            continue
        if target.name in seen:
            bad(f"{where}.name", "a name no other target of the host has", target.name)
            continue
        seen.add(target.name)
        targets.append(target)
    recipients: list[str] = []
    if recips_raw is not None:
        if (not isinstance(recips_raw, list) or not recips_raw
                or not all(isinstance(r, str) and RECIPIENT.fullmatch(r) for r in recips_raw)):
            bad(f"{key}.offsite_recipients",
                "a non-empty list of age public keys (age1…, from age-keygen -y)", recips_raw)
        else:
            recipients = list(dict.fromkeys(recips_raw))
    if raw and not recipients and recips_raw is None:
        bad(f"{key}.offsite_recipients",
            "a list of age public keys (age1…): copies are encrypted to them", missing=True)
    identity = None
    if ident_raw is not None:
        if not isinstance(ident_raw, str) or not ident_raw.strip() or "\n" in ident_raw:
            bad(f"{key}.offsite_identity", "the path of an age identity file on this machine",
                ident_raw)
        else:
            p = Path(os.path.expanduser(ident_raw))
            identity = str(p if p.is_absolute() else base / p)
    return Offsite(tuple(targets), tuple(recipients), identity, tuple(problems))


def _parse_target(t: Any, where: str, policy: Policy,
                  bad: Callable[..., None]) -> Target | None:
    if not isinstance(t, dict):
        bad(where, "a mapping with name and type (s3 or ssh)", t)
        return None
    ok = [True]

    def fail(*args: Any, **kw: Any) -> None:
        ok[0] = False
        bad(*args, **kw)

    ttype = t.get("type")
    if ttype not in ("s3", "ssh"):
        fail(f"{where}.type", "s3 or ssh", ttype, missing=ttype is None)
        return None
    allowed = _S3_KEYS if ttype == "s3" else _SSH_KEYS
    for k in t:
        if k not in allowed:
            secretish = isinstance(k, str) and any(w in k.lower() for w in (
                "secret", "access_key", "password", "token"))
            fail(key_path(where, k), _KEYS_ELSEWHERE if secretish else
                 "no such key; known keys: " + ", ".join(sorted(allowed)), unknown=True)

    def get(k: str, check: Callable[[Any], bool], expected: str, default: Any = None,
            required: bool = False) -> Any:
        v = t.get(k)
        if v is None:
            if required:
                fail(f"{where}.{k}", expected, missing=True)
            return default
        if not check(v):
            fail(f"{where}.{k}", expected, v)
            return default
        return v

    name = get("name", lambda v: isinstance(v, str) and bool(TARGET_NAME.fullmatch(v)),
               "a target name: a lower-case letter, then letters, digits or _ (at most 31)",
               required=True)
    own = any(t.get(k) is not None for k in _POLICY_KEYS if k != "min_keep")
    counts = {r: get(f"keep_{r}", _int(0), "a whole number, 0 or more",
                     0 if own else getattr(policy, r)) for r in RULES}
    common = {
        "retention_days": get("retention_days", _int(1), "a whole number of days, at least 1",
                              0 if own else policy.within_days),
        "min_keep": get("min_keep", _int(1), "a whole number, at least 1", policy.min_keep),
        "rules": Policy(**counts).rules_text,
    }
    if ttype == "s3":
        kw = {
            "endpoint": get("endpoint", lambda v: isinstance(v, str)
                            and bool(ENDPOINT.fullmatch(v)),
                            "an http(s)://HOST[:PORT] URL", required=True),
            "bucket": get("bucket", lambda v: isinstance(v, str) and bool(BUCKET.fullmatch(v))
                          and ".." not in v, "an S3 bucket name (a-z, 0-9, '.', '-')",
                          required=True),
            "prefix": get("prefix", lambda v: isinstance(v, str) and bool(PREFIX.fullmatch(
                v.strip("/"))) and ".." not in v.split("/"),
                "a key prefix like aimms/prod (letters, digits, . _ - and /)", ""),
            "region": get("region", lambda v: isinstance(v, str) and bool(REGION.fullmatch(v)),
                          "a region name like eu-west-1", "us-east-1"),
            "credentials": get("credentials", _abs_path,
                               "the absolute path of the credentials file on the host",
                               required=True),
        }
        kw["prefix"] = (kw["prefix"] or "").strip("/")
    else:
        kw = {
            "host": get("host", lambda v: isinstance(v, str) and bool(HOSTNAME.fullmatch(v)),
                        "a host name or IP address", required=True),
            "user": get("user", lambda v: isinstance(v, str) and bool(USER.fullmatch(v)),
                        "a user name", required=True),
            "port": get("port", _int(1, 65535), "a TCP port, 1..65535", 22),
            "path": get("path", _abs_path, "an absolute path on that host", required=True),
            "known_hosts": get("known_hosts", is_known_hosts_line,
                               "its known_hosts line: HOST KEYTYPE BASE64 (ssh-keyscan)",
                               required=True),
            "key_file": get("key_file", _abs_path,
                            "the absolute path of the private key on the backup host",
                            required=True),
        }
    if not ok[0]:
        return None
    return Target(name=name, type=ttype, **common, **kw)


# --- the settings file on the host ------------------------------------------------------


def settings(off: Offsite) -> dict[str, str]:
    """The settings the host program's offsite command reads for ``off`` (pure, ordered)."""
    out = {"OFFSITE_TARGETS": " ".join(t.name for t in off.targets),
           "OFFSITE_RECIPIENTS": " ".join(off.recipients)}
    for t in off.targets:
        p = f"OFFSITE_{t.name.upper()}_"
        out[p + "TYPE"] = t.type
        out[p + "RETENTION_DAYS"] = str(t.retention_days)
        out[p + "MIN_KEEP"] = str(t.min_keep)
        out[p + "RETENTION_RULES"] = t.rules
        if t.type == "s3":
            out[p + "ENDPOINT"] = t.endpoint
            out[p + "BUCKET"] = t.bucket
            out[p + "PREFIX"] = t.prefix
            out[p + "REGION"] = t.region
            out[p + "CREDENTIALS"] = t.credentials
        else:
            out[p + "HOST"] = t.host
            out[p + "USER"] = t.user
            out[p + "PORT"] = str(t.port)
            out[p + "PATH"] = t.path
            out[p + "KNOWN_HOSTS"] = t.known_hosts
            out[p + "KEY_FILE"] = t.key_file
    return out


def conf_text(off: Offsite) -> str:
    """The offsite settings file installed on the host (0600): shell assignments."""
    lines = ["# Written by fab install-backups (aimms-ops): the offsite targets the backup",
             "# script pushes to. No secret here: the S3 keys are in the credentials files.",
             "# Edit inventory.yml and run fab install-backups again instead."]
    lines += [f"{k}={shell.quote(v)}" for k, v in settings(off).items()]
    return "\n".join(lines) + "\n"

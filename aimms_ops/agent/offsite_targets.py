"""The offsite targets as the host sees them: their settings, what each needs on this
host, rclone configured for it, and what it holds.

The settings are the file fab install-backups writes beside the backup script
(``backup-postgres.sh.offsite``: ``OFFSITE_TARGETS``, ``OFFSITE_RECIPIENTS`` and
``OFFSITE_<NAME>_<KEY>`` for each target; no secret in it). An S3 target's keys are in
a credentials file on the host (0600, owned by this user); an SSH target has its key
file and its known_hosts line. rclone is configured through its environment only
(``RCLONE_CONFIG_OFFSITE_<NAME>_*``): no key is ever on a command line or in a log.

A copy of NAME on a target is NAME.age (the backup encrypted with age) and, written
last, NAME.age.meta: the sha256 and size of the encrypted object and of the plaintext
backup. An object without its .meta is a push cut short (``partial``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from typing import Dict, List, NamedTuple, Optional, Tuple

from aimms_ops.agent.hosttools import hostname, user
from aimms_ops.core import shellconf

#: rclone's flags for every call: bounded waits, one retry, no progress output.
RCLONE_FLAGS = ("--contimeout", "15s", "--timeout", "120s", "--low-level-retries", "2",
                "--retries", "1", "--stats", "0", "-q")
#: The tools a push needs on the host.
TOOLS = ("rclone", "age")
META = ".age.meta"
VERIFIED = ".age.verified"


class OffsiteError(Exception):
    """What went wrong with a target, as one line (the RESULT line's reason)."""


class Settings:
    """The offsite settings file (``path``): its targets, recipients and per-target keys."""

    def __init__(self, path: str, values: Dict[str, str]) -> None:
        self.path = path
        self.values = values
        self.targets = values.get("OFFSITE_TARGETS", "").split()
        self.recipients = values.get("OFFSITE_RECIPIENTS", "").split()

    def get(self, target: str, key: str) -> str:
        """The setting ``OFFSITE_<TARGET>_<KEY>`` ('' when unset)."""
        return self.values.get("OFFSITE_%s_%s" % (target.upper(), key), "")

    def check_target(self, name: str) -> None:
        if name not in self.targets:
            raise OffsiteError("no offsite target named %s on %s (targets: %s; run fab "
                               "install-backups)" % (name, hostname(), " ".join(self.targets)))


def load(path: str) -> Settings:
    """The settings of ``path``; an OffsiteError naming what is wrong with it."""
    if not os.access(path, os.R_OK):
        raise OffsiteError("offsite settings %s are missing (run fab install-backups)" % path)
    try:
        values = shellconf.read(path)
    except (OSError, shellconf.ConfError) as e:
        why = getattr(e, "strerror", None) or e
        raise OffsiteError("cannot read %s: %s" % (path, why)) from None
    settings = Settings(path, values)
    if not settings.targets:
        raise OffsiteError("no offsite target in %s" % path)
    return settings


def check_tools() -> None:
    """rclone and age on the PATH, else an OffsiteError saying what to install."""
    missing = " ".join(t for t in TOOLS if shutil.which(t) is None)
    if missing:
        raise OffsiteError("%s not installed on %s (install it: apt-get install %s)"
                           % (missing, hostname(), missing))


def read_credentials(path: str) -> Tuple[str, str]:
    """(access key id, secret) from ``path``: 0600 or stricter, owned by this user;
    ``key = value`` lines, an ``aws_`` prefix and a ``[profile]`` header allowed."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise OffsiteError("credentials file %s not found on %s (create it, mode 0600: "
                           "access_key_id = ..., secret_access_key = ...)" % (path, hostname()))
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OffsiteError("credentials file %s is mode %o owned by %s (chmod 600 it, owned "
                           "by %s)" % (path, stat.S_IMODE(st.st_mode), owner, user()))
    found: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as e:
        raise OffsiteError("cannot read the credentials file %s: %s" % (path, e.strerror)) from None
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = "".join(key.split())
        if key.startswith("aws_"):
            key = key[4:]
        if key in ("access_key_id", "secret_access_key"):
            found[key] = value.strip()
    if not found.get("access_key_id") or not found.get("secret_access_key"):
        raise OffsiteError("credentials file %s has no access_key_id and secret_access_key"
                           % path)
    return found["access_key_id"], found["secret_access_key"]


def reason(stderr: bytes, default: str = "no message") -> str:
    """The most telling line rclone printed (its ERROR/Failed lines), cut to one line."""
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    telling = [ln for ln in lines if any(w in ln for w in ("ERROR", "Failed", "failed", "error"))]
    line = (telling or lines or [""])[-1]
    for cut in ("ERROR : ", "Failed to "):
        if cut in line:
            line = line.split(cut, 1)[1]
    line = line.replace("\r", "")[:300]
    return line or default


class Copy(NamedTuple):
    """A copy on a target, as its .meta describes it (``object_size`` '-' when the object
    is missing, ``verified_at`` '-' when never verified)."""

    name: str
    plaintext_sha256: str
    plaintext_size: str
    encrypted_sha256: str
    encrypted_size: str
    pushed_at: str
    object_size: str
    verified_at: str

    @property
    def whole(self) -> bool:
        """Its object is there, as large as its .meta says."""
        return self.object_size != "-" and self.object_size == self.encrypted_size


class Listing(NamedTuple):
    copies: Dict[str, Copy]
    partial: List[str]  # names whose object has no .meta



def parse_listing(sizes: Dict[str, str], metas: str) -> Listing:
    """The copies from the objects' sizes (name -> size) and the text of every .meta and
    .verified object, one after the other."""
    fields: Dict[str, Dict[str, str]] = {}
    verified: Dict[str, str] = {}
    current: Optional[Dict[str, str]] = None
    for line in metas.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "verified":
            name, _, at = value.partition(" ")
            verified[name] = at.split(" ", 1)[0]
        elif key == "name":
            current = fields.setdefault(value, {})
        elif current is not None:
            current[key] = value
    copies = {}
    for name, f in fields.items():
        copies[name] = Copy(name, f.get("plaintext_sha256", ""), f.get("plaintext_size", ""),
                            f.get("encrypted_sha256", ""), f.get("encrypted_size", ""),
                            f.get("pushed_at", ""), sizes.get(name + ".age", "-"),
                            verified.get(name, "-"))
    partial = sorted(o[:-4] for o in sizes if o.endswith(".age") and o[:-4] not in fields)
    return Listing(copies, partial)


class Target:
    """One target, ready for rclone: its settings checked, what it needs on this host
    read (the S3 keys) or written in ``work`` (the SSH known_hosts)."""

    def __init__(self, settings: Settings, name: str, work: str) -> None:
        self.name = name
        self.settings = settings
        self.type = settings.get(name, "TYPE")
        self.work = work
        self.remote = "offsite_%s" % name
        p = "RCLONE_CONFIG_%s_" % self.remote.upper()
        get = lambda key: settings.get(name, key)  # noqa: E731
        if self.type == "s3":
            key_id, secret = read_credentials(get("CREDENTIALS"))
            prefix = get("PREFIX")
            self.base = "%s:%s%s" % (self.remote, get("BUCKET"), "/" + prefix if prefix else "")
            conf = {"TYPE": "s3", "PROVIDER": "Other", "ENV_AUTH": "false",
                    "ENDPOINT": get("ENDPOINT"), "REGION": get("REGION"),
                    "ACCESS_KEY_ID": key_id, "SECRET_ACCESS_KEY": secret,
                    "FORCE_PATH_STYLE": "true", "NO_CHECK_BUCKET": "true", "CHUNK_SIZE": "16Mi"}
        elif self.type == "ssh":
            key_file = get("KEY_FILE")
            if not os.access(key_file, os.R_OK):
                raise OffsiteError("key file %s for %s not readable on %s (create it, or fix "
                                   "key_file)" % (key_file, name, hostname()))
            known = os.path.join(work, "known_hosts.%s" % name)
            with open(known, "w", encoding="utf-8") as fh:
                fh.write(get("KNOWN_HOSTS") + "\n")
            self.base = "%s:%s" % (self.remote, get("PATH"))
            conf = {"TYPE": "sftp", "HOST": get("HOST"), "USER": get("USER"),
                    "PORT": get("PORT"), "KEY_FILE": key_file, "KNOWN_HOSTS_FILE": known,
                    "SHELL_TYPE": "unix", "MD5SUM_COMMAND": "none", "SHA1SUM_COMMAND": "none"}
        else:
            raise OffsiteError("unknown type '%s' of target %s in %s (run fab install-backups)"
                               % (self.type, name, settings.path))
        env = dict(os.environ)
        # Debian's rclone 1.60 fails at once when AWS_CA_BUNDLE is set.
        env.pop("AWS_CA_BUNDLE", None)
        env["RCLONE_CONFIG"] = os.devnull
        env.update((p + k, v) for k, v in conf.items())
        self.env = env

    def path(self, obj: str) -> str:
        """rclone's path of the object ``obj`` in the target's folder."""
        return "%s/%s" % (self.base, obj)

    def argv(self, *args: str) -> List[str]:
        return ["rclone", *RCLONE_FLAGS, *args]

    def run(self, *args: str, data: Optional[bytes] = None) -> "subprocess.CompletedProcess[bytes]":
        """rclone ARGS, ``data`` on its stdin; stdout and stderr captured (small outputs)."""
        return subprocess.run(self.argv(*args), env=self.env, input=data,
                              stdin=None if data is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)

    def popen(self, *args: str, **kw: object) -> "subprocess.Popen[bytes]":
        return subprocess.Popen(self.argv(*args), env=self.env, **kw)  # type: ignore[call-overload]

    def delete(self, obj: str) -> bool:
        """Remove ``obj`` from the target (False when it could not: gone already, or not)."""
        return self.run("deletefile", self.path(obj)).returncode == 0

    def listing(self) -> Listing:
        """What the target holds; an OffsiteError when it cannot be listed."""
        res = self.run("lsf", "--files-only", "--format", "sp", "--separator", "\t", self.base)
        if res.returncode != 0:
            missing = b"directory not found" in res.stderr
            if missing and self.type == "ssh":
                return Listing({}, [])  # a folder not made yet: empty
            if missing:  # on S3 an empty prefix lists empty: not found is the bucket
                raise OffsiteError("bucket %s not found at %s (create it, or fix bucket)"
                                   % (self.settings.get(self.name, "BUCKET"),
                                      self.settings.get(self.name, "ENDPOINT")))
            raise OffsiteError("cannot list %s: %s" % (
                self.name, reason(res.stderr, "rclone status %d" % res.returncode)))
        sizes = {}
        for line in res.stdout.decode("utf-8", "replace").splitlines():
            size, sep, obj = line.partition("\t")
            if sep:
                sizes[obj] = size
        metas = ""
        if any(o.endswith(META) for o in sizes):
            res = self.run("cat", "--include", "*" + META, "--include", "*" + VERIFIED,
                           self.base)
            if res.returncode != 0:
                raise OffsiteError("cannot read the copies' metadata on %s: %s"
                                   % (self.name, reason(res.stderr)))
            metas = res.stdout.decode("utf-8", "replace")
        return parse_listing(sizes, metas)

"""Where a drill's backup comes from: its sources. A source fetches the newest copy onto
this host, verified, then restores it into a throwaway cluster; the drill
(``agent/drill.py``) times both, checks what the cluster holds and reports.

- ``LogicalOffsite``: the newest copy of a regular backup on an offsite target (its
  ``.meta`` says which): read with rclone (``agent/offsite_targets.py``'s target), its
  size and sha256 compared with the ``.meta``'s, decrypted with ``age -d`` and the drill's
  identity (a file on this host whose public key is one of the recipients), and the
  plaintext's sha256 compared with the ``.meta``'s;
- ``LogicalHost``: the newest regular backup in the backup dir, checked against its
  ``.sha256``.

Both restore with the deep verify's throwaway (``agent/trial.py``): one replay. A PITR
source would fetch nothing and restore from its repository to a point in time.
"""

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from typing import Any, List, NamedTuple, Optional

from aimms_ops.agent.backups import newest_regular
from aimms_ops.agent.hostfacts import sha256_file
from aimms_ops.agent.hosttools import hostname, last_line, user
from aimms_ops.agent.offsite_targets import (
    Copy,
    OffsiteError,
    Target,
    check_tools,
    load,
    reason,
)
from aimms_ops.agent.trial import Failed, Trial
from aimms_ops.core import retention, units
from aimms_ops.core.names import created_from_name

CHUNK = 1 << 20
#: The label on what a drill makes, and the prefix of its names.
LABEL = "org.aimms-ops.drill=1"
PREFIX = "aimms-ops-drill-"


class Fetched(NamedTuple):
    """A backup on this host, ready to restore: its path, name, size, the epoch
    seconds it was taken at (its name's stamp) and what was checked."""

    path: str
    name: str
    size: int
    created: float
    detail: str


class DrillTrial(Trial):
    """The deep verify's throwaway, named and labelled as the drill's."""

    prefix = PREFIX
    label = LABEL
    work_prefix = "aimms-drill."
    prod = ""  # the live container's id


class Source:
    """One source of a drill: ``kind`` (logical), ``name`` (a target, or host)."""

    kind = "logical"
    name = ""

    def describe(self) -> str:
        raise NotImplementedError

    def fetch(self, run: Any, work: str) -> Fetched:
        """The newest copy, verified, as a file under ``work``; Failed otherwise."""
        raise NotImplementedError

    #: the throwaway it restores into
    trial_class = DrillTrial

    def restore(self, run: Any, fetched: Fetched) -> DrillTrial:
        """The throwaway cluster with ``fetched`` restored in it, answering."""
        trial = self.trial_class(run, fetched.path, fetched.size)
        run.trial = trial
        prod, prod_name, image, dest = trial.production()
        trial.prod = prod
        trial.disk(prod)
        trial.start(prod, prod_name, image, dest)
        run.mark("start")
        self.replay(trial)
        return trial

    def replay(self, trial: DrillTrial) -> None:
        """What fills the started throwaway: the dump, replayed once."""
        trial.first_replay()


def _created(name: str) -> float:
    when = created_from_name(name)
    return when.timestamp() if when else 0.0


class LogicalHost(Source):
    """The newest regular backup in the backup dir."""

    name = "host"

    def __init__(self, backup_dir: str) -> None:
        self.backup_dir = backup_dir

    def describe(self) -> str:
        return "the newest backup in %s on %s" % (self.backup_dir, hostname())

    def fetch(self, run: Any, work: str) -> Fetched:
        if not os.path.isdir(self.backup_dir):
            raise Failed("fetch", "backup dir %s does not exist" % self.backup_dir)
        name = newest_regular(self.backup_dir)
        if not name:
            raise Failed("fetch", "there are no regular backups in %s" % self.backup_dir)
        path = os.path.join(self.backup_dir, name)
        size = os.stat(path).st_size
        digest = sha256_file(path)
        try:
            with open(path + ".sha256", encoding="utf-8", errors="replace") as fh:
                recorded = fh.readline().split(" ", 1)[0].strip()
        except OSError:
            recorded = ""
        if recorded != digest:
            raise Failed("fetch", "%s does not match its .sha256 (file %s…, recorded %s)"
                         % (name, digest[:16], recorded[:16] + "…" if recorded else "none"))
        return Fetched(path, name, size, _created(name),
                       "%s, %s, matches its .sha256" % (name, units.size(size)))


class LogicalOffsite(Source):
    """The newest copy on offsite target ``name``, decrypted with ``identity``."""

    def __init__(self, config: str, name: str, identity: str) -> None:
        self.config = config
        self.name = name
        self.identity = identity

    def describe(self) -> str:
        return "the newest copy on offsite target %s" % self.name

    def newest(self, target: Target) -> Copy:
        try:
            listing = target.listing()
        except OffsiteError as e:
            raise Failed("fetch", str(e)) from None
        regular = [c for c in listing.copies.values()
                   if retention.NAME_RE.search(c.name) and not retention.is_safety(c.name)]
        if not regular:
            raise Failed("fetch", "offsite target %s holds no copy of a regular backup "
                         "(run fab offsite-sync)" % self.name)
        # The newest by its name's stamp, whole or not: an incomplete newest copy fails.
        return max(regular, key=lambda c: (_created(c.name), c.name))

    def check_identity(self, recipients: List[str]) -> None:
        if not self.identity:
            raise Failed("identity", "no age identity on %s to decrypt the copies with (set "
                         "drill.identity in the inventory: a file on the host whose public "
                         "key is in offsite_recipients; or drill the host's newest backup "
                         "with --target=host)" % hostname())
        try:
            st = os.stat(self.identity)
        except OSError:
            raise Failed("identity", "age identity %s not found on %s (create it with "
                         "age-keygen, 0600, and add its public key to offsite_recipients)"
                         % (self.identity, hostname())) from None
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = str(st.st_uid)
            raise Failed("identity", "age identity %s is mode %o owned by %s (chmod 600 it, "
                         "owned by %s)" % (self.identity, stat.S_IMODE(st.st_mode), owner,
                                            user()))
        proc = subprocess.run(["age-keygen", "-y", self.identity], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, check=False)
        mine = proc.stdout.decode("ascii", "replace").split()
        if proc.returncode != 0 or not mine:
            raise Failed("identity", "%s is not an age identity: %s"
                         % (self.identity, last_line(proc.stderr.decode("utf-8", "replace"))))
        if recipients and not set(mine) & set(recipients):
            raise Failed("identity", "the age identity %s is for %s…, which is not one of "
                         "offsite_recipients: the copies are not encrypted to it (add it "
                         "there and push again, or use another identity)"
                         % (self.identity, mine[0][:16]))

    def fetch(self, run: Any, work: str) -> Fetched:
        try:
            settings = load(self.config)
            settings.check_target(self.name)
            check_tools()
            self.check_identity(settings.recipients)
            target = Target(settings, self.name, work)
        except OffsiteError as e:
            raise Failed("fetch", str(e)) from None
        copy = self.newest(target)
        where = "the newest copy on %s, %s," % (self.name, copy.name)
        run.event("drill", file=copy.name, size=int(copy.plaintext_size or 0))
        if not copy.whole:
            raise Failed("fetch", "%s is incomplete: %s of %s bytes (run fab offsite-sync to "
                         "push it again)" % (where, copy.object_size, copy.encrypted_size))
        need = int(copy.encrypted_size) + int(copy.plaintext_size)
        st = os.statvfs(work)
        if st.f_bavail * st.f_frsize < need + 64 * CHUNK:
            raise Failed("fetch", "%s needs %s in %s, which has %s free" % (
                where, units.size(need), work, units.size(st.f_bavail * st.f_frsize)))
        enc = os.path.join(work, copy.name + ".age")
        plain = os.path.join(work, copy.name)
        size, digest = self._read(run, target, copy, enc)
        if size != int(copy.encrypted_size) or digest != copy.encrypted_sha256:
            raise Failed("fetch", "%s is corrupt: %d bytes with sha256 %s…, its .meta records "
                         "%s bytes and %s… (push it again: fab offsite-sync)"
                         % (where, size, digest[:16], copy.encrypted_size,
                            copy.encrypted_sha256[:16]))
        size, digest = self._decrypt(enc, plain, where)
        os.unlink(enc)
        if size != int(copy.plaintext_size) or digest != copy.plaintext_sha256:
            raise Failed("fetch", "%s decrypts to %d bytes with sha256 %s…, its .meta records "
                         "%s bytes and %s…" % (where, size, digest[:16], copy.plaintext_size,
                                               copy.plaintext_sha256[:16]))
        return Fetched(plain, copy.name, size, _created(copy.name),
                       "%s from %s, %s: encrypted and decrypted sha256 match its .meta"
                       % (copy.name, self.name, units.size(size)))

    def _read(self, run: Any, target: Target, copy: Copy, dest: str) -> "tuple[int, str]":
        """``rclone cat`` of the copy's object into ``dest``: (bytes, sha256)."""
        h = hashlib.sha256()
        size = 0
        ticker = run.ticker("fetch", int(copy.encrypted_size), what=copy.name)
        with open(dest, "wb") as out, open(dest + ".err", "w+b") as err:
            proc = target.popen("cat", target.path(copy.name + ".age"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            run.procs = [proc]
            for block in iter(lambda: proc.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                h.update(block)
                out.write(block)
                size += len(block)
                ticker.tick(size)
            rc = proc.wait()
            run.procs = []
            ticker.end(size)
            if rc != 0:
                err.seek(0)
                raise Failed("fetch", "cannot read the newest copy on %s, %s: %s"
                             % (self.name, copy.name, reason(err.read())))
        return size, h.hexdigest()

    def _decrypt(self, src: str, dest: str, where: str) -> "tuple[int, str]":
        """``age -d -i IDENTITY src`` into ``dest``: (bytes, sha256)."""
        h = hashlib.sha256()
        size = 0
        with open(dest, "wb") as out, open(src + ".err", "w+b") as err:
            proc = subprocess.Popen(["age", "-d", "-i", self.identity, src],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err)
            for block in iter(lambda: proc.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                h.update(block)
                out.write(block)
                size += len(block)
            if proc.wait() != 0:
                err.seek(0)
                raise Failed("decrypt", "cannot decrypt %s with %s: %s" % (
                    where.rstrip(","), self.identity,
                    last_line(err.read().decode("utf-8", "replace")) or "age failed"))
        return size, h.hexdigest()


def pick(backup_dir: str, config: str, target: str, identity: str) -> Source:
    """The source ``target`` names: ``host``, ``pitr`` (the PITR repository), a target of
    the offsite settings ``config``,
    or (empty) the first target there, else the host (Failed when none fits)."""
    if target == "host":
        return LogicalHost(backup_dir)
    if target == "pitr":
        from aimms_ops.agent.drill_pitr import PitrSource

        return PitrSource()
    if not config or not os.path.isfile(config):
        if target:
            raise Failed("fetch", "no offsite settings on %s to find target %s in (run fab "
                         "install-backups)" % (hostname(), target))
        return LogicalHost(backup_dir)
    try:
        names = load(config).targets
    except OffsiteError as e:
        raise Failed("fetch", str(e)) from None
    return LogicalOffsite(config, target or names[0], identity)


def remove_tree(path: Optional[str]) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)

"""``fab install-backups``: the backup script, its settings, the dirs and the cron job.

Idempotent like an "ensure": the current state is read first, a plan of the
changes is computed (pure), and only what differs is written. Cron lines this
tool owns carry a ``# aimms-ops:NAME`` marker so they are found again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from . import shell
from .backups import BACKUP_SCRIPT, script_settings
from .compose import parse_facts
from .errors import OpsError
from .inventory import Host
from .remote import Remote

MARK = "# aimms-ops:"


@dataclass(frozen=True)
class Change:
    item: str
    action: str  # "create", "update", "chmod", "add", "replace"
    detail: str


@dataclass
class InstallPlan:
    host: Host
    script_text: str
    conf_text: str
    crontab_old: str
    crontab_new: str
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def conf_text(host: Host, env: dict[str, str]) -> str:
    """The settings file the installed script reads (shell assignments, quoted)."""
    lines = ["# Written by fab install-backups (aimms-ops); read by the backup script.",
             "# Edit inventory.yml and run fab install-backups again instead."]
    for key, value in script_settings(host).items():
        lines.append(f"{key}={shell.quote(value)}")
    # cron has a bare environment: give it the PATH and DOCKER_HOST of an SSH session.
    if env.get("PATH"):
        lines.append(f"export PATH={shell.quote(env['PATH'])}")
    if env.get("DOCKER_HOST"):
        lines.append(f"export DOCKER_HOST={shell.quote(env['DOCKER_HOST'])}")
    return "\n".join(lines) + "\n"


def cron_entries(host: Host) -> dict[str, str]:
    """The cron lines this tool owns on ``host``, by marker name."""
    cmd = shell.join([host.backup_script, "--config", host.config_file])
    log = shell.quote(host.log_file)
    return {"backup": f"{host.cron_schedule} {cmd} >>{log} 2>&1 {MARK}backup"}


def merge_crontab(current: str, entries: dict[str, str], script_path: str) -> str:
    """``current`` with this tool's lines replaced by ``entries`` (pure).

    Lines carrying one of our markers are replaced; an unmarked line that runs the
    same script (the hand-made job of the seed) is replaced too, so the backup is
    never scheduled twice. Every other line is kept as it is.
    """
    kept = []
    for line in current.splitlines():
        stripped = line.strip()
        if MARK in line:
            continue
        if stripped and not stripped.startswith("#") and _runs(stripped, script_path):
            continue
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, *entries.values()]) + "\n"


def _runs(cron_line: str, script_path: str) -> bool:
    fields = cron_line.split()
    if cron_line.startswith("@"):
        command = fields[1:]
    else:
        command = fields[5:]
    return bool(command) and command[0] == script_path


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan(remote: Remote) -> InstallPlan:
    """Read the host's state and compute what ``install-backups`` would change."""
    host = remote.host
    res = remote.run_script("install-state.sh", host.backup_script, host.config_file,
                            host.backup_dir, host.log_file)
    if not res.ok:
        raise OpsError(f"cannot read the install state on {remote.name}: "
                       f"{res.last_error_line()}")
    st = parse_facts(res.stdout)
    if st.get("crontab.available") != "1":
        raise OpsError(f"crontab is not installed on {remote.name}",
                       "install cron (cronie or cron) on the host")
    try:
        cron_old = base64.b64decode(st.get("crontab.b64", "")).decode()
    except (binascii.Error, UnicodeDecodeError):
        cron_old = ""
    env = {"PATH": st.get("env.PATH", ""), "DOCKER_HOST": st.get("env.DOCKER_HOST", "")}
    script = shell.script_text(BACKUP_SCRIPT)
    conf = conf_text(host, env)
    cron_new = merge_crontab(cron_old, cron_entries(host), host.backup_script)
    p = InstallPlan(host, script, conf, cron_old, cron_new)
    for item, path, text, mode in (("backup script", host.backup_script, script, "700"),
                                   ("settings", host.config_file, conf, "600")):
        key = "script" if item == "backup script" else "conf"
        have = st.get(f"{key}.sha256", "")
        if not have:
            p.changes.append(Change(item, "create", path))
        elif have != _sha(text):
            p.changes.append(Change(item, "update", f"{path} (the old one is kept as .bak)"
                                    if key == "script" else path))
        elif st.get(f"{key}.mode") != mode:
            p.changes.append(Change(item, "chmod", f"{path} to {mode}"))
    if st.get("dir.mode") != "700":
        action = "create" if not st.get("dir.mode") else "chmod"
        p.changes.append(Change("backup dir", action, f"{host.backup_dir} (0700)"))
    if st.get("log.mode") != "600":
        action = "create" if not st.get("log.mode") else "chmod"
        p.changes.append(Change("log", action, f"{host.log_file} (0600)"))
    if cron_new.strip() != cron_old.strip():
        for name, line in cron_entries(host).items():
            if line not in cron_old.splitlines():
                p.changes.append(Change(f"cron {name}", "add", line))
        for line in cron_old.splitlines():
            if line and line not in cron_new.splitlines():
                p.changes.append(Change("cron", "replace", f"removed: {line}"))
    return p


def apply(remote: Remote, p: InstallPlan) -> list[str]:
    """Carry out ``p``; returns notes (such as where an old script was kept)."""
    host = p.host
    notes: list[str] = []
    items = {c.item for c in p.changes}
    res = remote.run_script("ensure-dirs.sh", host.backup_dir, host.log_file)
    if not res.ok:
        raise OpsError(f"cannot create {host.backup_dir} on {remote.name}: "
                       f"{res.last_error_line()}")
    for item, path, text, mode, keep in (
            ("backup script", host.backup_script, p.script_text, "700", "1"),
            ("settings", host.config_file, p.conf_text, "600", "0")):
        if item not in items:
            continue
        res = remote.run_script("install-file.sh", path, mode, keep, stdin=text.encode())
        if not res.ok:
            raise OpsError(f"cannot write {path} on {remote.name}: {res.last_error_line()}")
        notes += [f"previous script kept as {line.split('=', 1)[1]}"
                  for line in res.stdout.splitlines() if line.startswith("kept=")]
    if p.crontab_new.strip() != p.crontab_old.strip():
        res = remote.run(["crontab", "-"], stdin=p.crontab_new.encode(), what="crontab")
        if not res.ok:
            raise OpsError(f"cannot install the crontab on {remote.name}: "
                           f"{res.last_error_line()}")
    return notes

"""``fab install-backups``: the backup script, its settings, the dirs and the cron jobs.

Idempotent like an "ensure": the current state is read first, a plan of the
changes is computed (pure), and only what differs is written. Cron lines this
tool owns carry a ``# aimms-ops:NAME`` marker so they are found again.

With ``verify_schedule`` in the inventory it also installs ``verify-backup.sh``
next to the backup script and a cron line running it (a weekly trial restore); with
``drill.schedule``, ``drill.sh`` and its cron line (the recovery drill).
An install record beside the script keeps which postgres container the backups
were installed for and since when the verify is scheduled (``fab doctor`` and
``fab status`` read it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aimms_ops.backup.settings import script_settings
from aimms_ops.core import pitr
from aimms_ops.core.errors import OpsError
from aimms_ops.core.layout import BACKUP_SCRIPT, DRILL_SCRIPT, VERIFY_SCRIPT
from aimms_ops.host import bundle, events, shell
from aimms_ops.host.remote import Remote
from aimms_ops.inventory.connected import HostRemote
from aimms_ops.inventory.model import Host

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
    verify_text: str | None = None
    drill_text: str | None = None
    record_text: str | None = None
    compressor: dict[str, str] = field(default_factory=dict)
    offsite_text: str | None = None
    #: what the host lacks for this inventory, one line each (the backups still install)
    warnings: list[str] = field(default_factory=list)

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


def verify_args(host: Host) -> list[str]:
    """The deep verify script's arguments besides its settings: the volumes to protect."""
    args: list[str] = []
    for vol in host.volumes.names():
        args += ["--protect", vol]
    return args


def cron_entries(host: Host) -> dict[str, str]:
    """The cron lines this tool owns on ``host``, by marker name."""
    cmd = shell.join([host.backup_script, "--config", host.layout.config_file])
    log = shell.quote(host.log_file)
    entries = {"backup": f"{host.cron_schedule} {cmd} >>{log} 2>&1 {MARK}backup"}
    if host.verify_schedule:
        vcmd = shell.join([host.layout.verify_script, "--config", host.layout.config_file,
                           "--file", "latest", *verify_args(host)])
        entries["verify"] = f"{host.verify_schedule} {vcmd} >>{log} 2>&1 {MARK}verify"
    if host.pitr:
        for kind, schedule in (("full", host.pitr.full_schedule),
                               ("diff", host.pitr.diff_schedule)):
            pcmd = shell.join(["python3", host.layout.program, "pitr-backup", "--type", kind,
                               "--config", host.layout.config_file])
            if host.pitr.offsite:  # then the offsite copy follows the repository's expire
                pcmd += " && " + shell.join(pitr_push_args(host, "--sync"))
            entries[f"pitr-{kind}"] = f"{schedule} {pcmd} >>{log} 2>&1 {MARK}pitr-{kind}"
        if host.pitr.offsite:
            pcmd = shell.join(pitr_push_args(host))
            entries["pitr-push"] = f"* * * * * {pcmd} >>{log} 2>&1 {MARK}pitr-push"
    if host.drill and host.drill.schedule:
        d = host.drill
        dcmd = shell.join([host.layout.drill_script, "--config", host.layout.config_file,
                           *(["--target", d.target] if d.target else []),
                           *(["--identity", d.identity] if d.identity else []),
                           *verify_args(host)])
        entries["drill"] = f"{d.schedule} {dcmd} >>{log} 2>&1 {MARK}drill"
        if host.pitr:  # the PITR repository too, to its newest archived WAL
            pcmd = shell.join([host.layout.drill_script, "--config", host.layout.config_file,
                               "--target", "pitr", *verify_args(host)])
            entries["drill-pitr"] = f"{d.schedule} {pcmd} >>{log} 2>&1 {MARK}drill-pitr"
    return entries


def pitr_push_args(host: Host, *extra: str) -> list[str]:
    """``python3 PROGRAM pitr-push ...`` of ``host`` (its PITR repository to its target)."""
    assert host.pitr is not None and host.pitr.offsite
    return ["python3", host.layout.program, *pitr.push_args(
        host.layout.config_file, host.pitr.offsite, host.pitr.repo, *extra)]


def parse_record(text: str) -> dict[str, str]:
    """The install record's ``key=value`` lines (comments skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def record_text(values: dict[str, str]) -> str:
    """The install record file for ``values`` (pure)."""
    lines = ["# Written by fab install-backups (aimms-ops): what the backups were installed",
             "# for. fab doctor compares the postgres container with it."]
    lines += [f"{k}={v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def plan_record(old: dict[str, str], container: dict[str, str], host: Host,
                now: datetime) -> dict[str, str] | None:
    """The new install record, or None when the old one still holds (pure).

    It changes when the postgres container differs from the recorded one, or the
    verify schedule differs; ``verify_since`` is kept while the schedule is the same.
    """
    schedule = host.verify_schedule or ""
    same_container = (not container.get("id")
                      or old.get("container_id") == container.get("id"))
    if old and same_container and old.get("verify_schedule", "") == schedule:
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    keep_since = old.get("verify_schedule", "") == schedule and old.get("verify_since")
    return {
        "recorded_at": stamp,
        "container_id": container.get("id") or old.get("container_id", ""),
        "container_name": container.get("name") or old.get("container_name", ""),
        "container_image": container.get("image") or old.get("container_image", ""),
        "verify_schedule": schedule,
        "verify_since": (keep_since or stamp) if schedule else "",
    }


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


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


def plan(remote: HostRemote) -> InstallPlan:
    """Read the host's state and compute what ``install-backups`` would change."""
    host = remote.host
    extra = ["--file", "program", host.layout.program]
    if host.offsite:
        extra += ["--file", "offsite", host.layout.offsite_config]
    if host.drill and host.drill.schedule:
        extra += ["--file", "drill", host.layout.drill_script]
    st = remote.program_facts("install-state", *extra, host.backup_script,
                              host.layout.config_file, host.backup_dir, host.log_file,
                              host.layout.verify_script, host.layout.install_record,
                              host.compose.project, host.compose.postgres_service)
    if st.get("crontab.available") != "1":
        raise OpsError(f"crontab is not installed on {remote.name}",
                       "install cron (cronie or cron) on the host")
    cron_old = events.text_of(st, "crontab")
    env = {"PATH": st.get("env.PATH", ""), "DOCKER_HOST": st.get("env.DOCKER_HOST", "")}
    script = shell.script_text(BACKUP_SCRIPT)
    conf = conf_text(host, env)
    cron_new = merge_crontab(cron_old, cron_entries(host), host.backup_script)
    p = InstallPlan(host, script, conf, cron_old, cron_new,
                    compressor={k: v for k, v in st.items() if k.startswith("compressor.")})
    if host.verify_schedule:
        p.verify_text = shell.script_text(VERIFY_SCRIPT)
    if host.drill and host.drill.schedule:
        p.drill_text = shell.script_text(DRILL_SCRIPT)
    if host.offsite:
        from aimms_ops.inventory import offsite as offsite_config

        p.offsite_text = offsite_config.conf_text(host.offsite)
        missing = st.get("offsite.missing", "")
        if missing:
            p.warnings.append(f"{missing} not installed on {remote.name}: the offsite copies "
                              f"will fail until it is (apt-get install {missing})")
    for item, key, path, text, mode in _files(p):
        have = st.get(f"{key}.sha256", "")
        if not have:
            p.changes.append(Change(item, "create", path))
        elif have != _sha(text):
            p.changes.append(Change(item, "update", f"{path} (the old one is kept as .bak)"
                                    if key != "conf" else path))
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
    old_record = parse_record(events.text_of(st, "record"))
    container = {"id": st.get("container.id", ""), "name": st.get("container.name", ""),
                 "image": st.get("container.image", "")}
    new_record = plan_record(old_record, container, host, datetime.now(UTC))
    if new_record is not None:
        p.record_text = record_text(new_record)
        what = (f"container {new_record['container_name'] or '?'} "
                f"({new_record['container_id'][:12] or 'none running'})")
        if old_record.get("container_id") not in ("", None, new_record["container_id"]):
            what += f", was {old_record.get('container_name', '?')} " \
                    f"({old_record['container_id'][:12]})"
        p.changes.append(Change("install record", "update" if old_record else "create",
                                f"{host.layout.install_record}: {what}"))
    return p


def _files(p: InstallPlan) -> list[tuple[str, str, str, str | bytes, str]]:
    """(item, state key, path, text, mode) of the files the plan installs."""
    host = p.host
    files: list[tuple[str, str, str, str | bytes, str]] = [
        ("backup script", "script", host.backup_script, p.script_text, "700"),
        ("host program", "program", host.layout.program, bundle.program(), "600"),
             ("settings", "conf", host.layout.config_file, p.conf_text, "600")]
    if p.verify_text is not None:
        files.append(("verify script", "verify", host.layout.verify_script, p.verify_text,
                      "700"))
    if p.drill_text is not None:
        files.append(("drill script", "drill", host.layout.drill_script, p.drill_text, "700"))
    if p.offsite_text is not None:
        files.append(("offsite settings", "offsite", f"{host.backup_script}.offsite",
                      p.offsite_text, "600"))
    return files


def apply(remote: Remote, p: InstallPlan) -> list[str]:
    """Carry out ``p``; returns notes (such as where an old script was kept)."""
    host = p.host
    notes: list[str] = []
    items = {c.item for c in p.changes}
    res = remote.run_program("ensure-dirs", host.backup_dir, host.log_file)
    if not res.ok:
        raise OpsError(f"cannot create {host.backup_dir} on {remote.name}: "
                       f"{res.last_error_line()}")
    files = [(item, path, text, mode, "0" if key in ("conf", "offsite", "program") else "1")
             for item, key, path, text, mode in _files(p)]
    if p.record_text is not None:
        files.append(("install record", host.layout.install_record, p.record_text, "600", "0"))
    for item, path, text, mode, keep in files:
        if item not in items:
            continue
        data = text if isinstance(text, bytes) else text.encode()
        res = remote.run_program("install-file", path, mode, keep, stdin=data)
        if not res.ok:
            raise OpsError(f"cannot write {path} on {remote.name}: {res.last_error_line()}")
        kept = (events.facts_of(events.parse(res.stdout), "install-file") or {}).get("kept")
        if kept:
            notes.append(f"previous script kept as {kept}")
    if p.crontab_new.strip() != p.crontab_old.strip():
        res = remote.run(["crontab", "-"], what="crontab",
                         stdin=p.crontab_new.encode("utf-8", "surrogateescape"))
        if not res.ok:
            raise OpsError(f"cannot install the crontab on {remote.name}: "
                           f"{res.last_error_line()}")
    return notes


def remove_cron(remote: Remote, names: tuple[str, ...]) -> None:
    """Remove this tool's cron lines called ``names`` (the other lines are kept)."""
    res = remote.run(["crontab", "-l"], what="crontab -l")
    if not res.ok:
        return
    marks = tuple(f"{MARK}{n}" for n in names)
    kept = [ln for ln in res.stdout.splitlines() if not ln.rstrip().endswith(marks)]
    if len(kept) == len(res.stdout.splitlines()):
        return
    res = remote.run(["crontab", "-"], stdin=("\n".join(kept) + "\n").encode(), what="crontab")
    if not res.ok:
        raise OpsError(f"cannot update the crontab on {remote.name}: {res.last_error_line()}")

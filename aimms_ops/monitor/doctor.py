"""``fab doctor``: the seed's troubleshooting list as checks, each with its fix.

"Container name changed", "insufficient disk space", "PostgreSQL container not
running", "check the log": each becomes a check computed from the same facts as
``fab status`` (one SSH round trip), with what was seen and what to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aimms_ops.backup.install import conf_text
from aimms_ops.core import HOST_PYTHON
from aimms_ops.core.checks import Check, State, worst
from aimms_ops.core.layout import BACKUP_SCRIPT, VERIFY_SCRIPT
from aimms_ops.host import events, shell
from aimms_ops.host.remote import PYTHON3_FIX
from aimms_ops.inventory.connected import HostRemote, start_command
from aimms_ops.inventory.model import Host
from aimms_ops.monitor.compressor import compressor_check
from aimms_ops.monitor.disk import check_disk, disk_from
from aimms_ops.monitor.health import connection_checks
from aimms_ops.monitor.hostfacts import HostFacts, NoHostProgram, gather, python_problem
from aimms_ops.monitor.lastverify import check_verify
from aimms_ops.monitor.runlog import last_run
from aimms_ops.monitor.status import check_cron, check_last_run


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_container(hf: HostFacts, host: Host) -> Check:
    """The postgres container of the compose service: there and running."""
    f = hf.facts
    service = host.compose.postgres_service
    start = start_command(f, host)
    cid = f.get("container.id", "")
    if f.get("docker.ok") != "1":
        return Check("postgres container", State.UNKNOWN, "docker is not reachable",
                     "see the docker check above")
    if not cid:
        return Check("postgres container", State.CRITICAL,
                     f"no container for service {service!r} of compose project "
                     f"{host.compose.project!r}", f"start the stack: {start}")
    name = f.get("container.name") or cid[:12]
    state = f.get("container.state", "unknown")
    if state != "running":
        since = hf.extra.get("container.finished_at", "")
        code = hf.extra.get("container.exit_code", "")
        detail = f"{name} is {state}"
        if code:
            detail += f" (exit code {code})"
        if since and not since.startswith("0001-"):
            detail += f" since {since[:19].replace('T', ' ')} UTC"
        if hf.extra.get("container.error"):
            detail += f": {hf.extra['container.error']}"
        return Check("postgres container", State.CRITICAL, detail,
                     f"start it: {start}; if it stops again, read its log below")
    return Check("postgres container", State.OK,
                 f"{name} ({cid[:12]}) running since "
                 f"{f.get('container.started_at', '?')[:19].replace('T', ' ')} UTC")


def check_container_changed(hf: HostFacts, host: Host) -> Check:
    """The container behind the compose service against the one recorded at install."""
    name = "container since install"
    record = hf.record
    cid = hf.facts.get("container.id", "")
    if not record:
        return Check(name, State.WARNING, f"no install record ({host.layout.install_record})",
                     "run: fab install-backups")
    was_id = record.get("container_id", "")
    was = f"{record.get('container_name') or '?'} ({was_id[:12] or 'none'})"
    if not cid:
        return Check(name, State.UNKNOWN, f"no container now; installed for {was}")
    now = f"{hf.facts.get('container.name') or '?'} ({cid[:12]})"
    if was_id == cid:
        return Check(name, State.OK, f"same container as at install: {now}")
    return Check(name, State.WARNING,
                 f"the container changed since install: was {was}, now {now}",
                 "backups find the container by its compose labels, so they still work; "
                 "if the change was intended, record it: fab install-backups")


def check_installed_file(item: str, have: str, mode: str, want_text: str, path: str,
                         missing: State, want_mode: str) -> Check:
    """An installed file against the package's version (sha256) and its mode."""
    if not have:
        return Check(item, missing, f"{path} is not installed", "run: fab install-backups")
    want = _sha(want_text)
    if have != want:
        return Check(item, State.WARNING,
                     f"{path} differs from this version of aimms-ops (sha256 {have[:12]}…, "
                     f"package {want[:12]}…)",
                     "run: fab install-backups (the old one is kept as .bak)")
    if mode and mode != want_mode:
        return Check(item, State.WARNING, f"{path} has mode {mode}, not {want_mode}",
                     "run: fab install-backups")
    return Check(item, State.OK, f"{path} is this version's (sha256 {have[:12]}…)")


def check_files(hf: HostFacts, host: Host) -> list[Check]:
    x = hf.extra
    rows = [check_installed_file("backup script", x.get("script.sha256", ""),
                                 x.get("script.mode", ""), shell.script_text(BACKUP_SCRIPT),
                                 host.backup_script, State.CRITICAL, "700")]
    env = {"PATH": x.get("env.PATH", ""), "DOCKER_HOST": x.get("env.DOCKER_HOST", "")}
    conf = check_installed_file("settings", x.get("conf.sha256", ""), x.get("conf.mode", ""),
                                conf_text(host, env), host.layout.config_file, State.CRITICAL,
                                "600")
    if conf.state is State.WARNING and "differs" in conf.detail:
        conf = Check("settings", State.WARNING,
                     f"{host.layout.config_file} does not match the inventory",
                     "run: fab install-backups")
    rows.append(conf)
    if host.verify_schedule:
        rows.append(check_installed_file("verify script", x.get("verify.sha256", ""),
                                         x.get("verify.mode", ""),
                                         shell.script_text(VERIFY_SCRIPT),
                                         host.layout.verify_script, State.WARNING, "700"))
    return rows


def check_cron_daemon(hf: HostFacts) -> Check | None:
    seen = hf.extra.get("cron.daemon")
    if seen is None:
        return None
    if seen == "1":
        return Check("cron daemon", State.OK, "running")
    return Check("cron daemon", State.WARNING,
                 "no cron daemon (cron or crond) is running: the cron entries never run",
                 "start cron on the host (systemctl enable --now cron, or crond)")


def check_python(hf: HostFacts) -> Check | None:
    """python3 on the host: aimms-ops' host program runs on it (backups, retention, pins,
    restores, deep verifies)."""
    seen = hf.extra.get("python3.version")
    if seen is None:
        return None
    why = python_problem(seen)
    if why:
        return python_missing(why)
    return Check("python3", State.OK, f"python3 {seen} (aimms-ops' host program runs on it)")


def python_missing(why: str) -> Check:
    """The python3 check of a host where the host program cannot run (``why``: "no
    python3", "python3 X.Y is too old")."""
    need = ".".join(str(n) for n in HOST_PYTHON)
    if why.endswith("too old"):
        detail = f"{why.removesuffix(' is too old')} on the host is older than {need}, " \
                 "which aimms-ops' host program needs"
    else:
        detail = "no python3 on the host: aimms-ops' host program (its facts, backups, " \
                 "restores, verifies) cannot run there"
    return Check("python3", State.CRITICAL, detail, PYTHON3_FIX)


def run_lines(log_tail: list[str], kind: str, pid: int) -> list[str]:
    """The lines of one run (``backup[PID]``) among the last lines of the log."""
    tag = f" {kind}[{pid}] "
    return [ln for ln in log_tail if tag in ln]


@dataclass
class DoctorReport:
    host: str
    checks: list[Check]
    container_log: list[str] = field(default_factory=list)
    last_run_log: list[str] = field(default_factory=list)

    @property
    def state(self) -> State:
        return worst(self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "state": self.state.name, "exit_code": int(self.state),
                "checks": [c.as_dict() for c in self.checks],
                "container_log": self.container_log, "last_run_log": self.last_run_log}


def diagnose(hf: HostFacts, host: Host) -> DoctorReport:
    """The troubleshooting checks of ``host`` from its facts (pure)."""
    stack = {r.name: r for r in connection_checks(hf.facts, host, fingerprint=hf.fingerprint)}
    runs = hf.runs
    checks = [stack["docker"], check_container(hf, host)]
    if "postgres accepting connections" in stack:
        checks.append(stack["postgres accepting connections"])
    checks.append(check_container_changed(hf, host))
    checks.append(check_disk(disk_from(hf), hf.backups, host.backup_dir))
    checks += check_files(hf, host)
    checks += check_cron(hf.crontab, host)
    daemon = check_cron_daemon(hf)
    if daemon is not None:
        checks.append(daemon)
    python = check_python(hf)
    if python is not None:
        checks.append(python)
    compressor = compressor_check(hf.extra, host.compression)
    if compressor is not None:
        checks.append(compressor)
    checks.append(check_last_run(runs, stack=(hf.facts, host)))
    verify = check_verify(runs, host, hf.now, hf.record, hf.backups)
    if verify is not None:
        checks.append(verify)
    run = last_run(runs, "backup")
    lines = run_lines(hf.log_tail, "backup", run.pid) if run and not run.ok else []
    return DoctorReport(host.name, checks, hf.container_log, lines)


def send_test_ping(remote: HostRemote) -> list[Check]:
    """``fab doctor --ping``: a test ping from the host to each configured monitor URL."""
    ping = remote.host.ping
    if ping is None:
        return [Check("ping", State.WARNING, "no ping configured in the inventory",
                      "add ping: {url: ..., kind: healthchecks|uptime-kuma} to the host")]
    checks = []
    for job, url in (("backup", ping.url), ("verify", ping.verify_url)):
        if not url:
            continue
        res = remote.run_program("ping-test", ping.kind, "-", ping.timeout,
                                 stdin=f"{url}\n".encode())
        facts = events.facts_of(events.parse(res.stdout), "ping-test") or {}
        secs = events.text_of(facts, "seconds") or "?"
        why = events.text_of(facts, "error", shown=True) or res.last_error_line()
        if facts.get("ok") == "1":
            checks.append(Check(f"test ping ({job})", State.OK,
                                f"{ping.kind} answered in {secs} s"))
        else:
            checks.append(Check(f"test ping ({job})", State.CRITICAL,
                                f"{ping.kind} ping failed after {secs} s: "
                                f"{why}",
                                "check the URL, and that the host reaches it (proxy, "
                                "firewall, DNS); curl must be installed on the host"))
    return checks


def doctor(remote: HostRemote) -> DoctorReport:
    """Gather the facts of the host (one SSH round trip) and diagnose them; on a host
    where python3 cannot run aimms-ops' host program, that alone."""
    try:
        hf = gather(remote)
    except NoHostProgram as e:
        return DoctorReport(remote.host.name, [python_missing(e.detail)], [], [])
    return diagnose(hf, remote.host)

"""PITR on the host: its facts, its scheduled backups, turning it on and off
(``pitr-facts``, ``pitr-backup``, ``pitr-enable``, ``pitr-disable``); the restore to a
moment is ``agent/pitr_restore.py``. The shared facts are ``core/pitr.py``.

pgBackRest runs in the postgres container (``docker exec -u postgres C pgbackrest ...``),
with the options the compose override gives the container as ``PGBACKREST_*``.
"""

import argparse
import json
import os
import secrets
import shlex
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

from aimms_ops.agent import cluster, waiting
from aimms_ops.agent.hosttools import docker, last_line
from aimms_ops.agent.job import Job, JobFailed, run_job
from aimms_ops.agent.jobsettings import USAGE_STATUS, UsageError, read_settings, require
from aimms_ops.core import events, pitr
from aimms_ops.core.lock import LOCK_FILES

#: psql's view of archiving: the settings, pg_stat_archiver and the oldest segment
#: waiting to be archived (epoch seconds; empty when none).
ARCHIVER_SQL = (
    "SELECT current_setting('archive_mode'), current_setting('archive_command'), "
    "coalesce(extract(epoch FROM a.last_archived_time)::text, ''), "
    "coalesce(a.last_archived_wal, ''), "
    "coalesce(extract(epoch FROM a.last_failed_time)::text, ''), "
    "coalesce(a.last_failed_wal, ''), a.failed_count, a.archived_count, "
    "extract(epoch FROM now()), "
    "coalesce((SELECT extract(epoch FROM now() - min(modification))::int::text "
    "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), ''), "
    "pg_walfile_name(pg_current_wal_lsn()) "
    "FROM pg_stat_archiver a")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("pitr-facts", help="PITR's state: archiving, the repository's window")
    for name in ("project", "service", "superuser"):
        p.add_argument(name)
    p.add_argument("--backup-dir", default="", help="where the offsite push keeps its state")
    p.set_defaults(run=facts_command)
    p = sub.add_parser("pitr-backup", help="a pgBackRest backup (full, diff or incr), "
                       "under the backup's locks, logged and pinged like it")
    p.add_argument("--type", choices=("full", "diff", "incr"), default="diff")
    p.add_argument("--config", required=True, help="the backup script's settings file")
    p.add_argument("--report", action="store_true")
    p.add_argument("--echo", action="store_true")
    p.set_defaults(run=backup_command)
    p = sub.add_parser("pitr-enable", help="turn PITR on (fab install-backups shows the plan)")
    p.add_argument("--disable", action="store_true", help="turn it off instead")
    for name in ("--project", "--service", "--superuser", "--compose", "--project-dir",
                 "--compose-file", "--repo", "--image", "--base-image", "--retention-full",
                 "--log-file"):
        p.add_argument(name, default="")
    p.add_argument("--report", action="store_true")
    p.set_defaults(run=enable_command)


# ------------------------------------------------------------------ small tools

def postgres_container(project: str, service: str) -> str:
    cid = cluster.container(project, service)
    if not cid:
        raise JobFailed("no running %s container in the compose project %s (start the "
                        "stack)" % (service, project))
    return cid


def pgbackrest(cid: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """``pgbackrest ARGS`` as postgres in the container (its options: the container's
    PGBACKREST_* variables)."""
    return subprocess.run(["docker", "exec", "-u", "postgres", cid, "pgbackrest", *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          errors="replace")


def pgbackrest_error(run: "subprocess.CompletedProcess[str]") -> str:
    """pgBackRest's error as one line: its ERROR line and the lines under it that are not
    hints (``ERROR: [029]: unable to load info file ...: FormatError: ...``)."""
    text = run.stderr or run.stdout
    got: List[str] = []
    for line in text.splitlines():
        if line.startswith("ERROR:") and not got:
            got.append(line.strip())
        elif got and line.startswith(" ") and not line.strip().startswith("HINT:"):
            got.append(line.strip())
        elif got:
            break
    return " ".join(got) if got else (last_line(text) or "exit %d" % run.returncode)


def _num(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def gather(project: str, service: str, superuser: str) -> Dict[str, Any]:
    """Everything ``fab status`` and ``fab info`` judge PITR by (core.pitr.judge)."""
    from aimms_ops.agent.facts import compose_cmd

    out: Dict[str, Any] = {"container": cluster.container(project, service),
                           "compose": " ".join(compose_cmd())}
    cid = out["container"]
    if not cid:
        return out
    out["image"] = docker("inspect", "-f", "{{.Config.Image}}", cid)[1].strip()
    out["pgbackrest"] = docker("exec", cid, "pgbackrest", "version")[0] == 0
    try:
        row = cluster.Cluster(cid, superuser).rows(ARCHIVER_SQL)[0]
    except (cluster.ClusterError, IndexError) as e:
        out["error"] = "cannot read pg_stat_archiver: %s" % e
        return out
    keys = ("archive_mode", "archive_command", "last_archived_time", "last_archived_wal",
            "last_failed_time", "last_failed_wal", "failed_count", "archived_count", "now",
            "oldest_ready_age", "current_wal")
    if len(row) != len(keys):
        out["error"] = "pg_stat_archiver: %d fields, not %d" % (len(row), len(keys))
        return out
    got: Dict[str, Any] = {k: row[i] for i, k in enumerate(keys)}
    for k in ("last_archived_time", "last_failed_time", "now", "oldest_ready_age"):
        got[k] = _num(got[k])
    for k in ("failed_count", "archived_count"):
        got[k] = int(got[k])
    out.update(got)
    if out["pgbackrest"]:
        info = pgbackrest(cid, "info", "--output=json")
        if info.returncode == 0:
            try:
                out["window"] = pitr.window(json.loads(info.stdout))
            except ValueError:
                out["error"] = "pgbackrest info: not JSON"
        else:
            out["error"] = "pgbackrest info: %s" % pgbackrest_error(info)
    return out


def restore_into(volume: str, image: str, env_file: str, repo: str, pgdata: str,
                 *target: str) -> str:
    """``pgbackrest restore TARGET`` from the repository folder ``repo`` into the new
    volume ``volume`` (mounted at ``pgdata``), in throwaway containers of ``image``: ''
    when done, else which step failed and why (one line)."""
    for what, args in (
            ("the new volume's owner", ("run", "--rm", "--network", "none", "--user", "0:0",
                                        "--entrypoint", "sh", "-v", "%s:/d" % volume, image,
                                        "-c", "chown postgres: /d && chmod 700 /d")),
            ("pgbackrest restore", ("run", "--rm", "--network", "none", "--user", "postgres",
                                    "--env-file", env_file, "-v", "%s:%s" % (volume, pgdata),
                                    "-v", "%s:%s:ro" % (repo, pitr.REPO_IN_CONTAINER),
                                    "--entrypoint", "pgbackrest", image, "restore",
                                    "--pg1-path", pgdata, *target))):
        rc, out, err = docker(*args)
        if rc != 0:
            return "%s failed: %s" % (what, last_line(err or out) or "exit %d" % rc)
    return ""


def facts_command(args: argparse.Namespace) -> int:
    found = gather(args.project, args.service, args.superuser)
    if args.backup_dir:
        from aimms_ops.agent.pitr_push import read_state

        found["push"] = read_state(args.backup_dir)
    print(events.line("pitr", **found))
    return 0


# ------------------------------------------------------------------ the scheduled backup

def job_settings(config: str, command: str) -> Optional[Dict[str, str]]:
    """The settings file ``config`` of a PITR job; None (said on stderr) when it is bad."""
    try:
        s, _extra = read_settings(["--config", config], "", {})
        require(s, "the settings file: fab install-backups writes it")
    except UsageError as e:
        os.write(2, ("%s: %s\n" % (command, e)).encode())
        return None
    return s


def backup_command(args: argparse.Namespace) -> int:
    s = job_settings(args.config, "pitr-backup")
    if s is None:
        return USAGE_STATUS
    job = Job("pitr-backup", s["LOG_FILE"], echo=args.echo, report=args.report)
    job.ping_url, job.ping_kind = s.get("PING_URL", ""), s["PING_KIND"]
    job.ping_timeout = s["PING_TIMEOUT"]
    return run_job(job, lambda: _backup(job, s, args.type))


def _backup(job: Job, s: Dict[str, str], kind: str) -> int:
    d, wait = s["BACKUP_DIR"], int(s["LOCK_TIMEOUT"])
    job.log("START pitr backup (%s)" % kind)
    job.ping("start")
    job.lock(os.path.join(d, LOCK_FILES["cluster"]), "pitr backup",
             "a restore or rebuild of the cluster", wait, shared=True)
    job.lock(os.path.join(d, LOCK_FILES["backup"]), "pitr backup",
             "another backup or retention run", wait)
    cid = postgres_container(s["COMPOSE_PROJECT"], s["COMPOSE_SERVICE"])
    started = time.time()
    run = pgbackrest(cid, "backup", "--type=%s" % kind)
    if run.returncode != 0:
        raise JobFailed("pgbackrest backup --type=%s: %s" % (kind, pgbackrest_error(run)))
    info = pgbackrest(cid, "info", "--output=json")
    newest: Dict[str, Any] = {}
    try:
        win = pitr.window(json.loads(info.stdout))
        newest = win["backups"][-1] if win["backups"] else {}
    except ValueError:
        win = {}
    seconds = time.time() - started
    job.log("RESULT ok: pitr %s backup %s, %s bytes in %.1fs" % (
        kind, newest.get("label", "?"), newest.get("size"), seconds))
    job.event("pitr-result", type=kind, label=newest.get("label"), size=newest.get("size"),
              repo_size=newest.get("repo_size"), seconds=seconds,
              oldest=win.get("oldest") if win else None)
    job.ping_end("success", "pitr %s backup %s" % (kind, newest.get("label", "")))
    return 0


# ------------------------------------------------------------------ on and off

def _step(report: bool, name: str, detail: str = "") -> None:
    if report:
        print(events.line("step", name=name, detail=detail), flush=True)


def _compose(a: argparse.Namespace, files: List[str], *args: str) -> None:
    from aimms_ops.agent.facts import compose_cmd

    cmd = shlex.split(a.compose) if a.compose else compose_cmd()
    cmd += [w for f in files for w in ("-f", f)] + ["-p", a.project] + list(args)
    proc = subprocess.run(cmd, cwd=a.project_dir, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, errors="replace")
    if proc.returncode != 0:
        raise JobFailed("%s: %s" % (" ".join(cmd), last_line(proc.stdout)))


def _sql(cid: str, superuser: str, *statements: str) -> None:
    c = cluster.Cluster(cid, superuser)
    for st in statements:
        try:
            c.rows(st)
        except cluster.ClusterError as e:
            raise JobFailed("%s: %s" % (st, e)) from None


def _write(path: str, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pitr.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _ready(a: argparse.Namespace) -> str:
    if waiting.wait(a.project, a.service, a.superuser, 180) != 0:
        raise JobFailed("postgres did not come back within 180 s after the restart")
    return postgres_container(a.project, a.service)


def _image(a: argparse.Namespace, report: bool) -> str:
    """The derived image: the one given, checked, or built from the live image."""
    image = a.image
    if not image:
        image = pitr.image_tag(a.base_image)
        if docker("image", "inspect", image)[0] != 0:
            _step(report, "image", "building %s from %s" % (image, a.base_image))
            build = tempfile.mkdtemp(prefix="aimms-ops-pitr-image.")
            try:
                with open(os.path.join(build, "Dockerfile"), "w") as fh:
                    fh.write(pitr.dockerfile(a.base_image))
                rc, _o, err = docker("build", "-t", image, build)
            finally:
                subprocess.run(["rm", "-rf", build])
            if rc != 0:
                raise JobFailed("docker build of %s: %s" % (image, last_line(err)))
    rc, _o, err = docker("run", "--rm", "--network", "none", "--entrypoint", "pgbackrest",
                         image, "version")
    if rc != 0:
        raise JobFailed("the image %s has no working pgbackrest: %s" % (image, last_line(err)))
    return image


def enable(a: argparse.Namespace) -> None:
    base = os.path.join(a.project_dir, a.compose_file)
    override, secret = pitr.override_path(base), pitr.secret_path(base)
    if a.disable:
        cid = postgres_container(a.project, a.service)
        _step(a.report, "settings", "ALTER SYSTEM RESET the archive settings")
        _sql(cid, a.superuser, *("ALTER SYSTEM RESET %s" % k for k, _v in
                                 pitr.ARCHIVE_SETTINGS))
        _step(a.report, "restart", "postgres without %s" % pitr.OVERRIDE_FILE)
        _compose(a, [base], "up", "-d", a.service)
        if os.path.exists(override):
            os.replace(override, override + ".off")
        _ready(a)
        return
    image = _image(a, a.report)
    _step(a.report, "repository", a.repo)
    os.makedirs(a.repo, exist_ok=True)
    rc, _o, err = docker("run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint",
                         "sh", "-v", "%s:/r" % a.repo, image, "-c",
                         "chown postgres /r && chmod 2770 /r")
    if rc != 0:
        raise JobFailed("cannot give %s to the container's postgres: %s" % (a.repo,
                                                                           last_line(err)))
    if not os.path.exists(secret):
        _step(a.report, "passphrase", secret)
        _write(secret, "PGBACKREST_REPO1_CIPHER_PASS=%s\n" % secrets.token_urlsafe(32), 0o600)
    version = _compose_version(base)
    _write(override, pitr.override_text(version, a.service, image, a.repo, secret,
                                        "/var/lib/postgresql/data", int(a.retention_full)),
           0o644)
    cid = postgres_container(a.project, a.service)
    _step(a.report, "settings", "ALTER SYSTEM SET " + ", ".join(
        "%s=%s" % kv for kv in pitr.ARCHIVE_SETTINGS))
    _sql(cid, a.superuser, *("ALTER SYSTEM SET %s = '%s'" % (k, v.replace("'", "''"))
                             for k, v in pitr.ARCHIVE_SETTINGS))
    _step(a.report, "restart", "postgres with %s" % pitr.OVERRIDE_FILE)
    _compose(a, [base, override], "up", "-d", a.service)
    cid = _ready(a)
    _step(a.report, "stanza", "pgbackrest stanza-create, check")
    for args in (("stanza-create",), ("check",)):
        run = pgbackrest(cid, *args)
        if run.returncode != 0:
            why = pgbackrest_error(run)
            if "unable to load info file" in why:
                raise JobFailed("the repository %s holds backups this passphrase cannot read "
                                "(was %s replaced?): put the old passphrase file back, or move "
                                "the repository aside and run fab install-backups again (%s)"
                                % (a.repo, secret, why))
            raise JobFailed("pgbackrest %s: %s" % (args[0], why))


def _compose_version(path: str) -> str:
    """The ``version:`` of the operator's compose file (compose v1 wants the same)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("version:"):
                    return line.split(":", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return ""


def enable_command(args: argparse.Namespace) -> int:
    try:
        enable(args)
    except JobFailed as e:
        os.write(2, ("aimms-ops: %s\n" % e).encode())
        return 1
    return 0

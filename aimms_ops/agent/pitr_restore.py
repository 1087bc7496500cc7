"""``pitr-restore``: the whole cluster brought back to a moment, into a new volume,
checked, then swapped in the way rebuild-volume swaps.

1. The repository's backup and WAL are restored (``pgbackrest restore --type=time``)
   into a new volume by a throwaway container of the live image; a throwaway postgres
   on it replays WAL to the moment and promotes onto a new timeline, whose history file
   it archives (so that a later restore follows the new timeline, not the old one).
   It must answer, list every database and let each be read. The live cluster runs on
   all along: a failure here removes the new volume and changes nothing.
2. The swap, under the cluster lock: the stack's postgres stops, the live volume's data
   is copied into a kept volume, the recovered data into the live volume, postgres
   starts (with the PITR override) and must answer. A failure here says where the old
   data is and the command that puts it back.
"""

import argparse
import os
import re
import subprocess
import tempfile
import time
from typing import Any, Dict

from aimms_ops.agent import cluster, waiting
from aimms_ops.agent.hosttools import docker, last_line
from aimms_ops.agent.job import Job, JobFailed, run_job
from aimms_ops.agent.pitr import _compose, postgres_container, restore_into
from aimms_ops.core import pitr, units
from aimms_ops.core.layout import KEPT_LABEL, VOLUME_COPY_SH
from aimms_ops.core.lock import LOCK_FILES

DATA = "/var/lib/postgresql/data"
#: What recovery logs where it stopped (PostgreSQL 15's wording).
STOPPED = re.compile(r"(recovery stopping (?:before|after) .*|last completed transaction "
                     r"was at log time .*)$", re.M)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("pitr-restore", help="the cluster back to a moment (fab restore --to)")
    p.add_argument("--compose", default="", help="the compose command (default: found)")
    for name in ("--to", "--project", "--service", "--superuser", "--project-dir",
                 "--compose-file", "--volume", "--keep", "--run-id", "--backup-dir",
                 "--log-file"):
        p.add_argument(name, required=True)
    p.add_argument("--lock-timeout", type=int, default=600)
    p.add_argument("--report", action="store_true")
    p.set_defaults(run=restore_command)


def _docker(what: str, *args: str) -> str:
    rc, out, err = docker(*args)
    if rc != 0:
        raise JobFailed("%s: %s" % (what, last_line(err or out) or "exit %d" % rc))
    return out


def restore_command(a: argparse.Namespace) -> int:
    job = Job("pitr-restore", a.log_file, report=a.report)
    return run_job(job, Restore(job, a).run)


class Restore:
    def __init__(self, job: Job, a: argparse.Namespace) -> None:
        self.job, self.a = job, a
        self.new = "aimms-ops-pitr-%s" % a.run_id
        self.check = "aimms-ops-pitr-check-%s" % a.run_id
        self.env_file = ""
        self.timings: Dict[str, float] = {}

    def step(self, name: str, detail: str = "") -> None:
        self.job.log("%s: %s" % (name, detail))
        self.job.event("step", name=name, detail=detail)

    def run(self) -> int:
        a, job = self.a, self.job
        started = time.time()
        job.log("START pitr restore to %s" % a.to)
        job.lock(os.path.join(a.backup_dir, LOCK_FILES["cluster"]), "pitr restore",
                 "a backup, verify or another restore", a.lock_timeout)
        cid = postgres_container(a.project, a.service)
        image = _docker("inspect", "inspect", "-f", "{{.Config.Image}}", cid).strip()
        mounts = _docker("inspect", "inspect", "-f",
                         "{{range .Mounts}}{{if eq .Destination \"%s\"}}{{.Source}}"
                         "{{end}}{{end}}" % pitr.REPO_IN_CONTAINER, cid).strip()
        if not mounts:
            raise JobFailed("the postgres container has no PITR repository mounted (is PITR "
                            "on? fab install-backups turns it on)")
        env = _docker("inspect", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}",
                      cid)
        fd, self.env_file = tempfile.mkstemp(prefix="aimms-ops-pitr.", suffix=".env")
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(line + "\n" for line in env.splitlines()
                             if line.startswith("PGBACKREST_")))
        job.cleanups.append(self.cleanup)
        self.preflight(cid)
        self.recover(image, mounts)
        self.timings["recovered"] = time.time() - started
        stopped = self.verify()
        self.swap(image)
        seconds = time.time() - started
        job.log("RESULT ok: the cluster is back to %s (%s) in %.1fs; the old data is in "
                "volume %s" % (a.to, stopped, seconds, a.keep))
        job.event("pitr-restored", to=a.to, stopped=stopped, seconds=seconds, kept=a.keep,
                  recovered_after=self.timings["recovered"])
        return 0

    def preflight(self, cid: str) -> None:
        """Room for the recovered cluster and the kept copy: twice the live one's size."""
        try:
            size = int(cluster.Cluster(cid, self.a.superuser).rows(
                "SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0])
        except (cluster.ClusterError, IndexError, ValueError):
            return
        need = size * 2 * 11 // 10
        root = docker("info", "--format", "{{.DockerRootDir}}")[1].strip()
        try:
            st = os.statvfs(root)
        except (OSError, ValueError):
            return
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise JobFailed("not enough disk: the recovered cluster and the kept copy of the "
                            "live one need about %s, %s has %s free; nothing was changed (free "
                            "space there, e.g. docker volume rm of an old kept volume)"
                            % (units.size(need), root, units.size(free)))
        self.step("disk", "%s free in %s, about %s needed" % (units.size(free), root,
                                                              units.size(need)))

    def recover(self, image: str, repo: str) -> None:
        a = self.a
        self.step("volume", "create %s" % self.new)
        _docker("docker volume create", "volume", "create", "--label",
                "%s=%s" % (pitr.RESTORE_LABEL, a.run_id), self.new)
        target = (["--type=default"] if a.to == "latest" else
                  ["--type=time", "--target=%s" % a.to, "--target-action=promote"])
        self.step("restore", "pgbackrest restore %s" % " ".join(target))
        failed = restore_into(self.new, image, self.env_file, repo, DATA, *target)
        if failed:
            raise JobFailed(failed)
        # It archives like the live cluster: its new timeline's history file must be in
        # the repository, or a later restore to "latest" would follow the old timeline
        # (and bring back what this restore undid). What it writes after promotion is the
        # start of the timeline the live cluster continues after the swap.
        self.step("recovery", "replaying WAL in a throwaway postgres")
        _docker("the throwaway postgres", "run", "-d", "--name", self.check, "--network", "none",
                "--label", "%s=%s" % (pitr.RESTORE_LABEL, a.run_id),
                "--env-file", self.env_file, "-v", "%s:%s" % (self.new, DATA),
                "-v", "%s:%s" % (repo, pitr.REPO_IN_CONTAINER), image, "postgres")
        deadline = time.time() + 3600
        while True:
            rc, out, _e = docker("exec", self.check, "psql", "-X", "-A", "-t", "-U",
                                 a.superuser, "-d", "template1", "-c",
                                 "SELECT pg_is_in_recovery()")
            if rc == 0 and out.strip() == "f":
                return
            state = docker("inspect", "-f", "{{.State.Status}}", self.check)[1].strip()
            if state != "running" or time.time() > deadline:
                logs = subprocess.run(["docker", "logs", "--tail", "5", self.check],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      universal_newlines=True, errors="replace").stdout
                raise JobFailed("recovery to %s failed: %s" % (a.to, last_line(logs)))
            time.sleep(0.5)

    def verify(self) -> str:
        a = self.a
        c = cluster.Cluster(self.check, a.superuser)
        try:
            names = [r[0] for r in c.rows("SELECT datname FROM pg_database WHERE "
                                          "datallowconn ORDER BY 1")]
            for name in names:
                subprocess.run(["docker", "exec", self.check, "psql", "-X", "-A", "-t", "-U",
                                a.superuser, "-d", name, "-c", "SELECT count(*) FROM "
                                "pg_class"], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        except (cluster.ClusterError, subprocess.CalledProcessError) as e:
            raise JobFailed("the recovered cluster does not answer: %s" % e) from None
        logs = subprocess.run(["docker", "logs", self.check], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True,
                              errors="replace").stdout
        found = STOPPED.findall(logs)
        stopped = found[0] if found else "the end of the archived WAL"
        self.step("checked", "%d databases answer; %s" % (len(names), stopped))
        _docker("stop of the throwaway postgres", "stop", "-t", "120", self.check)
        _docker("removal of the throwaway postgres", "rm", self.check)
        return stopped

    def swap(self, image: str) -> None:
        a = self.a
        base = os.path.join(a.project_dir, a.compose_file)
        files = [base] + [f for f in (pitr.override_path(base),) if os.path.exists(f)]
        self.step("stop", "the stack's %s" % a.service)
        _compose(a, files, "stop", a.service)
        self.step("keep", "the live data copied into volume %s" % a.keep)
        if docker("volume", "inspect", a.keep)[0] == 0:
            raise JobFailed("volume %s exists already: nothing was changed (name another "
                            "with --keep)" % a.keep)
        _docker("docker volume create", "volume", "create", "--label",
                "%s=%s" % (KEPT_LABEL, a.volume), "--label",
                "%s=%s" % (pitr.RESTORE_LABEL, a.run_id), a.keep)
        self._copy(image, a.volume, a.keep)
        self.step("swap", "the recovered data copied into volume %s" % a.volume)
        try:
            self._copy(image, self.new, a.volume)
        except JobFailed as e:
            raise JobFailed("%s; the old data is in volume %s: put it back with: docker run "
                            "--rm --network none --user 0:0 --entrypoint sh -v %s:/from:ro -v "
                            "%s:/to %s -c '%s'" % (e, a.keep, a.keep, a.volume, image,
                                                   VOLUME_COPY_SH)) from None
        self.step("start", "the stack's %s" % a.service)
        _compose(a, files, "up", "-d", a.service)
        if waiting.wait(a.project, a.service, a.superuser, 300) != 0:
            raise JobFailed("postgres did not answer after the swap; the old data is in "
                            "volume %s" % a.keep)

    def _copy(self, image: str, src: str, dst: str) -> None:
        _docker("copy %s -> %s" % (src, dst), "run", "--rm", "--network", "none", "--user",
                "0:0", "--entrypoint", "sh", "-v", "%s:/from:ro" % src, "-v", "%s:/to" % dst,
                image, "-c", VOLUME_COPY_SH)

    def cleanup(self) -> None:
        docker("rm", "-f", self.check)
        docker("volume", "rm", "-f", self.new)
        if self.env_file:
            try:
                os.unlink(self.env_file)
            except OSError:
                pass


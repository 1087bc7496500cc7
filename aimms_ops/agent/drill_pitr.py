"""The drill's PITR source: the cluster restored from the PITR repository (pgBackRest,
``core/pitr.py``) to its newest archived WAL, into the drill's throwaway.

Nothing is fetched: the repository is on the host (the live container mounts it). The
throwaway gets a volume of its own, ``pgbackrest restore`` fills it (the repository
mounted read-only), and postgres replays WAL with archiving off, so the drill pushes
nothing into the repository. RPO is the age of the newest archived WAL segment.
"""

import time
from typing import Any

from aimms_ops.agent.drill_sources import DrillTrial, Fetched, Source
from aimms_ops.agent.hosttools import docker, hostname, last_line, out
from aimms_ops.agent.pitr import restore_into
from aimms_ops.agent.trial import Failed
from aimms_ops.core import pitr, units


def repo_of(prod: str) -> str:
    """The host folder the live container mounts as the repository ("" when none)."""
    return out("inspect", "-f", "{{range .Mounts}}{{if eq .Destination \"%s\"}}{{.Source}}"
               "{{end}}{{end}}" % pitr.REPO_IN_CONTAINER, prod).strip()


class PitrTrial(DrillTrial):
    """The drill's throwaway, filled by pgbackrest restore instead of a dump."""

    def start(self, prod: str, prod_name: str, image: str, dest: str) -> None:
        repo = repo_of(prod)
        if not repo:
            raise self.fail("start", "%s mounts no PITR repository (is PITR on? fab "
                            "install-backups turns it on)" % prod_name)
        import tempfile

        self.work = tempfile.mkdtemp(prefix=self.work_prefix)
        env = out("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", prod)
        with open(self.file("env"), "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("".join(ln + "\n" for ln in env.splitlines() if ln))
        self.made_volume = True
        rc, _o, err = docker("volume", "create", "--label", self.label, self.volume)
        if rc != 0:
            raise self.fail("restore", "docker volume create failed: %s" % last_line(err))
        failed = restore_into(self.volume, image, self.file("env"), repo, dest)
        if failed:
            raise self.fail("restore", failed)
        self.made_container = True
        rc, _o, err = docker("run", "--detach", "--name", self.container, "--label", self.label,
                             "--network", "none", "--env-file", self.file("env"),
                             "--volume", "%s:%s" % (self.volume, dest), "--volume",
                             "%s:%s:ro" % (repo, pitr.REPO_IN_CONTAINER), image, "postgres",
                             "-c", "archive_mode=off")
        if rc != 0:
            raise self.fail("start", "docker run failed: %s" % last_line(err))
        deadline = time.monotonic() + int(self.opts.wait)
        while True:
            rc, answer, _e = self.psql("postgres", "SELECT pg_is_in_recovery()")
            if rc == 0 and answer.strip() == "f":
                break
            if out("inspect", "--format", "{{.State.Running}}", self.container).strip() != "true":
                _rc, logs, err = docker("logs", "--tail", "5", self.container)
                raise self.fail("restore", "the recovery stopped: %s" % last_line(logs + err))
            if time.monotonic() >= deadline:
                raise self.fail("restore", "the recovery did not end within %ss"
                                % self.opts.wait)
            time.sleep(0.5)
        self.run.check("start", "OK", "%s restored from the PITR repository %s, WAL replayed, "
                       "no network" % (self.container, repo))


class PitrSource(Source):
    """The PITR repository on this host, to its newest archived WAL."""

    kind = "pitr"
    name = "pitr"

    def describe(self) -> str:
        return "the PITR repository on %s, to its newest archived WAL" % hostname()

    def fetch(self, run: Any, work: str) -> Fetched:
        from aimms_ops.agent import cluster

        prod = cluster.container(run.opts.get("COMPOSE_PROJECT"),
                                 run.opts.get("COMPOSE_SERVICE"))
        if not prod:
            raise Failed("fetch", "no running postgres container to read archiving from")
        try:
            row = cluster.Cluster(prod, run.opts.get("PG_SUPERUSER")).rows(
                "SELECT coalesce(extract(epoch FROM last_archived_time)::text, ''), "
                "coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
        except (cluster.ClusterError, IndexError) as e:
            raise Failed("fetch", "cannot read pg_stat_archiver: %s" % e) from None
        if not row[0]:
            raise Failed("fetch", "no WAL was archived yet: PITR has nothing to restore")
        at = float(row[0])
        return Fetched("", "pitr:%s" % row[1], 0, at,
                       "newest archived WAL %s, %s old" % (row[1], units.duration(
                           max(0.0, time.time() - at))))

    trial_class = PitrTrial

    def replay(self, trial: DrillTrial) -> None:
        """Nothing: the throwaway was filled and recovered as it started."""

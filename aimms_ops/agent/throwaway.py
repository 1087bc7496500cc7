"""What a throwaway restore made, removed: the container and volume of one run (the deep
verify's, ``agent/trial.py``, and the drill's, ``agent/drill.py``), or those a killed
run of the same kind left (found by their label)."""

import shutil
import subprocess
import time
from typing import Any, Callable, List, Optional

from aimms_ops.agent.hosttools import docker, out


class Throwaway:
    """The removal half of a throwaway: ``container``, ``volume``, ``work`` (a temporary
    dir), ``procs`` (a pipeline), and whether this run made them."""

    run: Any
    container: str
    volume: str
    made_container: bool
    made_volume: bool
    removed: bool
    work: str
    procs: "List[subprocess.Popen]"

    def _remove_made(self, kind: str, name: str, argv: List[str]) -> Optional[str]:
        """Remove what this run made (retried while docker still has it), then check that
        it is gone: a problem if not."""
        for i in range(1, 6):
            if docker(*argv)[0] == 0 or docker(kind, "inspect", name)[0] != 0:
                break
            time.sleep(i)
        if docker(kind, "inspect", name)[0] == 0:
            return "%s %s is still there (docker %s)" % (kind, name, " ".join(argv))
        self.run.log("removed %s %s" % (kind, name))
        self.removed = True
        return None

    def remove(self) -> List[str]:
        """Remove the throwaway container and volume (only those this run made); the
        problems, one each. Safe to call twice."""
        for proc in self.procs:  # a pipeline a signal cut short
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs = []
        problems = []
        if self.made_container:
            self.made_container = False
            problems.append(self._remove_made("container", self.container,
                                              ["rm", "-f", "-v", self.container]))
        if self.made_volume:
            self.made_volume = False
            problems.append(self._remove_made("volume", self.volume,
                                              ["volume", "rm", self.volume]))
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = ""
        return [p for p in problems if p]


def remove_leftovers(label: str, log: "Callable[[str], None]") -> List[str]:
    """Remove every container, then every volume, carrying ``label`` (what a killed run
    left: the caller holds the lock that makes it the only run of its kind); the
    problems, one each."""
    problems = []
    for kind, argv in (("container", ["rm", "-f", "-v"]), ("volume", ["volume", "rm"])):
        listing = ["ps", "-aq"] if kind == "container" else ["volume", "ls", "-q"]
        for name in out(*listing, "--filter", "label=" + label).split():
            rc, _out, err = docker(*argv, name)
            if rc == 0:
                log("removed %s %s, left by an earlier run that was killed" % (kind, name))
            else:
                problems.append("cannot remove %s %s left by a killed run: %s"
                                % (kind, name, err.strip().splitlines()[-1:] or "?"))
    return problems

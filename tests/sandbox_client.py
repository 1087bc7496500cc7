"""The client of the sandbox host that the tests and the benchmarks share.

It reaches the sandbox through OpenSSH (not the code under test); its queries enter the
postgres container directly (the sandbox host is this machine). Plain Python: no pytest,
so that bench/run.py can use it too.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aimms_ops.core.layout import KEPT_LABEL

from . import fab_fork

REPO = Path(__file__).resolve().parents[1]
FAB = fab_fork.FAB
#: The tables sandbox/up.sh seeds aimms_web with (step_data); any other table of its
#: public schema is a test's.
SEED_TABLES = ("customers", "orders", "audit_log")


def own_instance(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, Path]:
    """The sandbox instance (SANDBOX_NAME) and the folder of its files (SANDBOX_OUT) of
    this test process.

    The first (or only) pytest worker uses the instance the environment names (default
    ``aidset``, files in sandbox/); worker N of ``pytest -n`` uses instance NAME-N with
    its files in sandbox/worker-N/, so that workers never share a host, a cluster or a
    process to watch.
    """
    name = environ.get("SANDBOX_NAME") or "aidset"
    out = Path(environ["SANDBOX_OUT"]) if environ.get("SANDBOX_OUT") else REPO / "sandbox"
    worker = environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if n:
        return f"{name[:17]}-{n}", REPO / "sandbox" / f"worker-{n}"
    return name, out


SANDBOX_NAME, SANDBOX_OUT = own_instance()


@dataclass
class Sandbox:
    inventory: Path
    ssh_config: Path
    env: dict[str, str]
    #: The postgres container's main process (pid, its start time) and environment, as
    #: last looked up (see :meth:`in_postgres`).
    _pg: tuple[int, str, dict[str, str]] | None = field(default=None, init=False,
                                                       repr=False, compare=False)

    @property
    def docker_host(self) -> str:
        return self.env["DOCKER_HOST"]

    @property
    def user(self) -> str:
        return self.env["SANDBOX_USER"]

    @property
    def home(self) -> str:
        return f"/home/{self.user}"

    @property
    def backup_dir(self) -> str:
        """The backup dir the sandbox's inventory names (its host aidset)."""
        data = yaml.safe_load(self.inventory.read_text())
        return str(data["hosts"]["aidset"]["backup_dir"])

    def ssh(self, command: str, *, check: bool = True, input: bytes | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``command`` on the sandbox host through OpenSSH (not the code under test),
        as a session of one connection kept open (:meth:`shared_connection`)."""
        proc = subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
             *self.shared_connection(), "aidset", command],
            input=input, capture_output=True, timeout=timeout, check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {command!r} failed ({proc.returncode}): "
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc

    def shared_connection(self) -> list[str]:
        """ssh options that run each command of :meth:`ssh` as a new session of one
        connection (OpenSSH's ControlMaster): the key exchange and login, about 0.3 s on
        this machine, are paid once, not per command. The connection is opened by the
        first command and closes itself after a minute unused; when it is gone (a test
        killed it, or changed what the key may run), the next command opens another.
        Commands started with Popen here (an application session, a lock holder) keep a
        connection of their own."""
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir()}/%C",
                "-o", "ControlPersist=60"]

    def close_shared_connection(self) -> None:
        """End the shared connection (the next command opens a new one): for a test that
        changes what a login may do (authorized_keys), before and after."""
        subprocess.run(["ssh", "-F", str(self.ssh_config), *self.shared_connection(),
                        "-O", "exit", "aidset"], capture_output=True, check=False,
                       stdin=subprocess.DEVNULL, timeout=30)

    def sh(self, command: str, **kw) -> str:
        return self.ssh(command, **kw).stdout.decode()

    def container(self) -> str:
        """The running postgres container of the stack, looked up now."""
        return self.sh("docker ps -q --filter label=com.docker.compose.project=aimms-web "
                       "--filter label=com.docker.compose.service=postgres").strip()

    def in_postgres(self, command: str, *, env: dict[str, str] | None = None,
                    check: bool = True, input: bytes | None = None, timeout: float = 300,
                    ) -> subprocess.CompletedProcess:
        """Run the shell line ``command`` in the postgres container as ``docker exec``
        would (as root there, with the container's environment and ``env``), without
        Docker's and SSH's round trips per call: the sandbox host is this machine, so
        the command enters the container's mount namespace (its binaries, its socket)
        with ``nsenter``, through the container's main process. That process is looked
        up once and again whenever it is gone (the stack was recreated or stopped); with
        no container running, the command fails as ``docker exec`` would."""
        pg = self._postgres_process()
        if pg is None:
            proc = subprocess.CompletedProcess(command, 1, b"",
                                               b"the postgres container is not running\n")
        else:
            proc = subprocess.run(
                ["nsenter", "-t", str(pg[0]), "-m", "--", "sh", "-c", command],
                input=input, capture_output=True, timeout=timeout, check=False,
                env={**pg[2], **(env or {})},
                stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{command!r} in the postgres container failed "
                                 f"({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return proc

    def _postgres_process(self) -> tuple[int, str, dict[str, str]] | None:
        if self._pg is not None and _started(self._pg[0]) == self._pg[1]:
            return self._pg
        self._pg = None
        cid = self._docker("ps", "-q", "--filter", "label=com.docker.compose.project=aimms-web",
                           "--filter", "label=com.docker.compose.service=postgres").split()
        if not cid:
            return None
        out = self._docker("inspect", "--format",
                           "{{.State.Pid}}{{range .Config.Env}}{{println}}{{.}}{{end}}",
                           cid[0]).splitlines()
        pid = int(out[0]) if out and out[0].isdigit() else 0
        started = _started(pid) if pid else None
        if started is None:
            return None
        self._pg = (pid, started, dict(v.split("=", 1) for v in out[1:] if "=" in v))
        return self._pg

    def drop_extra_tables(self) -> list[str]:
        """Drop the tables of aimms_web's public schema that the seed (sandbox/up.sh)
        did not make: what an earlier test file or run left there (pgbench's 75 MB of
        accounts made every later backup, restore and dump of the suite eleven times
        larger). One query when there is none; the names dropped."""
        out = self.psql(f"""
            SELECT string_agg(quote_ident(relname), ', ' ORDER BY relname) FROM pg_class
             WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
               AND NOT relispartition AND relname NOT IN ({", ".join(
                   f"'{t}'" for t in SEED_TABLES)})""")
        if out:
            self.psql(f"DROP TABLE IF EXISTS {out} CASCADE")
        return out.split(", ") if out else []

    def seeded(self) -> bool:
        """The stack runs and aimms_web holds the seed's tables (a failed test can leave
        the cluster down, or new and empty: a rebuild cut short)."""
        names = ", ".join(f"'{t}'" for t in SEED_TABLES)
        got = self.in_postgres(
            "psql -X -q -A -t -U postgres -d aimms_web -c "
            + shlex.quote(f"SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                          f"AND tablename IN ({names})"), check=False)
        return got.returncode == 0 and got.stdout.decode().strip() == str(len(SEED_TABLES))

    def remove_kept_volumes(self) -> list[str]:
        """Remove the volumes ``rebuild-volume`` kept on this instance (the tests' own:
        each rebuild keeps the old data, up to a gigabyte with its WAL, and nothing
        here would ever drop them); the names removed."""
        names = self._docker("volume", "ls", "-q", "--filter", f"label={KEPT_LABEL}").split()
        if names:
            self._docker("volume", "rm", *names, timeout=300)
        return names

    def _docker(self, *args: str, timeout: float = 60) -> str:
        """The stdout of ``docker ARGS`` against this instance's engine, run here (the
        sandbox host is this machine); what fails says nothing."""
        return subprocess.run(["docker", *args], capture_output=True, text=True,
                              env={**os.environ, "DOCKER_HOST": self.docker_host},
                              check=False, timeout=timeout, stdin=subprocess.DEVNULL).stdout

    def psql(self, sql: str, db: str = "aimms_web", *, check: bool = True) -> str:
        return self.in_postgres(
            f"psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d {shlex.quote(db)}",
            input=sql.encode(), check=check).stdout.decode().strip()

    def app_session(self) -> subprocess.Popen:
        """An application session open on aimms_web (kill it when done)."""
        return subprocess.Popen(
            ["ssh", "-F", str(self.ssh_config), "aidset",
             f"docker exec -i {self.container()} psql -U aimms_user -d aimms_web "
             "-c 'select pg_sleep(300)'"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until postgres in the sandbox accepts connections again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_postgres("pg_isready -U postgres -d aimms_web",
                                check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("postgres did not become ready")

    def tables(self, db: str = "aimms_web") -> list[str]:
        return self.psql("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                         "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                         "'information_schema') ORDER BY 1", db).split()

    def checksums(self, db: str = "aimms_web") -> dict[str, str]:
        """Per-table md5 of the ordered rows, plus every sequence's state."""
        parts = [f"SELECT '{t}', {md5_sql(t)}" for t in self.tables(db)]
        parts.append("SELECT 'seq:' || sequencename, coalesce(last_value, 0)::text "
                     "FROM pg_sequences")
        out = self.psql(STABLE_TEXT + " UNION ALL ".join(parts) + ";", db)
        return dict(line.split("|", 1) for line in out.splitlines() if line)

    def dumpall(self) -> str:
        """pg_dumpall of the whole cluster, without the random \\restrict keys."""
        text = self.in_postgres("pg_dumpall -U postgres").stdout.decode()
        return "\n".join(ln for ln in text.splitlines()
                         if not ln.startswith(("\\restrict", "\\unrestrict")))

    def fab(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, inventory: Path | None = None,
            cwd: Path | None = None, own_process: bool = False,
            ) -> subprocess.CompletedProcess:
        """``fab ARGS`` against this sandbox (its inventory unless ``inventory``), its
        output as text. It runs as a fork of a process that has Fabric and the tasks
        imported (tests/fab_fork.py) unless ``own_process``: for a test that reads the
        machine's command lines, where the run must show as ``fab ARGS``."""
        full_env = {**os.environ, "AIMMS_OPS_INVENTORY": str(inventory or self.inventory),
                    **(env or {})}
        full_env.pop("AIMMS_OPS_DEBUG", None)
        if fab_fork.enabled() and not own_process:
            return fab_fork.run(list(args), env=full_env, cwd=cwd or REPO, input=input,
                                timeout=timeout)
        return subprocess.run(
            [str(FAB), *args], input=input, text=True, capture_output=True, env=full_env,
            timeout=timeout, check=False, cwd=cwd or REPO,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def fab_many(self, runs: list[tuple[list[str], Path | None, Path | None]],
                 timeout: float = 900) -> list[subprocess.CompletedProcess]:
        """Run many ``fab`` command lines, each ``(args, inventory, cwd)``, in one process
        (tests/integration/cli_batch.py): each as :meth:`fab` runs it, with its own exit
        status and output, without starting Python and Fabric again for each."""
        env = {k: v for k, v in os.environ.items() if k != "AIMMS_OPS_DEBUG"}
        cases = [{"argv": [os.fsencode(a).hex() for a in args],
                  "cwd": str(cwd or REPO),
                  "env": {"AIMMS_OPS_INVENTORY": str(inventory or self.inventory)}}
                 for args, inventory, cwd in runs]
        batch = REPO / "tests" / "integration" / "cli_batch.py"
        proc = subprocess.run([str(FAB.parent / "python"), str(batch)],
                              input=json.dumps(cases), text=True, capture_output=True,
                              env=env, timeout=timeout, check=False, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout)
        assert len(results) == len(runs), proc.stderr
        return [subprocess.CompletedProcess(["fab", *args], r["rc"], r["stdout"], r["stderr"])
                for (args, _, _), r in zip(runs, results, strict=True)]


_CONTROL_DIR: Path | None = None


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), or None when
    there is no such process: a pid and its start time name one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _control_dir() -> Path:
    """This process's folder (mode 0700) of shared-connection sockets: short, as a Unix
    socket's path must be."""
    global _CONTROL_DIR
    if _CONTROL_DIR is None:
        _CONTROL_DIR = Path(tempfile.mkdtemp(prefix="aimms-ops-ssh."))
        atexit.register(shutil.rmtree, _CONTROL_DIR, True)
    return _CONTROL_DIR


#: Session settings that make a row's text the same on any cluster (timestamptz, dates).
STABLE_TEXT = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 3; "


def md5_sql(table: str) -> str:
    """SQL for the md5 of a table's rows in a fixed order (the table name is trusted)."""
    order = 'x::text COLLATE "C"'  # the same order whatever the cluster's locale
    return (f"(SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY {order}), '')) "
            f"FROM {table} x)")


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return env


def from_out(out: Path) -> Sandbox:
    """The sandbox whose files sandbox/up.sh wrote into ``out``."""
    return Sandbox(inventory=out / "inventory.yml", ssh_config=out / "ssh_config",
                   env=_read_env(out / "env"))


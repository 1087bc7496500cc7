"""The sandbox prepared for the bench: seeded to a size, the files the jobs use, and
each job as a pair (aimms-ops, the same job by hand), each a callable returning a Run."""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench import link_jobs, pitr_jobs
from bench.measure import Run, Timer, human, say, tail
from bench.offsite_push import BY_HAND
from tests.sandbox_client import Sandbox, _read_env

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Named like a backup of now: an older one would be out of the offsite target's
#: retention, and never pushed.
XFER_NAME = f"aimms_postgres_{dt.datetime.now(dt.UTC):%Y%m%d_%H%M%S}_benchxfer.sql.gz"
SRC_LABEL = "benchsrc"


class Bed:
    """The sandbox seeded for a phase, and the files the jobs use."""

    def __init__(self, sb: Sandbox, timer: Timer, work: Path) -> None:
        self.sb = sb
        self.t = timer
        self.work = work
        inv = sb.inventory.read_text()
        m = re.search(r"(?m)^\s*backup_dir:\s*(\S+)", inv)
        self.backup_dir = (m.group(1) if m else f"{sb.home}/postgres-backups").rstrip("/")
        # The offsite inventory's host has a backup dir of its own: what it pushes.
        off = self.offsite_inventory
        m = re.search(r"(?m)^\s*backup_dir:\s*(\S+)", off.read_text()) if off.is_file() else None
        self.offsite_dir = m.group(1).rstrip("/") if m else self.backup_dir
        self.fab = [str(BIN / "fab")]
        # The same host with compression: zstd (the backup-zstd job).
        self.zstd_inventory = work / "inventory-zstd.yml"
        data = yaml.safe_load(sb.inventory.read_text())
        data["hosts"][data["default_host"]]["compression"] = "zstd"
        self.zstd_inventory.write_text(yaml.safe_dump(data))

    def settle(self) -> None:
        """Let the previous job's writes land before timing the next one."""
        self.sb.psql("CHECKPOINT", "postgres")
        subprocess.run(["sync"], check=False)

    def seed(self, rows: int) -> None:
        env = dict(os.environ, SANDBOX_ROWS=str(rows))
        started = time.monotonic()
        proc = subprocess.run(["bash", str(REPO / "sandbox" / "up.sh")], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench: sandbox/up.sh failed: {tail(proc.stderr + proc.stdout)}")
        say(f"sandbox seeded with {rows} rows in orders ({time.monotonic() - started:.0f} s)")

    def fab_run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        return self.t.run([*self.fab, *args], env=env)[0]

    def prepare(self, size: int, rows: int, jobs: tuple[str, ...]) -> dict:
        self.seed(rows)
        c = self.sb.container()
        dump = int(self.sb.sh(f"docker exec {c} pg_dumpall -U postgres | wc -c"))
        say(f"pg_dumpall is {human(dump)} ({rows} rows in orders)")
        self.rows = int(self.sb.psql("SELECT count(*) FROM orders"))
        self.sb.sh(f"rm -f {self.backup_dir}/aimms_postgres_*_{SRC_LABEL}.sql.gz*")
        self.fab_run("backup", "--label", SRC_LABEL)
        self.src_name = self.sb.sh(
            f"cd {self.backup_dir} && ls -t aimms_postgres_*_{SRC_LABEL}.sql.gz").split()[0]
        srcdir = self.work / "restore-source"
        shutil.rmtree(srcdir, ignore_errors=True)
        self.fab_run("download", f"--file={self.src_name}", f"--dest={srcdir}")
        self.src = srcdir / self.src_name
        # The transfer file: SIZE bytes of that backup repeated (compressed, so it does
        # not compress further), named like a backup so that fab download accepts it.
        reps = size // self.src.stat().st_size + 1
        x = XFER_NAME
        self.sb.sh(f"cd {self.backup_dir} && for i in $(seq {reps}); do cat "
                   f"{self.src_name}; done 2>/dev/null | head -c {size} > {x}.tmp && "
                   f"sha256sum {x}.tmp | sed 's/\\.tmp$//' > {x}.sha256 && mv {x}.tmp {x}")
        self.xfer_local = self.work / "xfer" / XFER_NAME
        if "upload" in jobs:
            self.fab_run("download", f"--file={XFER_NAME}", f"--dest={self.xfer_local.parent}")
        if "offsite" in jobs:
            o = self.offsite_dir
            if o != self.backup_dir:
                self.sb.sh(f"mkdir -p {o} && cp {self.backup_dir}/{x} {self.backup_dir}/{x}.sha256 "
                           f"{o}/")
            self.offsite(True)
            env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
            self.fab_run("offsite-sync", "--target=s3", env=env)  # all but the bench file
            self.offsite(False)
        return {"rows": rows, "dump_bytes": dump, "backup_bytes": self.src.stat().st_size,
                "xfer_bytes": size}

    def offsite(self, on: bool) -> None:
        """Offsite settings installed on the host, or removed (the backup job must not
        push: its anchor does not)."""
        if on:
            env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
            self.fab_run("install-backups", env=env)
        else:
            self.sb.ssh("rm -f ~/backup-postgres.sh.offsite", check=False)

    @property
    def offsite_inventory(self) -> Path:
        return self.sb.inventory.with_name("inventory-offsite.yml")

    def cleanup(self) -> None:
        """Leave no bench file on the host (fab's "latest" must stay a real backup)."""
        d = self.backup_dir
        self.sb.ssh(f"rm -f {d}/aimms_postgres_*_benchxfer.sql.gz* "
                    f"{self.offsite_dir}/aimms_postgres_*_benchxfer.sql.gz* "
                    f"{d}/aimms_postgres_*_{SRC_LABEL}.sql.gz* "
                    f"{d}/aimms_postgres_*_benchrun.sql.*", check=False)
        for p in self._store_copies(XFER_NAME):
            p.unlink()
        shutil.rmtree(self.work, ignore_errors=True)

    def _store_copies(self, name: str) -> list[Path]:
        env = self.sb.inventory.with_name("offsite.env")
        data = _read_env(env).get("SANDBOX_S3_DATA") if env.is_file() else None
        if not data:
            return []
        return [Path(p) for p in glob.glob(f"{data}/**/{name}.age*", recursive=True)]

    # --- the jobs: (ours, anchor), each a callable returning a Run -------------------

    def pair(self, job: str) -> tuple[Callable[[], Run], Callable[[], Run]]:
        return getattr(self, "job_" + job.replace("-", "_"))()

    def job_backup(self, env: dict[str, str] | None = None):
        c = self.sb.container()

        def ours() -> Run:
            self.settle()
            r = self.fab_run("backup", "--label", "benchrun", env=env)
            made = self.sb.sh(f"stat -c %s {self.backup_dir}/aimms_postgres_*_benchrun.sql.*z*"
                              " | head -n 1")
            r.out_bytes = int(made.split()[0]) if made.strip() else 0
            self.sb.sh(f"rm -f {self.backup_dir}/aimms_postgres_*_benchrun.sql.*")
            return r

        def anchor() -> Run:
            self.settle()
            return self.t.run(self.t.ssh_line(
                f"docker exec {c} pg_dumpall -U postgres > /dev/null"))[0]
        return ours, anchor

    def job_backup_zstd(self):
        return self.job_backup({**self.t.env, "AIMMS_OPS_INVENTORY": str(self.zstd_inventory)})

    def _restored(self, what: str) -> None:
        got = int(self.sb.psql("SELECT count(*) FROM orders"))
        if got != self.rows:
            raise SystemExit(f"bench: after {what}, orders has {got} rows, not {self.rows}")

    def _empty(self) -> None:
        # The same starting state for both: aimms_web absent, roles present.
        self.sb.psql("DROP DATABASE IF EXISTS aimms_web WITH (FORCE)", "postgres")
        self.settle()

    def _restore_pair(self, ours_file: str, by_hand: str):
        def ours() -> Run:
            self._empty()
            r = self.fab_run("restore", f"--file={ours_file}", "--yes", "--no-safety-backup")
            self._restored("fab restore")
            return r

        def anchor() -> Run:
            self._empty()
            r = self.t.run(by_hand)[0]
            self._restored("the by-hand restore")
            return r
        return ours, anchor

    def job_restore_local(self):
        c = self.sb.container()
        return self._restore_pair(str(self.src), f"gunzip -c {shlex.quote(str(self.src))} | "
                                  + self.t.ssh_line(f"docker exec -i {c} psql -U postgres")
                                  + " >/dev/null")

    def job_restore_host(self):
        c = self.sb.container()
        path = f"{self.backup_dir}/{self.src_name}"
        return self._restore_pair(self.src_name, self.t.ssh_line(
            f"gunzip -c {path} | docker exec -i {c} psql -U postgres >/dev/null"))

    def job_pitr_backup(self):
        return pitr_jobs.backup_pair(self)

    def job_pitr_restore(self):
        return pitr_jobs.restore_pair(self)

    def job_download(self):
        dest = self.work / "download"
        scp_dst = self.work / "scp.bin"

        def ours() -> Run:
            shutil.rmtree(dest, ignore_errors=True)
            self.settle()
            return self.fab_run("download", f"--file={XFER_NAME}", f"--dest={dest}")

        def anchor() -> Run:
            scp_dst.unlink(missing_ok=True)
            self.settle()
            r = self.t.run(["scp", "-q", "-F", str(self.sb.ssh_config),
                            f"aidset:{self.backup_dir}/{XFER_NAME}", str(scp_dst)])[0]
            scp_dst.unlink(missing_ok=True)
            return r
        return ours, anchor

    def job_download_link(self):
        return link_jobs.download_pair(self, "scp", XFER_NAME)

    def job_download_link_cat(self):
        return link_jobs.download_pair(self, "cat", XFER_NAME)

    def job_upload(self):
        src = self.xfer_local

        def ours() -> Run:
            self.settle()
            return self.t.run([sys.executable, str(REPO / "bench" / "upload_stream.py"),
                               str(src)])[0]

        def anchor() -> Run:
            self.settle()
            return self.t.run(self.t.ssh_line("cat > /dev/null"), stdin=src)[0]
        return ours, anchor

    def job_offsite(self):
        env = {**self.t.env, "AIMMS_OPS_INVENTORY": str(self.offsite_inventory)}
        path = f"{self.offsite_dir}/{XFER_NAME}"
        conf = self.sb.sh("ls ~/backup-postgres.sh.offsite").strip()

        def ours() -> Run:
            for p in self._store_copies(XFER_NAME):
                p.unlink()
            time.sleep(1.5)  # the sandbox S3 server's directory cache
            run = self.fab_run("offsite-sync", "--target=s3", env=env)
            if not self._store_copies(XFER_NAME):
                raise SystemExit(f"bench: fab offsite-sync pushed no copy of {XFER_NAME}: "
                                 "its time is not one to compare")
            return run

        def anchor() -> Run:
            return self.t.run(self.t.ssh_line(
                f"bash -c {shlex.quote(BY_HAND)} by-hand {shlex.quote(conf)} "
                f"{shlex.quote(path)}"))[0]
        return ours, anchor

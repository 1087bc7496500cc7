"""The PITR jobs of ``make bench``: a pgBackRest full backup beside the logical backup,
and a restore to the newest archived WAL beside the logical restore (same run, same
database). PITR is turned on for them (not timed) and off at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: Added to bench/run.py's TABLE (not judged: each is measured beside its logical twin).
TITLES = {
    "pitr-backup": ("PITR full backup (pgBackRest, zst, in the container) beside the "
                    "logical one", "`fab pitr-backup --type=full`",
                    "`fab backup` (logical, PITR on)"),
    "pitr-restore": ("PITR restore to the newest WAL (new volume, replay, swap) beside "
                     "the logical one", "`fab restore --to=latest --yes`",
                     "`fab restore --file=NAME --yes --no-safety-backup` (PITR on)"),
}


#: The volumes the PITR restores kept (the bench needs none of them).
KEPT_GO = "docker volume ls -q | grep -- '.before-pitr-' | xargs -r docker volume rm"


def inventory(bed: Any) -> Path:
    path: Path = bed.work / "inventory-pitr.yml"
    if not path.is_file():
        data = yaml.safe_load(bed.sb.inventory.read_text())
        data["hosts"][data["default_host"]]["pitr"] = {
            "image": bed.sb.env["SANDBOX_PITR_IMAGE"], "repo": f"{bed.sb.home}/pitr-repo-bench",
            "retention_full": 1}
        path.write_text(yaml.safe_dump(data))
    return path


def ensure_on(bed: Any) -> dict[str, str]:
    env = {**bed.t.env, "AIMMS_OPS_INVENTORY": str(inventory(bed))}
    if bed.sb.psql("SHOW archive_mode", "postgres") != "on":
        image = bed.sb.env["SANDBOX_PITR_IMAGE"]
        bed.sb.ssh(f"docker run --rm --network none --user 0:0 --entrypoint sh -v "
                   f"{bed.sb.home}:/h {image} -c 'rm -rf /h/pitr-repo-bench'")
        bed.fab_run("install-backups", "--yes", env=env)  # a failure ends the bench
    return env


def off(bed: Any) -> None:
    if bed.sb.ssh("test -e ~/aimms-web/docker-compose.pitr.yml", check=False).returncode:
        return
    env = {**bed.t.env, "AIMMS_OPS_INVENTORY": str(inventory(bed))}
    bed.fab_run("pitr-off", "--yes", env=env)
    bed.sb.ssh(KEPT_GO, check=False)


def backup_pair(bed: Any) -> tuple[Any, Any]:
    env = ensure_on(bed)

    def ours() -> Any:
        bed.settle()
        return bed.fab_run("pitr-backup", "--type=full", env=env)

    def anchor() -> Any:
        bed.settle()
        r = bed.fab_run("backup", "--label", "benchrun", env=env)
        bed.sb.sh(f"rm -f {bed.backup_dir}/aimms_postgres_*_benchrun.sql.*")
        return r
    return ours, anchor


def restore_pair(bed: Any) -> tuple[Any, Any]:
    env = ensure_on(bed)
    bed.fab_run("pitr-backup", "--type=full", env=env)  # the backup it restores from

    def ours() -> Any:
        bed.settle()
        bed.sb.psql("SELECT pg_switch_wal()", "postgres")
        r = bed.fab_run("restore", "--to=latest", "--yes", env=env)
        bed._restored("fab restore --to=latest")
        bed.sb.ssh(KEPT_GO, check=False)
        return r

    def anchor() -> Any:
        bed._empty()
        r = bed.fab_run("restore", f"--file={bed.src_name}", "--yes", "--no-safety-backup",
                        env=env)
        bed._restored("fab restore (PITR on)")
        return r
    return ours, anchor

"""Integration: ``compression: zstd`` against the sandbox, beside gzip backups in one dir.

A host whose inventory says ``compression: zstd`` makes ``.sql.zst`` backups (zstd on
the host, not in the container); every task reads them beside the ``.sql.gz`` ones:
list-backups and latest, verify (quick and deep), download with its checksum, restore
(a file on the host and a local one) and rebuild-volume proved exact by pg_dumpall, pins
and retention of both formats under one policy, offsite copies, and a host without zstd
that fails in one line. Each test makes the backups it needs and removes what it made.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import uuid
from pathlib import Path

import pytest
import yaml

from aimms_ops.backup import settings
from aimms_ops.host import bundle, shell
from aimms_ops.inventory import loader

from .conftest import dump_difference, fab_error_line

pytestmark = pytest.mark.integration

CHANGE = """
UPDATE orders SET total = total + 1 WHERE id % 5 = 0;
CREATE TABLE IF NOT EXISTS added_after_zstd_backup (x int);
"""


def _variant(sandbox, tmp: Path, **host: object) -> Path:
    """The sandbox inventory with ``host`` keys set on its host."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    data["hosts"][data["default_host"]].update(host)
    path = tmp / f"inv-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _backup(sandbox, inv: Path | None = None, *args: str) -> str:
    proc = sandbox.fab("backup", *args, inventory=inv)
    assert proc.returncode == 0, proc.stderr
    return next(w for w in proc.stdout.split() if w.startswith("aimms_postgres_"))


def _remote(sandbox, inv: Path | None = None) -> list[dict]:
    out = sandbox.fab("list-backups", "--json", inventory=inv).stdout
    return [b for b in json.loads(out) if b["location"] == "remote"]


@pytest.fixture(scope="module")
def zinv(sandbox, tmp_path_factory) -> Path:
    assert sandbox.fab("install-backups").returncode == 0
    return _variant(sandbox, tmp_path_factory.mktemp("zstd"), compression="zstd")


def test_a_zstd_backup_is_latest_verifies_and_downloads_beside_gzip_ones(sandbox, zinv,
                                                                         tmp_path):
    sb = sandbox
    gz = _backup(sb)
    name = _backup(sb, zinv)
    assert gz.endswith(".sql.gz") and name.endswith(".sql.zst"), (gz, name)
    path = f"{sb.home}/postgres-backups/{name}"
    # zstd's own tools read it, on the host; its .sha256 follows its full name.
    assert sb.ssh(f"zstd -q -t {path}", check=False).returncode == 0
    assert sb.ssh(f"cd {sb.home}/postgres-backups && sha256sum -c {name}.sha256",
                  check=False).returncode == 0
    tail = sb.sh(f"zstd -q -dc {path} | tail -n 3")
    assert "-- PostgreSQL database cluster dump complete" in tail
    log = sb.sh(f"tail -n 12 {sb.home}/postgres-backup.log")
    assert "compressed by zstd -1 on the host" in log and f"RESULT ok {name}" in log, log
    # Both formats are listed; latest is the newest by time, whatever its format.
    listed = [b["name"] for b in _remote(sb)]
    assert listed[0] == name and gz in listed
    quick = sb.fab("verify", "--file=latest", "--json")
    assert quick.returncode == 0, quick.stdout + quick.stderr
    report = json.loads(quick.stdout)
    assert report["file"] == name
    checks = {c["name"]: c["state"] for c in report["checks"]}
    assert checks["zstd stream"] == "OK" and checks["completion marker"] == "OK", checks
    deep = sb.fab("verify", f"--file={name}", "--deep", "--json", timeout=900)
    assert deep.returncode == 0, deep.stdout + deep.stderr
    checks = {c["name"]: c["state"] for c in json.loads(deep.stdout)["checks"]}
    assert checks["zstd stream"] == "OK" and checks["restore"] == "OK", checks
    assert checks["live restore"] == "OK", checks
    got = sb.fab("download", "--file=latest", f"--dest={tmp_path}")
    assert got.returncode == 0, got.stderr
    data = (tmp_path / name).read_bytes()
    recorded = (tmp_path / f"{name}.sha256").read_text().split()[0]
    assert hashlib.sha256(data).hexdigest() == recorded == sb.sh(
        f"sha256sum {path}").split()[0]
    status = sb.fab("status", inventory=zinv)
    assert status.returncode == 0, status.stdout


def test_a_zstd_backup_restores_exactly_from_the_host_and_from_a_local_file(sandbox, zinv,
                                                                            tmp_path):
    sb = sandbox
    name = _backup(sb, zinv)
    want, want_dump = sb.checksums(), sb.dumpall()
    sb.psql(CHANGE)
    assert sb.checksums() != want
    proc = sb.fab("restore", f"--file={name}", "--yes", inventory=zinv)
    assert proc.returncode == 0, proc.stderr
    got = sb.dumpall()
    assert sb.checksums() == want and got == want_dump, dump_difference(got, want_dump)
    # The safety copy of the changed state uses the host's compression too.
    safety = [b["name"] for b in _remote(sb, zinv) if b["name"].endswith("_pre-restore.sql.zst")]
    assert safety, "no .sql.zst safety copy"
    # A local .sql.zst is checked whole here (zstandard) before anything is touched.
    assert sb.fab("download", f"--file={name}", f"--dest={tmp_path}").returncode == 0
    sb.psql(CHANGE)
    proc = sb.fab("restore", f"--file={tmp_path / name}", "--yes", "--no-safety-backup")
    assert proc.returncode == 0, proc.stderr
    got = sb.dumpall()
    assert sb.checksums() == want and got == want_dump, dump_difference(got, want_dump)
    # A damaged local one is refused, naming its stream, with the cluster untouched.
    bad = tmp_path / name.replace(".sql.zst", "_bad.sql.zst")
    data = (tmp_path / name).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    sb.psql(CHANGE)
    changed = sb.checksums()
    proc = sb.fab("restore", f"--file={bad}", "--yes", "--no-safety-backup")
    assert proc.returncode != 0
    assert "zstd stream is damaged or truncated" in fab_error_line(proc)
    assert sb.checksums() == changed
    assert sb.fab("restore", f"--file={name}", "--yes", "--no-safety-backup").returncode == 0


def test_gzip_and_zstd_backups_are_pruned_under_one_policy(sandbox, tmp_path):
    """Both formats count together: min_keep and the day rule see one list by time."""
    sb = sandbox
    d = f"{sb.home}/zstd-prune-{uuid.uuid4().hex[:8]}"
    gz_inv = _variant(sb, tmp_path, backup_dir=d, retention_days=7, min_keep=2)
    z_inv = _variant(sb, tmp_path, backup_dir=d, retention_days=7, min_keep=2,
                     compression="zstd")
    try:
        gz, zst = _backup(sb, gz_inv, "--label=p"), _backup(sb, z_inv, "--label=p")
        # Older copies of each, by name and time: two of each format.
        olds = {}
        for days, src in ((20, gz), (21, zst), (30, zst), (31, gz)):
            stamp = f"202001{days:02d}_020000"
            old = src.replace(src[15:30], stamp)
            olds[old] = days
            q = shlex.quote
            sb.ssh(f"cd {q(d)} && cp -p {q(src)} {q(old)} && "
                   f"sed 's/{src}/{old}/' {q(src)}.sha256 > {q(old)}.sha256 && "
                   f"touch -d '-{days} days' {q(old)} {q(old)}.sha256")
        sb.ssh(f"cd {shlex.quote(d)} && touch -d '-9 days' {shlex.quote(gz)}")
        # A pin follows the backup's full name, whatever its format.
        pinned = next(o for o, days in olds.items() if days == 30)
        got = sb.fab("pin", f"--file={pinned}", "--reason=zstd kept", inventory=z_inv)
        assert got.returncode == 0, got.stderr
        assert sb.ssh(f"test -s {shlex.quote(d)}/{pinned}.pin", check=False).returncode == 0
        plan = sb.fab("prune", "--dry-run", "--json", inventory=z_inv)
        assert plan.returncode == 0, plan.stderr
        decided = {p["name"]: p for p in json.loads(plan.stdout)}
        # the zst is the newest, the gz the second newest (9 days old: min_keep keeps it)
        assert decided[zst]["action"] == "keep" and decided[gz]["action"] == "keep"
        assert decided[gz]["rule"] == "min_keep", decided[gz]
        assert decided[pinned]["action"] == "keep" and decided[pinned]["rule"] == "pinned"
        for old in set(olds) - {pinned}:
            assert decided[old]["action"] == "remove", decided[old]
        proc = sb.fab("prune", "--yes", inventory=gz_inv)
        assert proc.returncode == 0, proc.stderr
        left = sb.sh(f"ls -1A {shlex.quote(d)}").split()
        assert sorted(n for n in left if not n.startswith(".")) == sorted(
            [gz, f"{gz}.sha256", zst, f"{zst}.sha256", pinned, f"{pinned}.sha256",
             f"{pinned}.pin"])
    finally:
        sb.ssh(f"rm -rf -- {shlex.quote(d)}", check=False)


def test_a_zstd_host_without_zstd_fails_in_one_line_and_publishes_nothing(sandbox, zinv):
    """The backup never falls back to another format: it names zstd and the fix."""
    sb = sandbox
    host = loader.load(zinv).host(None)
    tag = uuid.uuid4().hex[:8]
    bin_dir, script = f"/tmp/aimms-ops-nozstd-{tag}", f"/tmp/aimms-ops-nozstd-{tag}.sh"
    sb.ssh(f"cat > {script}", input=shell.script_text("backup-postgres.sh").encode())
    program = f"{bin_dir}.pyz"  # the host program, named for the script below
    sb.ssh(f"cat > {program}", input=bundle.program())
    # Every command of the host but zstd's.
    sb.ssh(f"mkdir -p {bin_dir} && for f in /usr/bin/* /usr/local/bin/*; do "
           f"case ${{f##*/}} in zstd*|unzstd|zstdcat|zstdmt) continue ;; esac; "
           f"ln -sf \"$f\" {bin_dir}/; done")
    # The lock files a run creates (and keeps, as flock wants) are not a backup.
    listing = f"ls -1A {host.backup_dir} | grep -v '^\\.[a-z]*\\.lock$' || true"
    before = sb.sh(listing)
    try:
        args = " ".join(shell.quote(a) for a in settings.script_args(host, "--no-prune"))
        proc = sb.ssh(f"PATH={bin_dir} AIMMS_OPS_PROGRAM={program} bash {script} {args}",
                      check=False)
        err = [ln for ln in proc.stderr.decode().splitlines() if ln.strip()]
        assert proc.returncode == 1, proc.stderr
        assert err == ["backup failed: compression is zstd but zstd is not installed on the "
                       "host (install zstd there, or set compression: gzip in the inventory)"]
        assert sb.sh(listing) == before
        # doctor, with the same PATH for its facts, says the same as a CRITICAL finding.
        facts = sb.ssh(f"PATH={bin_dir} python3 {program} status-facts "
                       f"{host.compose.project} {host.compose.postgres_service} "
                       f"{host.backup_script} {host.layout.config_file} "
                       f"{host.layout.verify_script} {host.layout.install_record} "
                       f"{host.log_file}", check=False).stdout.decode()
        from aimms_ops.host.events import facts as read_facts
        from aimms_ops.monitor.compressor import compressor_check

        extra = {k: v for k, v in read_facts(facts, "status-facts", "the sandbox").items()
                 if k.startswith("compressor.")}
        found = compressor_check(extra, "zstd")
        assert found is not None and found.state.name == "CRITICAL", extra
    finally:
        sb.ssh(f"rm -rf -- {bin_dir} {script} {program}", check=False)


def test_doctor_reports_zstd_on_a_zstd_host(sandbox, zinv):
    sb = sandbox
    try:
        assert sb.fab("install-backups", inventory=zinv).returncode == 0
        conf = sb.sh(f"cat {sb.home}/backup-postgres.sh.conf")
        assert "COMPRESSION=zstd" in conf.splitlines()
        _backup(sb, zinv)
        proc = sb.fab("doctor", inventory=zinv)
        assert "zstd -T0 (compression: zstd, .sql.zst)" in " ".join(proc.stdout.split()), \
            proc.stdout
        assert proc.returncode == 0, proc.stdout
    finally:
        assert sb.fab("install-backups").returncode == 0


def test_a_zstd_backup_goes_offsite_under_its_own_name_and_restores_from_there(sandbox,
                                                                              tmp_path):
    """The copy is NAME.age of the .sql.zst; verify --offsite and restore --from read it."""
    pytest.importorskip("pyrage")
    from .test_offsite import Offsite

    off = Offsite(sandbox)
    inv = off.variant(tmp_path, lambda h: h.update(compression="zstd"))
    try:
        off.install(inv)
        off.fresh()
        before = sandbox.dumpall()
        name, proc = off.backup(inv)
        assert name.endswith(".sql.zst"), name
        assert "RESULT offsite s3 ok" in proc.stderr and "RESULT offsite vault ok" in proc.stderr
        for target in ("s3", "vault"):
            assert (off.dir_of(target) / f"{name}.age").is_file(), target
            meta = off.meta(target, name)
            assert meta["plaintext_sha256"] == hashlib.sha256(off.local_bytes(name)).hexdigest()
        got = off.fab("verify", "--offsite", inventory=inv)
        assert got.returncode == 0, got.stdout + got.stderr
        assert " ".join(got.stdout.split()).count("zstd stream and completion marker OK") == 2
        sandbox.psql(CHANGE)
        off.clear_backups()
        proc = off.fab("restore", "--file=latest", "--from=s3", "--yes", "--no-safety-backup",
                       f"--identity={off.env['SANDBOX_AGE_IDENTITY']}", inventory=inv)
        assert proc.returncode == 0, proc.stderr
        assert sandbox.dumpall() == before
    finally:
        off.fresh()
        assert sandbox.fab("install-backups").returncode == 0


def test_rebuild_volume_from_a_zstd_backup_is_exact(sandbox, zinv):
    """The emergency sequence with a .sql.zst: the host decompresses it with zstd -dc."""
    from .test_rebuild import backup_dir, content, kept, wreck

    sb = sandbox
    sb.wait_ready()
    name = _backup(sb, zinv)
    before = content(sb)
    plan = sb.fab("rebuild-volume", f"--file={name}", "--dry-run", inventory=zinv)
    assert plan.returncode == 0, plan.stderr
    # The backup's own properties of template1 and postgres: the live ones are not read.
    assert re.search(r"restore-stream\.sh --raw-size \d+ --props-in-dump aimms-web postgres "
                     r"postgres zst "
                     + re.escape(f"{backup_dir(sb)}/{name}"), plan.stdout), plan.stdout
    old_kept = kept(sb)
    try:
        wreck(sb)
        proc = sb.fab("rebuild-volume", f"--file={name}", "--yes", inventory=zinv, timeout=900)
        assert proc.returncode == 0, proc.stderr
        sb.wait_ready(timeout=5)
        assert content(sb) == before
    finally:
        for vol in kept(sb) - old_kept:
            sb.ssh(f"docker volume rm {vol}", check=False)
        sb.wait_ready(timeout=120)

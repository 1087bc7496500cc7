"""The read-only facts of the host for the operator's checks, as ``key=value`` lines:

- ``facts PROJECT_DIR COMPOSE_FILE PROJECT SERVICE SUPERUSER BACKUP_DIR VOLUME...``: what
  ``fab check``, status, doctor, volumes, restore and rebuild-volume read of the stack;
- ``list-backups BACKUP_DIR``: ``MTIME<TAB>SIZE<TAB>NAME<TAB>SHA256|-<TAB>PIN-B64|-`` per
  backup (every compression), newest first; ``missing`` alone without the dir;
- ``volume-facts``: the volumes and containers of the engine, tab-separated tagged lines
  (``api=``, ``vol=``, ``ctr=``, ``size=``, ``kept=``), for ``fab volumes``;
- ``rebuild-facts VOLUME IMAGE STATE_FILE KEEP_VOLUME``: what rebuild-volume's preflight
  needs beyond ``facts``; the volume measured by a throwaway container of IMAGE (no
  network) that mounts it read-only.
"""

import argparse
import fnmatch
import os
import shutil
import socket
from typing import Any, List

from aimms_ops.agent import cluster
from aimms_ops.agent.hostfacts import b64, emit, inspect, last_line, login, now_utc, raw, run
from aimms_ops.core import lock as core_lock
from aimms_ops.core import retention

#: The label of a volume kept by a rebuild (aimms_ops.rebuild).
KEPT_LABEL = "org.aimms-ops.kept-from"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("facts", help="the stack's facts for the checks (key=value lines)")
    for name in ("project_dir", "compose_file", "project", "service", "superuser",
                 "backup_dir"):
        p.add_argument(name)
    p.add_argument("volumes", nargs="*")
    p.set_defaults(run=facts)
    p = sub.add_parser("list-backups", help="the backups, newest first")
    p.add_argument("dir")
    p.set_defaults(run=list_backups)
    p = sub.add_parser("volume-facts", help="the engine's volumes and containers")
    p.set_defaults(run=volume_facts)
    p = sub.add_parser("rebuild-facts", help="what rebuild-volume's preflight needs")
    for name in ("volume", "image", "state", "keep"):
        p.add_argument(name)
    p.set_defaults(run=rebuild_facts)


def compose_cmd() -> List[str]:
    """``docker compose`` (v2) or ``docker-compose`` (v1); empty when neither."""
    if run(["docker", "compose", "version"])[0] == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return []


def facts(args: argparse.Namespace) -> int:
    emit("ssh.user", login())
    emit("ssh.hostname", socket.gethostname())
    emit("time.now", now_utc())
    rc, out = run(["docker", "version", "--format", "{{.Server.Version}}"], merged=True)
    if rc == 0:
        emit("docker.ok", "1")
        emit("docker.version", out.rstrip(b"\n"))
    else:
        emit("docker.ok", "0")
        emit("docker.error", last_line(out))
    exists = os.path.isfile(args.compose_file)
    emit("compose.file_exists", "1" if exists else "0")
    compose = compose_cmd()
    emit("compose.cmd", " ".join(compose))
    if compose and exists:
        rc, out = run([*compose, "-f", args.compose_file, "-p", args.project, "config"],
                      merged=True, cwd=args.project_dir)
        if rc == 0:
            emit("compose.config_ok", "1")
            emit("compose.config_b64", b64(out.rstrip(b"\n")))
        else:
            emit("compose.config_ok", "0")
            emit("compose.config_error", last_line(out))
    _container_facts(args.project, args.service, args.superuser)
    for vol in args.volumes:
        rc, out = run(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", vol])
        if rc != 0:
            emit("volume.%s.exists" % vol, "0")
            continue
        emit("volume.%s.exists" % vol, "1")
        emit("volume.%s.mountpoint" % vol, out.rstrip(b"\n"))
        users = run(["docker", "ps", "-a", "--filter", "volume=" + vol, "--format",
                     "{{.Names}}"])[1]
        emit("volume.%s.used_by" % vol, b",".join(users.split()))
    _backup_dir_facts(args.backup_dir)
    return 0


def _container_facts(project: str, service: str, superuser: str) -> None:
    cid = cluster.container(project, service, stopped=True)
    emit("container.id", cid)
    if not cid:
        return
    inspect(cid, [("container.name", ".Name"), ("container.state", ".State.Status"),
                  ("container.started_at", ".State.StartedAt"),
                  ("container.image", ".Config.Image"),
                  ("container.restart_count", ".RestartCount")])
    rc, out = run(["docker", "exec", cid, "pg_isready", "-U", superuser], merged=True)
    emit("postgres.ready", "1" if rc == 0 else "0")
    emit("postgres.ready_detail", last_line(out))
    # Every database of the cluster (names as hex), for the backups' coverage.
    rc, out = run(["docker", "exec", cid, "psql", "-X", "-A", "-t", "-U", superuser, "-d",
                   "template1", "-c", "SELECT encode(textsend(datname), 'hex') "
                   "FROM pg_database ORDER BY 1"])
    if rc == 0:
        emit("postgres.databases", b" ".join(out.split()))


def _backup_dir_facts(directory: str) -> None:
    if not os.path.isdir(directory):
        emit("backup_dir.exists", "0")
        return
    emit("backup_dir.exists", "1")
    emit("backup_dir.writable", "1" if os.access(directory, os.W_OK) else "0")
    try:
        st = os.statvfs(directory)
        emit("backup_dir.avail_kb", str(st.f_bavail * st.f_frsize // 1024))
        emit("backup_dir.size_kb", str(st.f_blocks * st.f_frsize // 1024))
    except OSError:
        pass
    # The pids that hold the backup lock now (a note of a live process).
    lock = os.path.join(directory, core_lock.LOCK_FILES["backup"])
    emit("lock.backup.live", " ".join(str(p) for p in core_lock.live_pids(lock)))


def _first(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def list_backups(args: argparse.Namespace) -> int:
    directory = args.dir
    if not os.path.isdir(directory):
        print("missing")
        return 0
    globs = ["aimms_postgres_*" + ext for _, ext in retention.EXTENSIONS]
    rows = []
    with os.scandir(directory) as it:
        for e in it:
            if any(fnmatch.fnmatchcase(e.name, g) for g in globs) and \
                    e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                rows.append((st.st_mtime, st.st_size, e.name))
    rows.sort(key=lambda r: (-r[0], r[2]))
    for mtime, size, name in rows:
        path = os.path.join(directory, name)
        words = _first(path + ".sha256", 65536).split(b"\n", 1)[0].split(b" ", 1)
        total = words[0].decode("ascii", "replace") or "-"
        pin = b64(_first(path + ".pin", 4096)) or "-"
        raw("%d\t%d\t%s\t%s\t%s\n" % (int(mtime), size, name, total, pin))
    return 0


def volume_facts(args: argparse.Namespace) -> int:
    def out(*argv: str) -> bytes:
        return run(["docker", *argv])[1]

    server = out("version", "--format", "{{.Server.APIVersion}}").strip()
    client = out("version", "--format", "{{.Client.APIVersion}}").strip()
    raw(b"api=" + server + b"\t" + client + b"\n")
    raw(out("volume", "ls", "--format",
            "vol={{.Name}}\t{{.Driver}}\t{{.Mountpoint}}\t{{.Labels}}"))
    raw(out("ps", "-a", "--no-trunc", "--format",
            "ctr={{.Names}}\t{{.State}}\t{{.Mounts}}\t"
            '{{.Label "com.docker.compose.project"}}\t{{.Label "com.docker.compose.service"}}'))
    raw(out("system", "df", "-v", "--format",
            '{{range .Volumes}}size={{.Name}}{{"\\t"}}{{.Size}}{{println}}{{end}}'))
    kept = out("volume", "ls", "-q", "--filter", "label=" + KEPT_LABEL).decode().split()
    if kept:
        raw(out("volume", "inspect", "--format",
                'kept={{.Name}}\t{{index .Labels "%s"}}\t{{.CreatedAt}}' % KEPT_LABEL, *kept))
    return 0


#: Run in the throwaway container: the volume's size and the free space beside it (KiB).
MEASURE_SH = 'du -sk /from | cut -f1; df -Pk /from | awk "NR == 2 { print \\$4 }"'


def rebuild_facts(args: argparse.Namespace) -> int:
    vol, image = args.volume, args.image
    emit("docker.root", run(["docker", "info", "--format", "{{.DockerRootDir}}"])[1]
         .rstrip(b"\n"))
    have_image = bool(image) and run(["docker", "image", "inspect", image])[0] == 0
    emit("image.present", "1" if have_image else "0")
    rc, spec = run(["docker", "volume", "inspect", "--format", "{{json .}}", vol])
    if rc == 0:
        emit("volume.exists", "1")
        emit("volume.json", spec.rstrip(b"\n"))
        raw(run(["docker", "ps", "-a", "--filter", "volume=" + vol, "--format",
                 'volume.user={{.Names}}\t{{.Label "com.docker.compose.project"}}\t'
                 '{{.Label "com.docker.compose.service"}}'])[1])
        if have_image:
            rc, out = run(["docker", "run", "--rm", "--network", "none", "--user", "0:0",
                           "--entrypoint", "sh", "-v", vol + ":/from:ro", image, "-c",
                           MEASURE_SH], merged=True)
            if rc == 0:
                lines = [*out.split(b"\n"), b"", b""]
                emit("volume.size_kb", lines[0])
                emit("volume.avail_kb", lines[1])
            else:
                emit("volume.measure_error", last_line(out))
    else:
        emit("volume.exists", "0")
    emit("keep.exists", "1" if run(["docker", "volume", "inspect", args.keep])[0] == 0 else "0")
    if os.path.isfile(args.state):
        emit("state.exists", "1")
        emit("state.b64", b64(_first(args.state, 1 << 24)))
    else:
        emit("state.exists", "0")
    return 0

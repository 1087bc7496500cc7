"""The read-only facts of the host for the operator's checks, each command's as one
``facts`` event (``aimms_ops.core.events``; ``hostfacts.Report``):

- ``facts PROJECT_DIR COMPOSE_FILE PROJECT SERVICE SUPERUSER BACKUP_DIR VOLUME...``: what
  ``fab check``, status, doctor, volumes, restore and rebuild-volume read of the stack;
- ``list-backups BACKUP_DIR``: ``dir.exists`` and ``backups``, a list of ``name``,
  ``mtime``, ``size``, ``sha256`` (null: none recorded) and ``pin`` (the pin file's text,
  or null), every compression, newest first;
- ``volume-facts``: the engine's ``api`` (server and client), ``volumes``, ``containers``,
  ``sizes`` and ``kept`` volumes, for ``fab volumes``;
- ``rebuild-facts VOLUME IMAGE STATE_FILE KEEP_VOLUME``: what rebuild-volume's preflight
  needs beyond ``facts``; the volume measured by a throwaway container of IMAGE (no
  network) that mounts it read-only.
"""

import argparse
import fnmatch
import os
import shutil
import socket
from typing import Any, Dict, List, Tuple

from aimms_ops.agent import cluster
from aimms_ops.agent.hostfacts import Report, inspect, last_line, login, now_utc, run, text
from aimms_ops.core import lock as core_lock
from aimms_ops.core import retention
from aimms_ops.core.layout import KEPT_LABEL

#: The label of a volume kept by a rebuild (aimms_ops.rebuild).


def add_commands(sub: Any) -> None:
    p = sub.add_parser("facts", help="the stack's facts for the checks")
    for name in ("project_dir", "compose_file", "project", "service", "superuser",
                 "backup_dir"):
        p.add_argument(name)
    p.add_argument("volumes", nargs="*")
    p.add_argument("--no-config", action="store_true",
                   help="skip compose config (its facts are then absent)")
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
    out = Report("facts")
    stack_facts(out, args)
    return out.send()


def stack_facts(out: Report, args: argparse.Namespace) -> None:
    """The facts of ``facts`` (``args``: its arguments) into ``out``."""
    out.put("ssh.user", login())
    out.put("ssh.hostname", socket.gethostname())
    out.put("time.now", now_utc())
    rc, data = run(["docker", "version", "--format", "{{.Server.Version}}"], merged=True)
    if rc == 0:
        out.put("docker.ok", "1")
        out.put("docker.version", data.rstrip(b"\n"))
    else:
        out.put("docker.ok", "0")
        out.put("docker.error", last_line(data))
    exists = os.path.isfile(args.compose_file)
    out.put("compose.file_exists", "1" if exists else "0")
    compose = compose_cmd()
    out.put("compose.cmd", " ".join(compose))
    if compose and exists and not args.no_config:
        rc, data = run([*compose, "-f", args.compose_file, "-p", args.project, "config"],
                       merged=True, cwd=args.project_dir)
        if rc == 0:
            out.put("compose.config_ok", "1")
            out.put("compose.config", data.rstrip(b"\n"))
        else:
            out.put("compose.config_ok", "0")
            out.put("compose.config_error", last_line(data))
    _container_facts(out, args.project, args.service, args.superuser)
    _volume_facts(out, args.volumes)
    _backup_dir_facts(out, args.backup_dir)


def _volume_facts(out: Report, volumes: List[str]) -> None:
    """Whether each volume exists, where, and the containers (any, stopped too) that
    mount it: two ``docker`` calls for all of them."""
    if not volumes:
        return
    data = run(["docker", "volume", "inspect", "--format", "{{.Name}}\t{{.Mountpoint}}",
                *volumes])[1]  # exits 1 when one is missing, and lists the others
    found = dict(line.split(b"\t", 1) for line in data.splitlines() if b"\t" in line)
    users: Dict[bytes, List[bytes]] = {}
    if found:
        listing = run(["docker", "ps", "-a", "--no-trunc", "--format",
                       "{{.Names}}\t{{.Mounts}}"])[1]
        for line in listing.splitlines():
            name, _, mounts = line.partition(b"\t")
            for mount in mounts.split(b","):
                users.setdefault(mount.strip(), []).append(name)
    for vol in volumes:
        key = vol.encode("utf-8", "surrogateescape")
        if key not in found:
            out.put("volume.%s.exists" % vol, "0")
            continue
        out.put("volume.%s.exists" % vol, "1")
        out.put("volume.%s.mountpoint" % vol, found[key])
        out.put("volume.%s.used_by" % vol, b",".join(users.get(key, [])))


def _container_facts(out: Report, project: str, service: str, superuser: str) -> None:
    cid = cluster.container(project, service, stopped=True)
    out.put("container.id", cid)
    if not cid:
        return
    inspect(out, cid, [("container.name", "Name"), ("container.state", "State.Status"),
                       ("container.started_at", "State.StartedAt"),
                       ("container.image", "Config.Image"),
                       ("container.restart_count", "RestartCount")])
    # Every database of the cluster (read as hex: a name may hold any byte but NUL), for
    # the backups' coverage. Read, postgres accepts connections; else pg_isready says why.
    rc, data = run(["docker", "exec", cid, "psql", "-X", "-A", "-t", "-U", superuser, "-d",
                    "template1", "-c", "SELECT encode(textsend(datname), 'hex') "
                    "FROM pg_database ORDER BY 1"])
    if rc != 0:
        ready, detail = run(["docker", "exec", cid, "pg_isready", "-U", superuser], merged=True)
        out.put("postgres.ready", "1" if ready == 0 else "0")
        out.put("postgres.ready_detail", last_line(detail))
        return
    out.put("postgres.ready", "1")
    out.put("postgres.ready_detail", "accepting connections")
    try:
        out.put("postgres.databases", [text(bytes.fromhex(h.decode("ascii")))
                                       for h in data.split()])
    except ValueError:
        pass


def _backup_dir_facts(out: Report, directory: str) -> None:
    if not os.path.isdir(directory):
        out.put("backup_dir.exists", "0")
        return
    out.put("backup_dir.exists", "1")
    out.put("backup_dir.writable", "1" if os.access(directory, os.W_OK) else "0")
    try:
        st = os.statvfs(directory)
        out.put("backup_dir.avail_kb", str(st.f_bavail * st.f_frsize // 1024))
        out.put("backup_dir.size_kb", str(st.f_blocks * st.f_frsize // 1024))
    except OSError:
        pass
    # The pids that hold the backup lock now (a note of a live process).
    lock = os.path.join(directory, core_lock.LOCK_FILES["backup"])
    out.put("lock.backup.live", " ".join(str(p) for p in core_lock.live_pids(lock)))


def _first(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def list_backups(args: argparse.Namespace) -> int:
    out = Report("list-backups")
    backup_facts(out, args.dir)
    return out.send()


def backup_facts(out: Report, directory: str) -> None:
    """The backups in ``directory``, newest first, into ``out``."""
    if not os.path.isdir(directory):
        out.put("dir.exists", "0")
        return
    out.put("dir.exists", "1")
    globs = ["aimms_postgres_*" + ext for _, ext in retention.EXTENSIONS]
    rows = []
    with os.scandir(directory) as it:
        for e in it:
            if any(fnmatch.fnmatchcase(e.name, g) for g in globs) and \
                    e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                rows.append((st.st_mtime, st.st_size, e.name))
    rows.sort(key=lambda r: (-r[0], r[2]))
    found = []
    for mtime, size, name in rows:
        path = os.path.join(directory, name)
        words = _first(path + ".sha256", 65536).split(b"\n", 1)[0].split(b" ", 1)
        pin = _first(path + ".pin", 4096)
        found.append({"name": name, "mtime": int(mtime), "size": size,
                      "sha256": words[0].decode("ascii", "replace") or None,
                      "pin": text(pin) if pin else None})
    out.put("backups", found)


def _rows(data: bytes, tag: str, names: Tuple[str, ...]) -> List[Dict[str, str]]:
    """The lines of docker's ``--format`` output that start with ``tag=``, their
    tab-separated fields by ``names`` (missing ones empty)."""
    rows = []
    for raw in data.split(b"\n"):
        if raw.startswith(tag.encode() + b"="):
            fields = text(raw[len(tag) + 1:]).split("\t") + [""] * len(names)
            rows.append({name: fields[i] for i, name in enumerate(names)})
    return rows


#: What volume-facts reads of docker: the fields of each row, and their --format.
VOLUMES = ("name", "driver", "mountpoint", "labels")
VOLUMES_FMT = "vol={{.Name}}\t{{.Driver}}\t{{.Mountpoint}}\t{{.Labels}}"
CONTAINERS = ("name", "state", "mounts", "project", "service")
CONTAINERS_FMT = ("ctr={{.Names}}\t{{.State}}\t{{.Mounts}}\t"
                  '{{.Label "com.docker.compose.project"}}\t'
                  '{{.Label "com.docker.compose.service"}}')
SIZES_FMT = '{{range .Volumes}}size={{.Name}}{{"\\t"}}{{.Size}}{{println}}{{end}}'
KEPT = ("name", "from", "created")
KEPT_FMT = 'kept={{.Name}}\t{{index .Labels "%s"}}\t{{.CreatedAt}}' % KEPT_LABEL


def volume_facts(args: argparse.Namespace) -> int:
    def docker(*argv: str) -> bytes:
        return run(["docker", *argv])[1]

    out = Report("volume-facts")
    out.put("api", [text(docker("version", "--format", "{{.%s.APIVersion}}" % side).strip())
                    for side in ("Server", "Client")])
    out.put("volumes", _rows(docker("volume", "ls", "--format", VOLUMES_FMT), "vol", VOLUMES))
    out.put("containers", _rows(docker("ps", "-a", "--no-trunc", "--format", CONTAINERS_FMT),
                                "ctr", CONTAINERS))
    sizes = _rows(docker("system", "df", "-v", "--format", SIZES_FMT), "size",
                  ("name", "size"))
    out.put("sizes", {row["name"]: row["size"] for row in sizes})
    kept = text(docker("volume", "ls", "-q", "--filter", "label=" + KEPT_LABEL)).split()
    out.put("kept", _rows(docker("volume", "inspect", "--format", KEPT_FMT, *kept), "kept",
                          KEPT) if kept else [])
    return out.send()


#: Run in the throwaway container: the volume's size and the free space beside it (KiB).
MEASURE_SH = 'du -sk /from | cut -f1; df -Pk /from | awk "NR == 2 { print \\$4 }"'


def rebuild_facts(args: argparse.Namespace) -> int:
    vol, image = args.volume, args.image
    out = Report("rebuild-facts")
    out.put("docker.root", run(["docker", "info", "--format", "{{.DockerRootDir}}"])[1]
            .rstrip(b"\n"))
    have_image = bool(image) and run(["docker", "image", "inspect", image])[0] == 0
    out.put("image.present", "1" if have_image else "0")
    rc, spec = run(["docker", "volume", "inspect", "--format", "{{json .}}", vol])
    if rc == 0:
        out.put("volume.exists", "1")
        out.put("volume.json", spec.rstrip(b"\n"))
        users = run(["docker", "ps", "-a", "--filter", "volume=" + vol, "--format",
                     'user={{.Names}}\t{{.Label "com.docker.compose.project"}}\t'
                     '{{.Label "com.docker.compose.service"}}'])[1]
        out.put("volume.users", _rows(users, "user", ("name", "project", "service")))
        if have_image:
            rc, data = run(["docker", "run", "--rm", "--network", "none", "--user", "0:0",
                            "--entrypoint", "sh", "-v", vol + ":/from:ro", image, "-c",
                            MEASURE_SH], merged=True)
            if rc == 0:
                lines = [*data.split(b"\n"), b"", b""]
                out.put("volume.size_kb", lines[0])
                out.put("volume.avail_kb", lines[1])
            else:
                out.put("volume.measure_error", last_line(data))
    else:
        out.put("volume.exists", "0")
    out.put("keep.exists", "1" if run(["docker", "volume", "inspect", args.keep])[0] == 0
            else "0")
    if os.path.isfile(args.state):
        out.put("state", _first(args.state, 1 << 24))
    return out.send()

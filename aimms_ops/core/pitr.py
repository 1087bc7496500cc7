"""Point-in-time recovery on pgBackRest: the facts both sides share (stdlib only).

PITR is a second kind of backup beside the logical dumps. pgBackRest runs inside the
postgres container (``archive_command`` runs there), so the container runs a derived
image: the live image plus Debian's ``pgbackrest``. A compose override beside the
operator's compose file names that image, mounts the repository (a folder on the host)
and sets pgBackRest's options as ``PGBACKREST_*`` variables; the archive settings are
kept with ``ALTER SYSTEM`` in the data volume. The cipher passphrase lives in an env
file on the host (mode 0600) that never leaves it.

A ``docker-compose -f docker-compose.prod.yml up -d`` without the override puts the
official image back: ``archive_command`` then fails, PostgreSQL keeps every WAL segment
it could not archive (none is lost) and ``fab status`` is CRITICAL at once, naming the
command that starts the stack with the override again.
"""

import json
import posixpath
from typing import Any, Dict, List, Optional, Tuple

#: pgBackRest's name for the cluster.
STANZA = "aimms"
#: The compose override, beside the operator's compose file.
OVERRIDE_FILE = "docker-compose.pitr.yml"
#: The env file with the repository's cipher passphrase, beside the override.
SECRET_FILE = ".pitr.env"  # noqa: S105 - a file name
#: Where the repository is mounted in the container.
REPO_IN_CONTAINER = "/var/lib/pgbackrest"
#: The settings PITR keeps with ALTER SYSTEM (archive_mode needs a restart).
ARCHIVE_SETTINGS = (
    ("archive_mode", "on"),
    ("archive_command", "pgbackrest archive-push %p"),
    ("archive_timeout", "60"),
)
#: The derived image's tag, from the live image's id (production builds it).
IMAGE_REPOSITORY = "aimms-ops/postgres-pitr"
#: Labels on what a PITR restore creates.
RESTORE_LABEL = "org.aimms-ops.pitr-restore"
#: Seconds the newest archived WAL may be older than the newest WAL ready to archive
#: before status is CRITICAL (archive_timeout forces a switch every 60 s under writes).
MAX_WAL_LAG = 120
#: Seconds the offsite copy of the repository may be old (cron copies it every minute).
MAX_PUSH_AGE = 600


def image_tag(live_image_id: str) -> str:
    """The derived image built from the live image ``live_image_id`` (sha256:...)."""
    short = live_image_id.split(":")[-1][:12] or "latest"
    return "%s:%s" % (IMAGE_REPOSITORY, short)


def dockerfile(base_image: str) -> str:
    """The derived image: the live postgres image plus Debian's pgbackrest."""
    return ("# Written by aimms-ops (PITR): the live postgres image plus pgBackRest.\n"
            "FROM %s\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends pgbackrest \\\n"
            "    && rm -rf /var/lib/apt/lists/* && pgbackrest version\n" % base_image)


def pgbackrest_env(retention_full: int) -> List[Tuple[str, str]]:
    """pgBackRest's options as the container's environment (not secret)."""
    return [
        ("PGBACKREST_STANZA", STANZA),
        ("PGBACKREST_PG1_PATH", "/var/lib/postgresql/data"),
        ("PGBACKREST_REPO1_PATH", REPO_IN_CONTAINER),
        ("PGBACKREST_REPO1_RETENTION_FULL", str(retention_full)),
        ("PGBACKREST_REPO1_CIPHER_TYPE", "aes-256-cbc"),
        ("PGBACKREST_COMPRESS_TYPE", "zst"),
        ("PGBACKREST_START_FAST", "y"),
        ("PGBACKREST_ARCHIVE_ASYNC", "n"),
        ("PGBACKREST_LOG_LEVEL_CONSOLE", "warn"),
        ("PGBACKREST_LOG_LEVEL_FILE", "off"),
        ("PGBACKREST_PROCESS_MAX", "2"),
    ]


def _q(value: str) -> str:
    """A YAML scalar in double quotes (JSON's escapes are YAML's)."""
    return json.dumps(value)


def override_text(version: str, service: str, image: str, repo_dir: str, secret_file: str,
                  pgdata: str, retention_full: int) -> str:
    """The compose override that turns PITR on for ``service`` (pure)."""
    lines = ["# Written by aimms-ops (fab install-backups, pitr:). Start the stack with it:",
             "#   docker-compose -f <your compose file> -f %s up -d" % OVERRIDE_FILE,
             "# Without it PostgreSQL stops archiving WAL (fab status says so at once)."]
    if version:
        lines.append("version: %s" % _q(version))
    lines += ["services:", "  %s:" % service, "    image: %s" % _q(image),
              "    env_file:", "      - %s" % _q(secret_file), "    environment:"]
    env = [(k, v) for k, v in pgbackrest_env(retention_full) if k != "PGBACKREST_PG1_PATH"]
    env.append(("PGBACKREST_PG1_PATH", pgdata))
    lines += ["      %s: %s" % (k, _q(v)) for k, v in env]
    lines += ["    volumes:", "      - %s" % _q("%s:%s" % (repo_dir, REPO_IN_CONTAINER))]
    return "\n".join(lines) + "\n"


def push_args(config: str, target: str, repo: str, *extra: str) -> List[str]:
    """The host program's arguments that copy the repository ``repo`` to ``target``."""
    return ["pitr-push", "--config", config, "--target", target, "--repo", repo, *extra]


def override_path(compose_file_path: str) -> str:
    """The override beside the compose file at ``compose_file_path``."""
    return posixpath.join(posixpath.dirname(compose_file_path), OVERRIDE_FILE)


def secret_path(compose_file_path: str) -> str:
    return posixpath.join(posixpath.dirname(compose_file_path), SECRET_FILE)


# ------------------------------------------------------------------ what the repository holds

def window(info: List[Dict[str, Any]]) -> Dict[str, Any]:
    """From ``pgbackrest info --output=json``: the backups (label, type, start, stop, size)
    and the oldest point a restore can reach (the oldest backup's end)."""
    backups: List[Dict[str, Any]] = []
    status = ""
    for stanza in info or []:
        if stanza.get("name") != STANZA:
            continue
        status = (stanza.get("status") or {}).get("message", "")
        for b in stanza.get("backup") or []:
            ts = b.get("timestamp") or {}
            backups.append({"label": b.get("label"), "type": b.get("type"),
                            "start": ts.get("start"), "stop": ts.get("stop"),
                            "size": (b.get("info") or {}).get("size"),
                            "repo_size": ((b.get("info") or {}).get("repository") or {})
                            .get("delta"),
                            "error": bool(b.get("error"))})
    good = [b for b in backups if not b["error"] and b["stop"]]
    return {"status": status, "backups": backups,
            "oldest": min((b["stop"] for b in good), default=None),
            "newest_backup": max((b["stop"] for b in good), default=None)}


def judge(facts: Dict[str, Any], max_lag: int = MAX_WAL_LAG,
          offsite: Optional[str] = None) -> Tuple[str, str, str]:
    """(state, detail, fix) of continuous archiving from the host's ``pitr`` facts:
    OK, WARNING (no PITR backup yet) or CRITICAL (archiving stopped or falls behind)."""
    if not facts.get("container"):
        return "CRITICAL", "the postgres container is not running", ""
    if not facts.get("pgbackrest"):
        return ("CRITICAL", "archiving stopped: the postgres container runs %s, which has "
                "no pgbackrest (started without %s)" % (facts.get("image") or "?",
                                                       OVERRIDE_FILE), "start")
    if facts.get("archive_mode") != "on":
        return ("CRITICAL", "archiving is off (archive_mode=%s): PostgreSQL was not "
                "restarted since PITR was enabled" % facts.get("archive_mode"), "start")
    if facts.get("archive_command") != dict(ARCHIVE_SETTINGS)["archive_command"]:
        return ("CRITICAL", "archive_command is %r, not aimms-ops' one"
                % facts.get("archive_command"), "install")
    ready_age = facts.get("oldest_ready_age")
    failed, archived = facts.get("last_failed_time"), facts.get("last_archived_time")
    if ready_age is not None and failed and (not archived or failed >= archived):
        return ("CRITICAL", "archiving fails: %s could not be archived (%s failures; "
                "PostgreSQL keeps it and retries)" % (facts.get("last_failed_wal") or
                                                       "a segment", facts.get("failed_count")),
                "repo")
    if ready_age is not None and ready_age > max_lag:
        return ("CRITICAL", "archiving falls behind: a WAL segment waits since %ds"
                % ready_age, "repo")
    win = facts.get("window") or {}
    if not win.get("oldest"):
        return "WARNING", "no PITR backup yet: nothing to restore to", "backup"
    push = facts.get("push") or {}
    if offsite:
        ok_at, err_at = push.get("last_ok_at") or 0, push.get("last_error_at") or 0
        now = facts.get("now") or ok_at
        if push.get("last_error") and err_at >= ok_at:
            return ("CRITICAL", "the copy of the repository to %s fails: %s"
                    % (offsite, push["last_error"]), "push")
        if now - ok_at > MAX_PUSH_AGE:
            return ("CRITICAL" if ok_at else "WARNING", "the repository was not copied to %s "
                    "%s" % (offsite, "for %ds" % (now - ok_at) if ok_at else "yet"), "push")
    return "OK", "archiving; restorable from %s" % win["oldest"], ""


def newest_point(facts: Dict[str, Any]) -> Optional[float]:
    """The newest moment a restore reaches: the last archived segment's time."""
    return facts.get("last_archived_time")

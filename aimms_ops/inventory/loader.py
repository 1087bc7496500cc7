"""Find, load and validate ``inventory.yml``.

The file (or the one named by ``AIMMS_OPS_INVENTORY``) is loaded and validated in full
before anything connects; every problem is one line naming the file, the key and
what was expected, and all of them are reported at once.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

import yaml

from aimms_ops.core import defaults
from aimms_ops.core.errors import OpsError, key_path
from aimms_ops.core.names import COMPRESSIONS, DEFAULT_COMPRESSION
from aimms_ops.core.retention import Policy
from aimms_ops.inventory.checker import (
    _EXPECT,
    _Checker,
    _is_abs_path,
    _is_int,
    _is_name,
    is_cron_schedule,
    is_db_name,
)
from aimms_ops.inventory.drill import parse as parse_drill
from aimms_ops.inventory.model import (
    DEFAULT_FILE,
    ENV_VAR,
    IGNORED_POSTGRES_KEYS,
    Compose,
    Host,
    Inventory,
    Ping,
    Pitr,
    Postgres,
    Volumes,
)
from aimms_ops.inventory.offsite import parse as parse_offsite

_HOST_KEYS = {
    "ssh_config", "accept_new_host_key", "backup_dir", "backup_script", "log_file",
    "cron_schedule", "retention_days", "min_keep", "compose", "postgres", "volumes",
    "verify_schedule", "lock_timeout", "retention", "safety_pin_days", "allow_shrink", "ping",
    "offsite", "offsite_recipients", "offsite_identity", "compression", "drill", "metrics_dir",
    "pitr",
}


_HOST_REQUIRED = {
    "backup_dir", "backup_script", "log_file", "cron_schedule",
    "compose", "postgres", "volumes",
}


_RETENTION_KEYS = {"keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "min_keep"}


_PING_KINDS = ("healthchecks", "uptime-kuma")


_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,500}$")


def is_ping_url(v: Any) -> bool:
    """An http(s) URL of plain characters (no quotes, spaces or backslashes)."""
    return isinstance(v, str) and bool(_URL.fullmatch(v)) and "'" not in v


def _parse_retention(ck: _Checker, key: str, d: dict) -> Policy:
    """The retention policy of one host: retention_days, the retention mapping, min_keep."""
    days = ck.value(d, key, "retention_days", _is_int(1), _EXPECT["retention_days"], 0)
    min_keep = ck.value(d, key, "min_keep", _is_int(1), "a whole number, at least 1",
                        defaults.MIN_KEEP)
    raw = d.get("retention")
    if raw is None:
        if not days and d.get("retention_days") is None:  # a wrong value is recorded already
            ck.fail(f"{key}.retention_days", "retention_days, or a retention mapping "
                    "(keep_daily, keep_weekly, keep_monthly, keep_yearly, min_keep)",
                    missing=True)
        return Policy(within_days=days, min_keep=min_keep)
    rk = f"{key}.retention"
    r = ck.mapping(raw, rk, _RETENTION_KEYS, set())
    if r is None:  # recorded in ck
        return Policy(within_days=days, min_keep=min_keep)
    counts = {k: ck.value(r, rk, k, _is_int(0), "a whole number, at least 0", 0)
              for k in sorted(_RETENTION_KEYS - {"min_keep"})}
    min_keep = ck.value(r, rk, "min_keep", _is_int(1), "a whole number, at least 1", min_keep)
    if r.get("min_keep") is not None and d.get("min_keep") is not None:
        ck.fail(f"{key}.min_keep", "min_keep in one place only (it is also in retention)",
                d["min_keep"])
    if not days and not any(counts.values()):
        ck.fail(rk, "at least one of keep_daily, keep_weekly, keep_monthly, keep_yearly "
                "above 0", raw)
    return Policy(within_days=days, min_keep=min_keep,
                  **{k.removeprefix("keep_"): v for k, v in counts.items()})


#: The shortest ping.timeout: curl gets a third of it a try (agent/pings.py).
PING_TIMEOUT_MIN = 3


def _parse_ping(ck: _Checker, key: str, d: dict) -> Ping | None:
    raw = d.get("ping")
    if raw is None:
        return None
    pk = f"{key}.ping"
    p = ck.mapping(raw, pk, {"url", "kind", "verify_url", "drill_url", "timeout"}, {"url"})
    if p is None:  # recorded in ck
        return None
    expected = "an http(s) URL (no spaces or quotes)"
    return Ping(url=ck.value(p, pk, "url", is_ping_url, expected),
                kind=ck.value(p, pk, "kind", lambda v: v in _PING_KINDS,
                              "healthchecks or uptime-kuma", "healthchecks"),
                verify_url=ck.value(p, pk, "verify_url", is_ping_url, expected),
                drill_url=ck.value(p, pk, "drill_url", is_ping_url, expected),
                timeout=ck.value(p, pk, "timeout", _is_int(PING_TIMEOUT_MIN),
                                 f"a whole number of seconds, at least {PING_TIMEOUT_MIN}",
                                 Ping.timeout))


_PITR_KEYS = {"repo", "image", "full_schedule", "diff_schedule", "retention_full", "offsite"}


def _parse_pitr(ck: _Checker, key: str, d: dict) -> Pitr | None:
    raw = d.get("pitr")
    if raw is None or raw is False:
        return None
    pk = f"{key}.pitr"
    p = ck.mapping({} if raw is True else raw, pk, _PITR_KEYS, set())
    if p is None:
        return None
    raw_dir = d.get("backup_dir")
    backup_dir: str = raw_dir if isinstance(raw_dir, str) else "/"
    cron = 'a cron schedule of five fields, like "0 3 * * 0"'
    return Pitr(
        repo=ck.value(p, pk, "repo", _is_abs_path, "an absolute path on the host",
                      posixpath.join(posixpath.dirname(backup_dir.rstrip("/")) or "/",
                                     "pgbackrest-repo")),
        image=ck.value(p, pk, "image", lambda v: isinstance(v, str) and bool(_IMAGE.match(v)),
                       "a docker image name"),
        full_schedule=ck.value(p, pk, "full_schedule", is_cron_schedule, cron,
                               Pitr.full_schedule),
        diff_schedule=ck.value(p, pk, "diff_schedule", is_cron_schedule, cron,
                               Pitr.diff_schedule),
        retention_full=ck.value(p, pk, "retention_full", _is_int(1),
                                "a whole number, at least 1", Pitr.retention_full),
        offsite=ck.value(p, pk, "offsite", _is_name, "the name of one of the host's offsite "
                         "targets"))


_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")


def _parse_host(ck: _Checker, name: str, data: Any, base: Path) -> Host | None:
    """The host ``name``, or None when it has problems (all recorded in ``ck``)."""
    key = key_path("hosts", name)
    before = len(ck.problems)
    if not _is_name(name):
        ck.fail(key, "a host name of letters, digits, '.', '-' and '_'", name)
    d = ck.mapping(data, key, _HOST_KEYS, _HOST_REQUIRED)
    if d is None:
        return None
    paths = {k: ck.value(d, key, k, _is_abs_path, _EXPECT[k])
             for k in ("backup_dir", "backup_script", "log_file")}
    ssh_config = ck.value(d, key, "ssh_config",
                          lambda v: isinstance(v, str) and v.strip() != "" and "\n" not in v,
                          "a path to an ssh_config file")
    if ssh_config is not None:
        expanded = Path(os.path.expanduser(ssh_config))
        if not expanded.is_absolute():
            expanded = base / expanded
        ssh_config = str(expanded)

    compose = postgres = volumes = None
    ck_ = ck.mapping(d["compose"], f"{key}.compose",
                     {"project_dir", "file", "project", "postgres_service"},
                     {"project_dir", "file", "project", "postgres_service"}
                     ) if d.get("compose") is not None else None
    if ck_ is not None:
        compose = Compose(
            project_dir=ck.value(ck_, f"{key}.compose", "project_dir", _is_abs_path,
                                 _EXPECT["project_dir"]),
            file=ck.value(ck_, f"{key}.compose", "file",
                          lambda v: _is_abs_path(v) or _is_name(v), _EXPECT["file"]),
            project=ck.value(ck_, f"{key}.compose", "project", _is_name, _EXPECT["project"]),
            postgres_service=ck.value(ck_, f"{key}.compose", "postgres_service", _is_name,
                                      _EXPECT["postgres_service"]),
        )
    pg_ = ck.mapping(d["postgres"], f"{key}.postgres",
                     {"superuser", *IGNORED_POSTGRES_KEYS}, {"superuser"}
                     ) if d.get("postgres") is not None else None
    if pg_ is not None:
        for k in IGNORED_POSTGRES_KEYS:
            if k in pg_:
                ck.ignored(f"{key}.postgres.{k}")
        postgres = Postgres(superuser=ck.value(pg_, f"{key}.postgres", "superuser", is_db_name,
                                               _EXPECT["superuser"]))
    vol_ = ck.mapping(d["volumes"], f"{key}.volumes", {"postgres", "redis"},
                      {"postgres", "redis"}) if d.get("volumes") is not None else None
    if vol_ is not None:
        volumes = Volumes(
            postgres=ck.value(vol_, f"{key}.volumes", "postgres", _is_name,
                              "a docker volume name"),
            redis=ck.value(vol_, f"{key}.volumes", "redis", _is_name, "a docker volume name"),
        )
    policy = _parse_retention(ck, key, d)
    scalars = {
        "cron_schedule": ck.value(d, key, "cron_schedule", is_cron_schedule,
                                  _EXPECT["cron_schedule"]),
        "policy": policy,
        "safety_pin_days": ck.value(d, key, "safety_pin_days", _is_int(0),
                                    "a whole number of days (0: no pin)",
                                    defaults.SAFETY_PIN_DAYS),
        "allow_shrink": ck.value(d, key, "allow_shrink", lambda v: isinstance(v, bool),
                                 "true or false", False),
        "ping": _parse_ping(ck, key, d),
        "pitr": _parse_pitr(ck, key, d),
        "accept_new_host_key": ck.value(d, key, "accept_new_host_key",
                                        lambda v: isinstance(v, bool), "true or false", False),
        "verify_schedule": ck.value(d, key, "verify_schedule", is_cron_schedule,
                                    'a cron schedule of five fields, like "0 4 * * 0"'),
        "lock_timeout": ck.value(d, key, "lock_timeout", _is_int(0),
                                 "a whole number of seconds",
                                 defaults.LOCK_TIMEOUT),
        "compression": ck.value(d, key, "compression", lambda v: v in COMPRESSIONS,
                                " or ".join(COMPRESSIONS), DEFAULT_COMPRESSION),
    }
    offsite = parse_offsite(d, key, policy, base)
    ck.problems += offsite.problems
    pitr = scalars["pitr"]
    names = [t.name for t in offsite.targets]
    if pitr is not None and pitr.offsite is not None and pitr.offsite not in names:
        ck.fail(f"{key}.pitr.offsite", "the name of one of the host's offsite targets ("
                + (", ".join(names) or "none") + ")", pitr.offsite)
    drill, metrics_dir, drill_problems = parse_drill(d, key, [t.name for t in offsite.targets],
                                                     is_cron_schedule)
    ck.problems += drill_problems
    if len(ck.problems) != before or compose is None or postgres is None or volumes is None:
        return None
    return Host(name=name, **paths, compose=compose, postgres=postgres, volumes=volumes,
                ssh_config=ssh_config, offsite=offsite, drill=drill, metrics_dir=metrics_dir,
                **scalars)


def config_inventory() -> Path:
    """The per-user inventory: ``$XDG_CONFIG_HOME/aimms-ops/inventory.yml``
    (``~/.config/aimms-ops/inventory.yml`` when XDG_CONFIG_HOME is not set)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "aimms-ops" / DEFAULT_FILE


def inventory_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The inventory file to load: ``explicit``, else $AIMMS_OPS_INVENTORY, else
    ./inventory.yml when it exists, else the per-user one (:func:`config_inventory`)
    when it exists, else ./inventory.yml (which :func:`load` then reports missing)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(os.path.expanduser(env))
    for candidate in (Path(DEFAULT_FILE), config_inventory()):
        if candidate.is_file():
            return candidate
    return Path(DEFAULT_FILE)


def parse(text: str, path: Path) -> Inventory:
    """Validate inventory YAML ``text`` (read from ``path``) into an Inventory."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise OpsError(f"{path}: YAML syntax error{where}: {problem}",
                       "fix the inventory file") from None
    ck = _Checker(path)
    if data is None:
        data = {}
    top = ck.mapping(data, "", {"default_host", "hosts", "download_dir"},
                     {"default_host", "hosts"}) or {}
    hosts_raw = top.get("hosts")
    if hosts_raw is not None and (not isinstance(hosts_raw, dict) or not hosts_raw):
        ck.fail("hosts", _EXPECT["hosts"], hosts_raw)
        hosts_raw = None
    default = top.get("default_host")
    if default is not None and isinstance(hosts_raw, dict) and (
            not isinstance(default, str) or default not in hosts_raw):
        ck.fail("default_host", "the name of one of the hosts: " + ", ".join(map(str, hosts_raw)),
                default)
    elif default is not None and not isinstance(default, str):
        ck.fail("default_host", _EXPECT["default_host"], default)
    download_dir = ck.value(top, "", "download_dir",
                            lambda v: isinstance(v, str) and v.strip() != "",
                            "a local directory path", "./backups")
    base = path.parent
    hosts: dict[str, Host] = {}
    for n, h in (hosts_raw or {}).items():
        host = _parse_host(ck, str(n), h, base)
        if host is not None:
            hosts[str(n)] = host
    ck.raise_if_any()
    assert isinstance(default, str)  # raise_if_any refused anything else
    return Inventory(path=path, default_host=default, hosts=hosts, download_dir=download_dir,
                     warnings=tuple(ck.warnings))


def load(path: str | os.PathLike[str] | None = None) -> Inventory:
    """Load and validate the inventory; any problem is an OpsError of one line."""
    p = inventory_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is None and not os.environ.get(ENV_VAR):
            raise OpsError(f"no inventory file: {ENV_VAR} is not set, and neither "
                           f"./{DEFAULT_FILE} nor {config_inventory()} exists",
                           f"create one of those, or point {ENV_VAR} at one") from None
        raise OpsError(f"{p}: inventory file not found",
                       f"create it, or point {ENV_VAR} at one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsError(f"{p}: cannot read the inventory: {exc}",
                       f"check the file, or point {ENV_VAR} at another") from None
    return parse(text, p)

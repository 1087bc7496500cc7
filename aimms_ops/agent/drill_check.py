"""A drill's checks of the restored cluster against the live one, and pg_amcheck.

The rule, since the live cluster moves on after the backup: every database the live
cluster has (but templates and the restores' side copies) must be in the restored
cluster, and every table of each (a database that allows no connections is checked for
presence only); a database or table missing is a failure. Row counts are compared and
reported (restored, live now), never judged: rows written since the backup are what the
RPO says is lost. Tables only the restored cluster has (dropped since) are reported.
The live cluster is read in read-only transactions.
"""

from typing import Any, Dict, List, Optional, Tuple

from aimms_ops.agent.cluster import SIDE_COPY_SQL
from aimms_ops.agent.hosttools import _COUNT_SQL, _text, connect_line, docker, last_line
from aimms_ops.agent.trial import _PSQL, Failed, shown_names

#: Names as the hex of their bytes: psql would leave out a byte that is not UTF-8.
_LIVE_DBS = " ".join(("SELECT encode(textsend(datname::text), 'hex'), datallowconn",
                     "FROM pg_database WHERE NOT",
                     "datistemplate AND datconnlimit <> -2 AND", SIDE_COPY_SQL, "ORDER BY 1"))
#: At most this many names in a failure's reason.
NAMES = 8

Counts = List[Tuple[str, Optional[int]]]


def live_psql(prod: str, superuser: str, db: str, sql: str) -> Tuple[int, str, str]:
    """psql in the live container's database ``db`` (reached by :func:`connect_line`),
    read-only, as the superuser: tab-separated rows."""
    return docker("exec", "-i", "-e", "PGOPTIONS=-c default_transaction_read_only=on", prod,
                  *_PSQL, "-U", superuser, "-d", "postgres",
                  stdin=connect_line(db) + sql.encode("utf-8", "surrogateescape"))


def live_counts(prod: str, superuser: str) -> Dict[str, Optional[Counts]]:
    """Each live database: its tables' exact row counts (None: it allows no
    connections, so it is only looked for)."""
    rc, out, err = live_psql(prod, superuser, "postgres", _LIVE_DBS)
    if rc != 0:
        raise Failed("live databases", "cannot list the live databases: %s" % last_line(err))
    found: Dict[str, Optional[Counts]] = {}
    for line in out.splitlines():
        hexname, _, allow = line.partition("\t")
        if not hexname:
            continue
        db = _text(bytes.fromhex(hexname))
        if allow != "t":
            found[db] = None
            continue
        rc, counts, err = live_psql(prod, superuser, db, _COUNT_SQL)
        if rc != 0:
            raise Failed("live tables", "counting the live rows of %s failed: %s"
                         % (db, last_line(err)))
        found[db] = [(t, int(n) if n.isdigit() else None)
                     for t, _, n in (ln.partition("\t") for ln in counts.splitlines()) if t]
    return found


def _names(items: List[str]) -> str:
    """Names for a message (a byte that is not UTF-8 as ``\\xe9``), at most NAMES."""
    return ", ".join(shown_names([i]) for i in items[:NAMES]) + (
        " and %d more" % (len(items) - NAMES) if len(items) > NAMES else "")


def compare(run: Any, restored: Dict[str, Counts], live: Dict[str, Optional[Counts]],
            name: str) -> Tuple[int, int, int, int]:
    """Report every table (a ``table`` event: ``rows`` restored, ``live_rows``) and judge
    presence; (databases, tables, restored rows, live rows). Failed when a live database
    or table is missing from the copy ``name``."""
    missing = [db for db in live if db not in restored]
    if missing:
        raise Failed("live databases", "live database %s not in %s (created after it? the next "
                     "backup takes it)" % (_names(missing), name))
    run.check("live databases", "OK",
              "every live database is there: %s" % shown_names(sorted(live)))
    gone: List[str] = []
    tables = rows = live_rows = 0
    for db in sorted(restored):
        run.event("database", name=db)
        have = dict(restored[db])
        now = dict(live.get(db) or [])
        if db in live and live[db] is not None:
            gone += ["%s.%s" % (db, t) for t in now if t not in have]
        for table, count in restored[db]:
            run.event("table", database=db, table=table, rows=count, live_rows=now.get(table))
            tables += 1
            rows += count or 0
            live_rows += now.get(table) or 0
    if gone:
        raise Failed("live tables", "live table %s not in %s (created after it? the next backup "
                     "takes it)" % (_names(gone), name))
    only = [db for db in restored if db not in live]
    closed = [db for db in live if live[db] is None]
    run.check("live tables", "OK", "every live table is there: %d tables, %d rows restored, %d "
              "live now (%+d since the backup)%s%s" % (
                  tables, rows, live_rows, live_rows - rows,
                  "; dropped since: %s" % _names(only) if only else "",
                  "; not counted (they allow no connections): %s" % _names(closed)
                  if closed else ""))
    return len(restored), tables, rows, live_rows


def amcheck(run: Any, trial: Any) -> None:
    """pg_amcheck over every database of the throwaway, where the image has it."""
    rc, where, _err = docker("exec", trial.container, "sh", "-c", "command -v pg_amcheck")
    if rc != 0 or not where.strip():
        run.check("amcheck", "OK", "not run: the image has no pg_amcheck")
        return
    rc, out, err = docker("exec", trial.container, "pg_amcheck", "-U", trial.superuser,
                          "--all", "--install-missing", "--heapallindexed")
    if rc != 0:
        text = [ln for ln in (out + "\n" + err).splitlines() if ln.strip()]
        raise Failed("amcheck", "pg_amcheck found corruption or failed (status %d): %s"
                     % (rc, (text[0] if text else "no message")[:300]))
    run.check("amcheck", "OK", "pg_amcheck --all --heapallindexed: no corruption")

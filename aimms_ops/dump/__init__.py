"""The one reader of a plain ``pg_dumpall`` dump's structure.

A dump is read as psql reads it: whole statements (single-quoted and ``E''`` strings,
quoted identifiers that may hold newlines, dollar quotes with any tag, ``--`` and nested
``/* */`` comments), psql meta-commands at the start of a line, and ``COPY … FROM stdin``
data up to its ``\\.`` line. On top of that it follows pg_dumpall's layout: an optional
preface written by aimms-ops' backup (the database properties pg_dumpall leaves out),
the cluster header, the globals (roles, memberships, tablespaces), one section per
database (``-- Database "NAME" dump``), pg_dump's TOC comments (``-- Name: …; Type: …``)
and the completion marker. Only lines found at a statement boundary are structure: a
function body, a literal, a comment or a row of data holding the same text is passed
through byte for byte.

Used by the inspection of a dump (locally, and on the host), by the restore filter on
the host and by the deep verify. Standard library only and Python 3.6 syntax, because
the same file runs on the host as ``python3 -c "$SCRIPT" MODE …``.
"""

from pathlib import Path

#: The modules of the host script, in the order they are joined.
HOST_MODULES = ("lexer", "reader", "facts", "beside", "preface", "restore_filter", "swap",
                "cli")
_HERE = Path(__file__).resolve().parent


def host_script() -> str:
    """This package as one Python file, for ``python3 -c`` on the host.

    The modules are joined in ``HOST_MODULES`` order; their imports of each other
    (relative imports, which may span lines) are dropped, and ``import`` lines of the
    standard library are kept once.
    """
    seen: set[str] = set()
    out: list[str] = []
    for name in HOST_MODULES:
        skipping = False
        for line in (_HERE / f"{name}.py").read_text(encoding="utf-8").splitlines():
            if skipping or line.startswith("from ."):
                skipping = "(" in line and ")" not in line if not skipping else ")" not in line
                continue
            if line.startswith("import "):
                if line in seen:
                    continue
                seen.add(line)
            out.append(line)
    return "\n".join(out) + "\n"

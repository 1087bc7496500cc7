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
the host and by the deep verify. Standard library only, because the same package runs on
the host inside the host program (``aimms-ops.pyz dump MODE …``, ``aimms_ops.agent``).
"""

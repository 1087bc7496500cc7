"""The compressor a backup uses on the host, as doctor and status report it (pure)."""

from __future__ import annotations

from aimms_ops.core.checks import Check, State

#: How to get igzip (ISA-L), the fastest of the three, on the usual hosts.
GET_IGZIP = ("install ISA-L's igzip for about 2x pigz's speed, same .gz format: "
             "apt-get install isal (Debian, Ubuntu), dnf install isa-l (Fedora, "
             "Amazon Linux 2023, from EPEL elsewhere)")


#: How to get zstd on the usual hosts.
GET_ZSTD = ("install zstd on the host (apt-get install zstd, dnf install zstd), or set "
            "compression: gzip in the inventory")


def compressor_check(facts: dict[str, str], compression: str = "gzip") -> Check | None:
    """Which compressor the backup uses on the host, and how to get a faster one (pure).

    ``facts`` are the ``compressor.*`` lines of the host scripts; None when the host
    did not report them. ``compression`` is the host's (inventory ``compression``).
    With gzip, only gzip missing altogether fails: a slower tool still makes good
    backups, so igzip and pigz are OK and gzip alone is OK with a hint. With zstd,
    zstd missing fails: the backup never falls back to another format.
    """
    if "compressor.name" not in facts:
        return None
    name = facts.get("compressor.name", "")
    check = facts.get("compressor.check", "") or name
    have = facts.get("compressor.have", "") or "none"
    if compression == "zstd":
        if "zstd" not in have.split():
            return Check("compressor", State.CRITICAL, "compression is zstd but zstd is not "
                         f"installed on the host: no backup can be made (installed: {have})",
                         GET_ZSTD)
        return Check("compressor", State.OK, "zstd -T0 (compression: zstd, .sql.zst); the "
                     f"written stream checked by zstd -dc (installed: {have})")
    if not name:
        return Check("compressor", State.CRITICAL, "no gzip on the host: no backup can be made",
                     "install gzip")
    detail = {"igzip": "igzip -1 (ISA-L), the fastest",
              "pigz": "pigz -1 (threads)",
              "gzip": "gzip -1 (one thread, the slowest)"}.get(name, name)
    detail += f"; the written stream checked by {check} -dc (installed: {have})"
    fix = "" if name == "igzip" else GET_IGZIP
    return Check("compressor", State.OK, detail, fix)

"""Bytes carried through ``docker exec``'s arguments as a printf format.

Docker's API carries each argument of ``docker exec`` as UTF-8 and puts U+FFFD in place of
any byte that is not: a database name of a SQL_ASCII connection would reach the container
as another name. Written as a printf format in ASCII, it crosses intact, and ``printf``
in the container gives its bytes back.
"""

from __future__ import annotations


def printf_format(data: bytes) -> str:
    """``data`` as a printf format that prints it, in printable ASCII only: ``\\`` and
    ``%`` doubled, every other byte outside 0x20-0x7E (a newline too) an octal escape."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in "\\%":
            out.append(char * 2)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append("\\%03o" % byte)
    return "".join(out)

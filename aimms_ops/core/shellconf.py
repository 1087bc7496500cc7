"""The settings files install-backups writes on the host (``backup-postgres.sh.conf``,
``backup-postgres.sh.offsite``): shell assignments, one a line, values quoted by
``shlex.quote`` (``KEY='value'``, ``export KEY=value``), read here without a shell.

``read`` gives what sourcing the file in bash would set, for the lines it writes; a line
that is not an assignment of that form is an error, named with its line number.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Dict, Optional, Set

_KEY = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class ConfError(ValueError):
    """A line of a settings file that is not ``KEY=VALUE`` (the message says which)."""


def parse(text: str, where: str = "the settings file",
          exported: Optional[Set[str]] = None) -> Dict[str, str]:
    """The assignments of ``text`` (later ones win); comments and blank lines skipped.
    ``exported``: a set the keys of ``export KEY=...`` lines are added to."""
    out: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _KEY.match(stripped)
        if not m:
            raise ConfError("%s, line %d: not a KEY=VALUE assignment" % (where, number))
        try:
            words = shlex.split(m.group(2), comments=True) if m.group(2) else [""]
        except ValueError as e:
            raise ConfError("%s, line %d: %s" % (where, number, e)) from e
        if len(words) > 1:
            raise ConfError("%s, line %d: the value of %s is more than one word"
                            % (where, number, m.group(1)))
        out[m.group(1)] = words[0] if words else ""
        if exported is not None and stripped.startswith("export"):
            exported.add(m.group(1))
    return out


def read(path: str, exported: Optional[Set[str]] = None) -> Dict[str, str]:
    """The assignments of the file ``path`` (OSError when it cannot be read)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return parse(fh.read(), path, exported)


def read_into_environment(path: str) -> Dict[str, str]:
    """:func:`read`, and the exported keys put in this process's environment (cron's bare
    environment gets the PATH and DOCKER_HOST of an SSH session that way)."""
    exported: Set[str] = set()
    values = read(path, exported)
    for key in exported:
        os.environ[key] = values[key]
    return values

"""Prometheus metrics as files for node_exporter's textfile collector: the one module
that writes (and reads back) the format.

A file is ``NAME.prom`` in the inventory's ``metrics_dir``: per metric a ``# HELP`` and
a ``# TYPE`` line, then its samples ``name{label="value"} number``. It is written to a
temporary file in the same dir (``.NAME.prom.PID.tmp``: the collector reads only
``*.prom``) and renamed over the old one, so the collector never reads half a file.

The files: ``aimms_ops_backup.prom`` (the backup job's) and
``aimms_ops_drill_KIND_SOURCE.prom`` (one per kind of drill and source, e.g.
``aimms_ops_drill_logical_s3.prom``), each metric named ``aimms_ops_…``.
"""

import math
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("gauge", "counter", "untyped")
SUFFIX = ".prom"
BACKUP_FILE = "aimms_ops_backup"


class Metric(NamedTuple):
    """One metric: its name, help, type and samples ((label, value) pairs, number)."""

    name: str
    help: str
    type: str
    samples: Tuple[Tuple[Tuple[Tuple[str, str], ...], float], ...]


def gauge(name: str, text: str, value: Optional[float],
          labels: Sequence[Tuple[str, str]] = ()) -> Metric:
    """A gauge with one sample (none when ``value`` is None: not known)."""
    samples = () if value is None else ((tuple(labels), float(value)),)
    return Metric(name, text, "gauge", samples)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(metrics: Sequence[Metric]) -> str:
    """The exposition text of ``metrics`` (ValueError for a bad name or type)."""
    lines: List[str] = []
    for m in metrics:
        if not NAME_RE.match(m.name) or m.type not in TYPES:
            raise ValueError("bad metric %r (%s)" % (m.name, m.type))
        lines.append("# HELP %s %s" % (m.name, _escape_help(m.help)))
        lines.append("# TYPE %s %s" % (m.name, m.type))
        for labels, value in m.samples:
            for k, _v in labels:
                if not LABEL_RE.match(k) or k.startswith("__"):
                    raise ValueError("bad label name %r" % k)
            text = ",".join('%s="%s"' % (k, _escape_label(v)) for k, v in labels)
            lines.append("%s%s %s" % (m.name, "{%s}" % text if text else "", _number(value)))
    return "\n".join(lines) + "\n"


def file_name(stem: str) -> str:
    """``stem`` as a collector's file name (letters, digits and _ only) with ``.prom``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", stem) + SUFFIX


def write(directory: str, stem: str, metrics: Sequence[Metric]) -> str:
    """Write ``metrics`` to ``directory/STEM.prom`` atomically (a temporary file in the
    same dir, renamed; the dir made if missing); the path. OSError when it cannot be."""
    path = os.path.join(directory, file_name(stem))
    tmp = os.path.join(directory, ".%s.%d.tmp" % (file_name(stem), os.getpid()))
    text = render(metrics)
    os.makedirs(directory, 0o755, exist_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # the collector runs as another user; the umask is strict
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --- reading it back --------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


_ESCAPE = re.compile(r"\\(.)")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _value(text: str) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    return float(text)


def parse(text: str) -> Dict[str, Metric]:
    """The metrics of an exposition text, strictly: every sample after its metric's HELP
    and TYPE, each metric once, labels well formed, the text ending in a newline;
    ValueError naming the line otherwise."""
    if text and not text.endswith("\n"):
        raise ValueError("the text does not end with a newline")
    found: Dict[str, Metric] = {}
    helps: Dict[str, str] = {}
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name, _, rest = line[7:].partition(" ")
            if name in helps or not NAME_RE.match(name):
                raise ValueError("line %d: a second or bad HELP for %s" % (n, name))
            helps[name] = _unescape(rest)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if name not in helps or name in found or kind not in TYPES:
                raise ValueError("line %d: TYPE of %s without its HELP, twice, or of an "
                                 "unknown type %r" % (n, name, kind))
            found[name] = Metric(name, helps[name], kind, ())
            current = name
        elif line.startswith("#") or not line.strip():
            raise ValueError("line %d: a comment or blank line the writer never makes" % n)
        else:
            m = _SAMPLE.match(line)
            if not m or m.group(1) != current:
                raise ValueError("line %d: not a sample of the metric just declared: %r"
                                 % (n, line))
            labels: List[Tuple[str, str]] = []
            body = m.group(2) or ""
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm:
                    raise ValueError("line %d: bad labels {%s}" % (n, body))
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
            if body.endswith(","):
                raise ValueError("line %d: a label list ending in a comma" % n)
            try:
                value = _value(m.group(3))
            except ValueError:
                raise ValueError("line %d: not a number: %s" % (n, m.group(3))) from None
            old = found[current]
            if any(s[0] == tuple(labels) for s in old.samples):
                raise ValueError("line %d: a second sample with the same labels" % n)
            found[current] = old._replace(samples=(*old.samples, (tuple(labels), value)))
    return found


def read(path: str) -> Dict[str, Metric]:
    """The metrics of the file ``path`` ({} when it is missing or not well formed)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return parse(fh.read())
    except (OSError, ValueError):
        return {}


def value(found: Dict[str, Metric], name: str) -> Optional[float]:
    """The first sample's value of metric ``name`` in ``found`` (None: not there)."""
    m = found.get(name)
    return m.samples[0][1] if m and m.samples else None


def drill_kind(source: str) -> str:
    """What a drill of ``source`` restores: ``pitr`` (the PITR repository) or ``logical``."""
    return "pitr" if source == "pitr" else "logical"


def drill_stem(source: str) -> str:
    """The name (without .prom) of the metrics file of a drill of ``source``."""
    kind = drill_kind(source)
    return "aimms_ops_drill_pitr" if kind == "pitr" else "aimms_ops_drill_logical_%s" % source

"""The command line of the host script: ``inspect`` and ``filter``, reading stdin."""

import fcntl
import os
import stat
import sys

from .beside import Beside
from .facts import INSPECT, Facts, read_facts
from .facts import fields as facts_fields
from .reader import READ_CHUNK, Reader, Tee
from .restore_filter import RestoreFilter
from .swap import (
    Cluster,
    SwapError,
    discard,
    drop_aside,
    drop_replaced,
    prepare,
    set_aside,
    swap,
    undo,
)

#: fcntl's F_SETPIPE_SZ (Linux); the size asked for, the most an unprivileged user may
#: set by default (/proc/sys/fs/pipe-max-size).
_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024


def _widen_pipes(*fds):
    """Give the pipes on ``fds`` a 1 MiB buffer instead of 64 KiB: a gigabyte then
    crosses in a sixteenth of the wake-ups (the check of a 1 GB dump on the host took
    half the time). Anything that is not a pipe, or a smaller limit, is left as it is."""
    for fd in fds:
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass


def _read(stream):
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return
        yield chunk


def _alive(pid):
    """Whether process ``pid`` still exists (the operator's session, for the filter)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _props_file(path):
    with open(path, "rb") as fh:
        return fh.read().splitlines(True)


def stderr_log(text, kind="note", **fields):
    """A message of the filter or the swap on stderr, as a line ``aimms-ops: TEXT``."""
    sys.stderr.write("aimms-ops: " + text + "\n")
    sys.stderr.flush()


def main(argv, event):
    """``inspect`` < dump: facts; ``filter [--only HEX] [--props DB=FILE]… [--facts FILE]
    [--session PID] [--events FILE]``.

    The filter reads the dump on stdin and writes what psql is to replay on stdout;
    ``--facts`` also writes what ``inspect`` would print to FILE, at the end: the
    ``facts`` event of ``dump-inspect`` (:func:`aimms_ops.dump.facts.fields`), each event
    made by ``event(kind, **fields)`` (the host program gives core.events.line). With
    ``--session``, the stream stops as if the dump ended there once process PID (the
    operator's SSH session) is gone, whatever is still on its way in the pipes: psql
    then rolls back the table it was loading, and nothing goes on unobserved. With
    ``--events``, what it says goes to FILE as events, each line ``event(kind, text=...,
    **fields)`` (the host program gives core.events.line: the restore stream's events),
    instead of stderr.
    """
    def print_facts(facts, out):
        out.write(event("facts", of=INSPECT, facts=facts_fields(facts)) + "\n")

    if argv and argv[0] in SWAP_MODES:
        return swap_main(argv[0], argv[1:], event)
    if not argv or argv[0] not in ("inspect", "filter"):
        sys.stderr.write("usage: aimms-ops.pyz dump inspect | filter [--only HEXNAME]"
                         " [--props DB=FILE]"
                         " [--beside STATE] | prepare|swap|discard ...\n")
        return 64
    _widen_pipes(0, 1)
    stdin = sys.stdin.buffer
    if argv[0] == "inspect":
        print_facts(read_facts(_read(stdin)), sys.stdout)
        return 0
    only, props, facts_path, session, beside, events_path = None, {}, None, None, None, None
    args = argv[1:]
    while args:
        opt = args.pop(0)
        if opt == "--only" and args:
            only = bytes.fromhex(args.pop(0))
        elif opt == "--beside" and args:
            beside = Beside(args.pop(0))
        elif opt == "--tablespaces" and args and beside is not None:
            beside.tablespaces = set(bytes.fromhex(h) for h in args.pop(0).split(",") if h)
        elif opt == "--facts" and args:
            facts_path = args.pop(0)
        elif opt == "--events" and args:
            events_path = args.pop(0)
        elif opt == "--session" and args and args[0].isdigit():
            session = int(args.pop(0))
        elif opt == "--props" and args:
            name, _, path = args.pop(0).partition("=")
            try:
                props[name.encode()] = _props_file(path)
            except OSError:
                pass
        else:
            sys.stderr.write("aimms-ops: unknown argument %s\n" % opt)
            return 64
    out = sys.stdout.buffer
    log = stderr_log
    if events_path:
        said = open(events_path, "a")

        def log(text, kind="note", **fields):
            said.write(event(kind, text=text, **fields) + "\n")
            said.flush()

    filt = RestoreFilter(out, log, only=only, props=props, beside=beside)
    facts = Facts()
    reader = Reader(Tee(filt, facts) if facts_path else filt)
    filt.attach(reader)
    facts.attach(reader)
    rc = 0
    try:
        for chunk in _read(stdin):
            if session is not None and not _alive(session):
                log("the operator's session ended: the restore stops here", kind="error")
                break
            facts.size += len(chunk)
            reader.feed(chunk)
        reader.close()
        out.flush()
    except BrokenPipeError:
        log("psql stopped reading the restore stream")
        rc = 141
    if beside is not None:
        beside.close()
    if facts_path:
        with open(facts_path, "w") as fh:
            print_facts(facts, fh)
    if rc:
        return rc
    return 0 if reader.complete else 3


SWAP_MODES = ("prepare", "swap", "discard", "drop-replaced", "undo", "drop-aside", "aside")


def swap_main(mode, argv, event):
    """``MODE CONTAINER SUPERUSER STATE [STAMP [AS_HEX]]``, MODE one of SWAP_MODES: the
    steps of a restore built beside the live cluster (swap.py); a failure in one line.
    What it says are events on stdout, made by ``event`` (core.events.line): ``note``,
    ``error``; ``aside`` lists the databases set aside as one ``facts`` event (of ``aside``:
    ``set_aside``, each with its hex ``name``, ``original`` and ``stamp``)."""
    if len(argv) < (3 if mode in ("prepare", "swap", "discard", "drop-replaced") else 2):
        sys.stderr.write("usage: aimms-ops.pyz dump %s CONTAINER SUPERUSER STATE [STAMP [AS_HEX]]\n"
                         % mode)
        return 64

    def log(text, kind="note", **fields):
        sys.stdout.write(event(kind, text=text, **fields) + "\n")
        sys.stdout.flush()

    cluster = Cluster(argv[0], argv[1])
    state = argv[2] if len(argv) > 2 else ""
    try:
        if mode == "aside":
            rows = [{"name": name.hex(), "original": original.hex(), "stamp": stamp.decode()}
                    for name, original, stamp, _tmpl, _conn in set_aside(cluster)]
            sys.stdout.write(event("facts", of="aside", facts={"set_aside": rows}) + "\n")
        elif mode == "undo":
            undo(cluster, log)
        elif mode == "drop-aside":
            drop_aside(cluster, log, set(bytes.fromhex(h) for h in argv[2:]) or None)
        elif mode == "prepare":
            prepare(cluster, state, log)
        elif mode == "discard":
            discard(cluster, state, log)
        elif mode == "drop-replaced":
            drop_replaced(cluster, state, log)
        else:
            stamp = (argv[3] if len(argv) > 3 else "").encode()
            as_name = bytes.fromhex(argv[4]) if len(argv) > 4 and argv[4] else None
            swap(cluster, state, stamp, log, as_name=as_name)
    except SwapError as exc:
        log("%s failed: %s" % (mode, exc), kind="error")
        return 1
    return 0

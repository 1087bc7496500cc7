"""A command of a plan, exactly as it is sent to the host's shell.

A plan (rebuild-volume's steps, a restore) holds :class:`Command` values; what a dry
run prints and what the run sends are the same ``line``, built once from an argument
list (``shell``). Nothing is filled in at run time: values the host only knows then
(the postgres container, which a rebuild recreates) are looked up on the host by the
command itself (``postgres-exec.sh``, ``restore-stream.sh``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aimms_ops.host import bundle, shell


@dataclass(frozen=True)
class Command:
    """``line`` is sent as it is; ``argv`` holds its words (a packaged script: its name
    and arguments). ``stdin_file`` is a local file streamed to its stdin. ``reads`` names
    how the executor reads its output ("" : the exit status only), ``about`` what it is
    about (a database)."""

    line: str
    argv: tuple[str, ...]
    script: str = ""
    stdin_file: str = ""
    reads: str = ""
    about: str = ""

    @property
    def shown(self) -> str:
        """The line for people: the line sent (a packaged script runs from the bundle the
        run sends first, ``host.bundle``), and the local file it reads, if any."""
        if self.stdin_file:
            return f"{self.line} < {shell.quote(self.stdin_file)}"
        return self.line

    @property
    def short(self) -> str:
        """At most 60 characters for an error message: a packaged script by its name and
        arguments, anything else as it is shown."""
        text = shell.join(self.argv) if self.script else self.shown
        return text if len(text) <= 60 else text[:57] + "..."

    def as_dict(self) -> dict[str, str | None]:
        return {"command": self.line, "shown": self.shown, "stdin": self.stdin_file or None}


def plain(argv: Sequence[str], *, reads: str = "", about: str = "") -> Command:
    """A command line of one program and its arguments."""
    return Command(shell.join(argv), tuple(argv), reads=reads, about=about)


def in_dir(directory: str, argv: Sequence[str]) -> Command:
    """``cd DIRECTORY && ARGV``."""
    line = f"{shell.join(['cd', directory])} && {shell.join(argv)}"
    return Command(line, ("cd", directory, *argv))


def script(name: str, args: Sequence[str | int], *, stdin_file: str = "", reads: str = "",
           about: str = "") -> Command:
    """A packaged script with its includes, run by bash with ``args``."""
    words = [str(a) for a in args]
    return Command(bundle.script_command(name, words), (name, *words), script=name,
                   stdin_file=stdin_file, reads=reads, about=about)


def program(args: Sequence[str | int], *, reads: str = "", about: str = "") -> Command:
    """A command of the host program (``aimms-ops.pyz``, from the bundle) with ``args``."""
    words = [str(a) for a in args]
    return Command(bundle.program_command(words), tuple(words), script=words[0], reads=reads,
                   about=about)


def in_postgres(project: str, service: str, argv: Sequence[str], *, reads: str = "",
                about: str = "", detach: bool = False) -> Command:
    """``argv`` run in the postgres container of the compose service, found on the host
    when the command runs (``postgres-exec.sh``); ``detach``: left running there (``docker
    exec -d``), the command returning at once."""
    return script("postgres-exec.sh", [*(["--detach"] if detach else []), project, service,
                                       *argv], reads=reads, about=about)

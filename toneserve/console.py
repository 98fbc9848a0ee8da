"""How toneserve's commands talk to people: progress on stderr, one-line errors.

stdout carries only results (JSON), so a command's output can be piped; everything said to
the person running it goes to stderr.
"""
from __future__ import annotations

import sys


def say(message: str, tag: str = "") -> None:
    """A line of progress, prefixed `[tag]` when given."""
    print(f"[{tag}] {message}" if tag else message, file=sys.stderr, flush=True)


class CommandError(RuntimeError):
    """A command cannot do what was asked, for a reason its user can act on (a taken port, a missing
    file, an unreachable hub, a bad flag value). The `toneserve` command prints the message on one
    line and exits 2; anything else that escapes is a bug and keeps its traceback."""

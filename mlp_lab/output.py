"""Printing for a reader that may have gone (``mlp-lab run ... | head``): nothing a run logs depends on it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


def _to_nowhere(stream: TextIO | None = None) -> None:
    """Point ``stream`` (stdout) at the null device: what is still buffered, and any later print, go nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
        os.close(devnull)


@contextlib.contextmanager
def unless_unread(stream: TextIO | None = None) -> Iterator[None]:
    """Print what the block prints; if the reader of ``stream`` (stdout) has gone, stop printing to it, for good,
    and carry on."""
    try:
        yield
    except BrokenPipeError:
        _to_nowhere(stream)


def console(**kwargs: Any) -> Any:
    """A rich ``Console`` that stops printing when its reader has gone, where rich's own would exit the program."""
    from rich.console import Console

    class Unread(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _to_nowhere()

    return Unread(**kwargs)

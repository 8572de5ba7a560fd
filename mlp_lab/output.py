"""Printing for a reader that may have gone (``mlp-lab run ... | head``): nothing a run logs depends on it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


def _to_nowhere() -> None:
    """Point stdout at the null device: what is still buffered, and any later print, go nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def unless_unread() -> Iterator[None]:
    """Print what the block prints; if the reader of stdout has gone, stop printing, for good, and carry on."""
    try:
        yield
    except BrokenPipeError:
        _to_nowhere()


def console(**kwargs: Any) -> Any:
    """A rich ``Console`` that stops printing when its reader has gone, where rich's own would exit the program."""
    from rich.console import Console

    class Unread(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _to_nowhere()

    return Unread(**kwargs)

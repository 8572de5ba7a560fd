"""Errors the command line reports as one line, without a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: reported as ``Error: <message>`` with exit code 2."""


class PluginError(Exception):
    """A plugin could not be loaded, registered or run; the message names it and its distribution."""


class TrackingError(Exception):
    """MLflow's side of ``mlp-lab run`` failed once runs had started (the tracking process stopped, the store
    refused a run): exit code 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler): the current run ends KILLED, as with Ctrl-C."""


def described(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone when there is none): one line for a failed run."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (MLflow's run to pages), else its type's name.

    A database error wrapped by SQLAlchemy says the database's own reason (``attempt to write a
    readonly database``), not the wrapper's first line (``(raised as a result of Query-invoked autoflush; ...``).
    """
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError: the driver's own error
    if isinstance(orig, BaseException) and orig is not exc:
        return first_line(orig)
    lines = [line for line in str(getattr(exc, "message", None) or exc).strip().splitlines() if line.strip()]
    while len(lines) > 1 and lines[0].startswith("(raised as a result of "):  # the same, as text (pickled, say)
        lines.pop(0)
    return lines[0] if lines else type(exc).__name__


def described_where(exc: BaseException) -> str:
    """:func:`described`, and where in the plugin's own code it was raised (``... (at model.py:42 in forward)``)."""
    where = plugin_frame(exc)
    return described(exc) + (f" (at {where})" if where else "")


def plugin_frame(exc: BaseException) -> str | None:
    """Where in the plugin's own code ``exc`` was raised (``model.py:42 in forward``): the last frame of its
    traceback outside mlp-lab's core, the libraries it calls (torch, numpy) and Python's own; None if there is none."""
    import sys
    import sysconfig
    import traceback
    from pathlib import Path

    skip = [Path(__file__).resolve().parent, Path(sysconfig.get_paths()["stdlib"]).resolve()]
    skip += [Path(m.__file__).resolve().parent for m in map(sys.modules.get, ("torch", "numpy")) if getattr(m, "__file__", None)]
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if frame.filename.startswith("<") or any(path.is_relative_to(folder) for folder in skip):
            continue
        return f"{path.name}:{frame.lineno} in {frame.name}"
    return None

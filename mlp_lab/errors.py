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
    """The first line of an exception's message (MLflow's run to pages), else its type's name."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

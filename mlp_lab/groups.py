"""Comparison groups: one parent run standing for a comparison, one child run per (implementation, seed)."""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from typing import Any

from mlp_lab.errors import first_line
from mlp_lab.options import as_logged
from mlp_lab.output import unless_unread
from mlp_lab.runs import Outcome, RunSpec, execute


def execute_group(specs: list[RunSpec], data: Any, device: Any, tracker: Any, quiet: bool = False) -> tuple[Any, list[Outcome]]:
    """Run every spec as a child of a new parent run; the parent records what was compared and how it went.

    Returns the parent, still running, and the outcomes: :func:`finish` logs its comparison and ends it.
    """
    names = list(dict.fromkeys(s.impl.name for s in specs))
    seeds = list(dict.fromkeys(s.seed for s in specs))
    logged = [as_logged(s.impl.all_options(), s.hp) for s in specs]
    shared = {k: v for k, v in logged[0].items() if all(values.get(k) == v for values in logged)}
    params = {
        "plugins": ",".join(names),
        "seeds": ",".join(map(str, seeds)),
        "n_runs": len(specs),
        "dataset": data.name,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "dataset_digest": data.digest,
        "device": str(device),
        **{f"shared.{k}": v for k, v in shared.items()},
    }
    # the time for people, a random part so that groups started in the same second (a sweep) keep names of their own
    name = f"compare-{'-'.join(names)[:60]}-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"
    group = tracker.start_run(name, params, tags={"mlp_lab.kind": "group"})
    group.ready()
    outcomes: list[Outcome] = []
    try:
        for spec in specs:
            outcomes.append(execute(spec, data, device, tracker, parent=group.run_id, quiet=quiet))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated)
        group.log_metrics(_counts(outcomes, len(specs)), 0)
        group.end("KILLED", str(exc) or "interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # the store or the tracking process failed under a run: the group fails with it
        with contextlib.suppress(Exception):  # the error that stopped the group is the one to report
            group.log_metrics(_counts(outcomes, len(specs), stopped=1), 0)
        with contextlib.suppress(Exception):  # (a dead tracking process: the run is ended from here)
            group.end("FAILED", first_line(exc))
        raise
    group.log_metrics(_counts(outcomes, len(specs)), 0)
    return group, outcomes


def _counts(outcomes: list[Outcome], planned: int, stopped: int = 0) -> dict[str, float]:
    """The group's run counts; ``stopped``: a run that raised instead of returning its outcome, counted as failed."""
    ok = sum(o.status == "FINISHED" for o in outcomes)
    return {"runs_planned": planned, "runs_succeeded": ok, "runs_failed": len(outcomes) - ok + stopped}


def finish(tracker: Any, group: Any, outcomes: list[Outcome]) -> str | None:
    """Log the group's comparison on its parent run (markdown, CSV, overlay figure), then end the parent; returns
    the comparison table to print.

    The parent ends only once its comparison is logged: interrupted before that, it ends KILLED, so a
    FINISHED group has its comparison unless it could not be made: the child runs are tracked already, so
    that is a warning (and None returned), which changes no exit code.
    """
    from rich.console import Console

    failed = [o for o in outcomes if o.status != "FINISHED"]
    status = "FINISHED" if len(failed) < len(outcomes) else "FAILED"
    text = None
    try:
        text = tracker.report_group(group.run_id, Console().width if sys.stdout.isatty() else 160)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated), while the comparison was made
        group.end("KILLED", f"{str(exc) or 'interrupted (Ctrl-C)'} while its comparison was made")
        raise
    except Exception as exc:  # noqa: BLE001 - the comparison is a view of runs that are safely stored
        print(f"Warning: no comparison for group {group.run_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
    group.end(status, "; ".join(o.error or "" for o in failed) or None)
    return text


def print_comparison(text: str) -> None:
    with unless_unread():  # flushed here: a reader gone shows now, not at the exit's flush
        print()
        print(text, end="", flush=True)

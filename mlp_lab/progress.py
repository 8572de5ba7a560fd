"""Progress while training: a live bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shows step, loss and steps/s for one run; ``update`` is called once per fetched interval."""

    def __init__(self, label: str, total: int, quiet: bool = False) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.start = time.perf_counter()
        self.next_line = 0.0
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g}  {task.fields[rate]:.0f} steps/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task(label, total=total, loss=float("nan"), rate=0.0)
            self.bar.start()

    def update(self, step: int, loss: float, train_seconds: float | None = None) -> None:
        """Show ``step`` steps done and the last loss; the rate is per second of training (evaluations left
        out, as in the logged ``steps_per_s``) when ``train_seconds`` is given, else per second since the start."""
        seconds = train_seconds if train_seconds is not None else time.perf_counter() - self.start
        rate = step / max(seconds, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, rate=rate)
        elif not self.quiet and (step / self.total >= self.next_line or step == self.total):
            try:
                print(f"{self.label}: step {step}/{self.total}  loss {loss:.5g}  {rate:.0f} steps/s", file=sys.stderr, flush=True)
            except OSError:  # nobody reads any more (``2>&1 | head``): training goes on, unseen
                self.quiet = True
            self.next_line = step / self.total + 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

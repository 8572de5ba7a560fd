"""The training loop: batches, steps, evaluation cadence, timing. No tracking here.

Losses stay on the device in a buffer and are fetched once per evaluation interval, so a step
never waits for the device; what is fetched goes to ``on_losses`` and evaluations to ``on_eval``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch

from mlp_lab import devices
from mlp_lab.data import Batch, Dataset
from mlp_lab.model import Model, checked_parameters
from mlp_lab.options import Hyperparams, default_eval_every
from mlp_lab.summary import Evaluation, Summary

EVAL_CHUNK = 10000


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class BadScores(RuntimeError):
    """``predict`` returned something other than (N, 10) class scores, or NaN among them."""


class Diverged(NonFiniteLoss):
    """Training made a parameter NaN or infinite (its loss may still have been finite)."""


class BadLoss(RuntimeError):
    """``train_step`` or ``loss`` returned something other than the loss as a one-element tensor."""


def kind_of(value: object) -> str:
    """``shape (3,)`` for a tensor, else the value's type name: what a plugin returned, for an error."""
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def eval_interval(hp: Hyperparams) -> int:
    """Steps between evaluations: ``eval_every``, else a hundredth of the run."""
    return hp.eval_every or default_eval_every(hp.steps)


def batches(train: Batch, batch_size: int | None, generator: torch.Generator) -> Iterator[Batch]:
    """The whole set every step when ``batch_size`` is None (or covers it); else shuffled mini-batches by epoch."""
    n = len(train)
    if batch_size is None or batch_size >= n:
        while True:
            yield train
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device)
        for start in range(0, n - batch_size + 1, batch_size):  # drop the last incomplete batch
            idx = order[start : start + batch_size]
            yield Batch(train.x[idx], train.y[idx], train.onehot[idx])


@torch.no_grad()
def evaluate(model: Model, batch: Batch) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``batch``, in chunks to bound memory."""
    total_loss, correct, n = 0.0, 0, len(batch)
    for s in range(0, n, EVAL_CHUNK):
        part = Batch(batch.x[s : s + EVAL_CHUNK], batch.y[s : s + EVAL_CHUNK], batch.onehot[s : s + EVAL_CHUNK])
        loss = model.loss(part)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise BadLoss(f"loss must return the loss as a one-element tensor (0-dim), got {kind_of(loss)}")
        total_loss += loss.float().item() * len(part)
        scores, n_part = model.predict(part.x), len(part)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n_part, Model.n_out):
            raise BadScores(
                f"predict returned {kind_of(scores)} for {n_part} inputs; expected a ({n_part}, {Model.n_out}) tensor"
            )
        if scores.isnan().any():  # argmax would read NaN as the largest score: an accuracy, and a model, of nothing
            raise BadScores(f"predict returned NaN scores for {int(scores.isnan().any(1).sum())} of {n_part} inputs")
        correct += (scores.argmax(1) == part.y).sum().item()
    return total_loss / n, correct / n


def check_finite_parameters(model: Model, step: int) -> None:
    """:class:`Diverged` naming the first parameter that is NaN or infinite after ``step`` steps, if one is."""
    for name, p in checked_parameters(model, "the model").items():
        if p.is_floating_point() and not bool(p.detach().isfinite().all()):
            raise Diverged(f"training diverged: parameter {name} is NaN or infinite after step {step} (a lower lr?)")


def train(
    model: Model,
    data: Dataset,
    hp: Hyperparams,
    seed: int,
    on_losses: Callable[[list[float], int], None],
    on_eval: Callable[[Evaluation], None],
    compile: bool = False,
) -> Summary:
    """Train ``model`` for ``hp.steps`` steps on ``data``, evaluating every ``hp.eval_every`` steps.

    ``on_losses(values, first_step)`` receives the per-step losses as they are fetched;
    ``on_eval(evaluation)`` each evaluation (before training, every interval, and at the end).
    A partial interval is still handed over when training stops early (error or Ctrl-C).
    ``compile`` runs the model's ``train_step`` through ``torch.compile`` (CUDA graphs on CUDA);
    the time spent compiling is reported apart, as ``compile_time_s``.
    """
    steps = hp.steps
    every = eval_interval(hp)
    device = data.train.x.device
    full_batch = hp.batch_size is None or hp.batch_size >= len(data.train)
    static = (data.train.x, data.train.y, data.train.onehot) if full_batch else ()
    step_fn = devices.compiled_train_step(model, device, static) if compile else model.train_step
    devices.reset_peak_memory(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    stream = batches(data.train, hp.batch_size, generator)
    summary = Summary()
    buffer = torch.empty(min(every, steps), device=device)
    fetched = 0  # steps whose losses have been handed over
    compiled = devices.compile_seconds()

    def clock(start: float) -> None:  # training time since ``start``, less any compiling
        nonlocal compiled
        now = devices.compile_seconds()
        summary.compile_time_s += now - compiled
        summary.train_time_s += time.perf_counter() - start - (now - compiled)
        compiled = now

    def run_eval(step: int) -> None:
        t = time.perf_counter()
        model.train(False)
        try:
            train_loss, train_acc = evaluate(model, data.train)
        except BadScores:  # NaN scores after training steps: say the training diverged, if it did
            check_finite_parameters(model, step)
            raise
        test_loss, test_acc = evaluate(model, data.test)
        model.train(True)
        ev = Evaluation(step, train_loss, train_acc, test_loss, test_acc, summary.train_time_s)
        summary.evaluations.append(ev)
        summary.eval_time_s += time.perf_counter() - t
        on_eval(ev)

    def hand_over(upto: int) -> None:
        nonlocal fetched
        if upto <= fetched:
            return
        values, first = buffer[: upto - fetched].tolist(), fetched
        fetched = upto
        summary.losses.extend(values)
        on_losses(values, first)
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise NonFiniteLoss(f"the training loss became {v} at step {first + i}")

    run_eval(0)
    start = time.perf_counter()
    step = 0
    try:
        for step in range(steps):
            loss = step_fn(next(stream), step)
            try:
                buffer[step - fetched] = loss.detach()
            except Exception:
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise BadLoss(
                        f"train_step must return the loss as a one-element tensor (0-dim), got {kind_of(loss)}"
                    ) from None
                raise
            if step + 1 - fetched == len(buffer) or step + 1 == steps:
                hand_over(step + 1)
                if (step + 1) % every == 0 or step + 1 == steps:
                    clock(start)
                    run_eval(step + 1)
                    start = time.perf_counter()
    except BaseException:
        clock(start)
        with contextlib.suppress(Exception):  # what stopped training is the error to report
            hand_over(step)  # the losses of the steps completed so far
        raise
    summary.steps = steps
    summary.peak_memory_mb = devices.peak_memory_mb(device)
    return summary

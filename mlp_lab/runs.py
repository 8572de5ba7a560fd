"""Running implementations: one tracked MLflow run per (implementation, seed).

Everything that can be checked is checked before the first run is created, so bad input never
leaves a half-written run. A run whose implementation raises, or whose loss stops being finite,
ends FAILED with the reason recorded on it; the next run still goes. Ctrl-C or SIGTERM ends
the current run KILLED, with every metric fetched so far kept.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import mlp_lab
from mlp_lab import figures, model_file, training
from mlp_lab.data import Dataset
from mlp_lab.errors import PluginError, TrackingError, described_where
from mlp_lab.options import Hyperparams, as_logged
from mlp_lab.progress import Progress
from mlp_lab.registry import Implementation
from mlp_lab.tracking import ArrayShape, RunLog, Tracker, store_refusal


@dataclass
class RunSpec:
    """What one run trains: an implementation, its resolved hyperparameters, a seed."""

    impl: Implementation
    model_class: type
    hp: Hyperparams
    seed: int
    compile: bool = False  # train through torch.compile (CUDA graphs on CUDA)


@dataclass
class Outcome:
    """How one run ended, with its final metrics when it finished."""

    spec: RunSpec
    run_id: str
    status: str
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    summary: training.Summary | None = field(default=None, repr=False)


class UnusableModel:
    """Stands in for a model class that could not be imported or breaks the contract: building it raises why."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, hp: Hyperparams) -> Any:
        raise self.error


def params_of(spec: RunSpec, data: Dataset, device: torch.device) -> dict[str, Any]:
    """Every parameter a run logs: hyperparameters, seed, where the code and data came from."""
    return {
        **as_logged(spec.impl.all_options(), spec.hp),
        "eval_every": training.eval_interval(spec.hp),  # what ran, not None for the default
        "plugin": spec.impl.name,
        "plugin_distribution": spec.impl.distribution,
        "plugin_version": spec.impl.version,
        "seed": spec.seed,
        "device": str(device),
        "compile": spec.compile,
        "dataset": data.name,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "dataset_digest": data.digest,
        "mlp_lab_version": mlp_lab.__version__,
        "torch_version": torch.__version__,
    }


def execute(
    spec: RunSpec, data: Dataset, device: torch.device, tracker: Tracker, parent: str | None = None, quiet: bool = False
) -> Outcome:
    """Train ``spec`` on ``data`` as one MLflow run and log everything; never raises for plugin errors."""
    name = f"{spec.impl.name}-s{spec.seed}"
    tags = {"mlp_lab.plugin": spec.impl.name, "mlp_lab.kind": "run"}
    run = tracker.start_run(name, {**params_of(spec, data, device), **device_params(device)}, tags=tags, parent=parent)
    run.ready()  # the run exists before training starts: a store that cannot take it fails now
    progress = Progress(name, spec.hp.steps, quiet=quiet)

    done = [0]  # steps whose losses were handed over
    trained = [0.0, time.perf_counter()]  # training seconds at the last evaluation, and when it ended

    def on_losses(values: list[float], first: int) -> None:
        run.log_series("train_loss", values, first)
        done[0] = first + len(values)
        progress.update(done[0], values[-1], trained[0] + time.perf_counter() - trained[1])

    held: list[training.Evaluation] = []  # the last evaluation, written with the run's final figures

    def on_eval(ev: training.Evaluation) -> None:
        trained[:] = [ev.train_time_s, time.perf_counter()]
        if ev.step == spec.hp.steps:
            held.append(ev)
        else:
            run.log_metrics(ev.metrics(), ev.step)

    try:
        log_datasets(run, data)
        model, summary = build_and_train(spec, data, device, on_losses, on_eval)
        metrics = summary.metrics()
        run.push()  # the metrics gathered during training are written beside the figure and model logging
        run.log_metrics(metrics, summary.steps, now=True)  # before the model, which MLflow gives the metrics at its step
        held.clear()
        title = f"{spec.impl.name} (seed {spec.seed}) on {data.name}"
        run.log_figure(figures.loss_curve(summary, title), "loss_curve.png")
        model_uri = log_model(run, spec, model, data, summary.steps)
        progress.close()
        run.end("FINISHED")
        return Outcome(spec, run.run_id, "FINISHED", metrics=metrics, model_uri=model_uri, summary=summary)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated)
        progress.close()
        with refused_by_store(name):
            try:
                for ev in held:
                    run.log_metrics(ev.metrics(), ev.step)
            finally:
                run.end("KILLED", str(exc) or "interrupted (Ctrl-C)")
        print(
            f"Run {name} ({run.run_id}) ended KILLED after {done[0]} of {spec.hp.steps} steps; what it logged is kept.",
            file=sys.stderr,
        )
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing plugin (even one calling sys.exit) ends its own run
        progress.close()
        error = str(exc) if isinstance(exc, (PluginError, TrackingError)) else failure(spec, exc)
        with refused_by_store(name):
            try:
                for ev in held:
                    run.log_metrics(ev.metrics(), ev.step)
                run.log_text("".join(traceback.format_exception(exc)), "error.txt")
            finally:
                run.end("FAILED", error)
        print(f"Error: {error}", file=sys.stderr)
        return Outcome(spec, run.run_id, "FAILED", error=error)


def failure(spec: RunSpec, exc: BaseException) -> str:
    """What a plugin's failure is reported as, in one line (the whole traceback goes into error.txt): where in
    its own code it was raised; for hand-written gradients that let the loss diverge, the check to run."""
    error = f"{spec.impl.label} failed: {described_where(exc)}"
    hand_written = getattr(spec.model_class, "has_hand_written_gradients", lambda: False)()
    if isinstance(exc, training.NonFiniteLoss) and hand_written:
        error += f"; a wrong gradient can do that: mlp-lab gradcheck --plugin {spec.impl.name}"
    if isinstance(exc, AttributeError) and exc.name in ("hp", "training"):  # Model.__init__ never ran
        error += "; does __init__ call super().__init__(hp)?"
    return error


@contextlib.contextmanager
def refused_by_store(name: str) -> Iterator[None]:
    """What MLflow raises while a run is being ended (it was deleted in the UI, say) as a one-line :class:`TrackingError`."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"the MLflow store refused run {name}: {store_refusal(exc)}") from exc


def build_and_train(
    spec: RunSpec,
    data: Dataset,
    device: torch.device,
    on_losses: Callable[[list[float], int], None],
    on_eval: Callable[[training.Evaluation], None],
) -> tuple[Any, training.Summary]:
    """Seed, build the model on the CPU, check it can be saved, move it to ``device`` and train it.

    The same seed gives the same numbers: saving draws no random numbers.
    """
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    model = spec.model_class(Hyperparams(dict(spec.hp.values)))  # its own copy: what it changes stays in its run
    model_file.check_saveable(model, spec.impl.label)  # a model that cannot be saved fails now, not after its training
    model.to(device)
    return model, training.train(model, data.to(device), spec.hp, spec.seed, on_losses, on_eval, compile=spec.compile)


def device_params(device: torch.device) -> dict[str, Any]:
    """The device's name and memory, for the run's params."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device_name": props.name, "device_memory_gb": round(props.total_memory / 2**30, 1)}
    from mlp_lab.devices import cpu_name, host_memory_gb

    return {"device_name": cpu_name(), "device_memory_gb": host_memory_gb(), "cpu_threads": torch.get_num_threads()}


def log_datasets(run: RunLog, data: Dataset) -> None:
    for split, context in ((data.train, "training"), (data.test, "evaluation")):
        run.log_dataset(
            f"{data.name}-{context}",
            data.digest,
            data.source,
            features=array_shape(split.x),
            targets=array_shape(split.y),
            context=context,
        )


def array_shape(t: torch.Tensor) -> ArrayShape:
    return ArrayShape(tuple(t.shape), str(torch.empty(0, dtype=t.dtype).numpy().dtype))


def log_model(run: RunLog, spec: RunSpec, model: Any, data: Dataset, step: int) -> str:
    saved = model_file.save(model, data.mean, data.std, spec.impl.label)  # an attribute set in training may not save
    example = data.raw_test[:5].numpy().astype("float32")
    return run.log_model(saved, example, model_file.requirements(spec.impl.distribution, spec.impl.version), step)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is a usage error."""
    from mlp_lab.errors import UsageError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError("--device mps: no MPS device is available here")
    return torch.device(name)

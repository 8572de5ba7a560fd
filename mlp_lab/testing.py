"""The conformance kit: checks an implementation against the plugin contract, for a plugin's own tests.

Plain functions, each raising :class:`ConformanceError` (an ``AssertionError``) with a message
that names the implementation and what is wrong (pytest shows that message, not the kit's code)::

    from mlp_lab.testing import check_implementation

    def test_my_plugin(tmp_path):
        check_implementation("my-plugin", tmp_path)

And a pytest plugin (entry point ``pytest11``, loaded by pytest wherever mlp-lab is installed)
with the fixture ``mlp_lab_conformance``: ``mlp_lab_conformance("my-plugin")`` runs every check
with a temporary MLflow store. The checks train for a few steps on the tiny set (500 / 100) on
the CPU, so they take seconds. Importing this module imports neither torch nor MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_lab.errors import described, described_where

if TYPE_CHECKING:
    from mlp_lab.data import Dataset
    from mlp_lab.registry import Implementation
    from mlp_lab.runs import RunSpec

STEPS = 30  # enough for any sensible default learning rate to lower the loss on the tiny set
SEED = 1337


class ConformanceError(AssertionError):
    """An implementation does not keep the plugin contract; the message says how."""


def _fail(impl_name: str, message: str) -> ConformanceError:
    return ConformanceError(f"implementation '{impl_name}': {message}")


@functools.cache
def _tiny() -> Dataset:
    from mlp_lab.data import load

    return load("tiny")


def implementation(name: str) -> Implementation:
    """The registered implementation ``name``, found through the real entry points."""
    __tracebackhide__ = True
    from mlp_lab.errors import UsageError
    from mlp_lab.registry import get_registry

    registry = get_registry()
    try:
        impl = registry.get(name)
    except UsageError as exc:
        raise ConformanceError(str(exc)) from None
    clash = registry.contested(name)
    if clash and not (impl.builtin and impl.name == name):  # which package is under test? (a built-in keeps its name)
        raise _fail(name, f"{clash}: give yours a name of its own")
    return impl


def _spec(name: str, steps: int, seed: int = SEED, overrides: dict[str, Any] | None = None) -> RunSpec:
    __tracebackhide__ = True
    from mlp_lab.errors import PluginError, UsageError
    from mlp_lab.model import refusal
    from mlp_lab.registry import check_overrides
    from mlp_lab.runs import RunSpec

    impl = implementation(name)
    try:
        overrides = check_overrides([impl], overrides or {})  # as -p: a misspelt name would check the defaults instead
        hp = impl.hyperparams({**overrides, "steps": steps, "eval_every": steps})
        if hp.batch_size is not None and hp.batch_size > len(_tiny().train):
            hp = impl.hyperparams({**overrides, "steps": steps, "eval_every": steps, "batch_size": None})
        model_class = impl.model_class()
    except (PluginError, UsageError) as exc:
        raise ConformanceError(str(exc)) from None
    try:
        why = refusal(model_class, hp)
    except (Exception, SystemExit) as exc:
        raise _fail(name, f"check_hyperparams failed: {described(exc)}") from exc
    if why:
        raise _fail(name, f"check_hyperparams refuses {'these options' if overrides else 'its defaults'}: {why}")
    return RunSpec(impl, model_class, hp, seed)


def _train(spec: RunSpec) -> tuple[Any, Any]:
    """Train ``spec`` on the tiny set exactly as ``mlp-lab run`` does (same seeding, same loop), on the CPU."""
    __tracebackhide__ = True
    import torch

    from mlp_lab.errors import PluginError
    from mlp_lab.runs import build_and_train

    try:
        return build_and_train(spec, _tiny(), torch.device("cpu"), lambda values, first: None, lambda ev: None)
    except PluginError as exc:  # the model breaks the contract (it cannot be saved, say): the message says how
        raise ConformanceError(str(exc)) from None
    except (Exception, SystemExit) as exc:  # sys.exit in a plugin fails the check, as it fails a run
        raise _fail(spec.impl.name, f"training failed: {described_where(exc)}") from exc


def check_registered(name: str) -> Implementation:
    """Registered with a name and a one-line description; its model class imports and has the required methods."""
    __tracebackhide__ = True
    from mlp_lab.errors import PluginError

    impl = implementation(name)  # a description that is not one line is refused at registration
    try:
        impl.model_class()
    except PluginError as exc:
        raise ConformanceError(str(exc)) from None
    return impl


def check_predictions(name: str, steps: int = STEPS, overrides: dict[str, Any] | None = None) -> None:
    """``parameters()`` names tensors; ``predict`` gives finite float scores (N, 10); ``loss`` a finite 0-dim tensor."""
    __tracebackhide__ = True
    spec = _spec(name, steps, overrides=overrides)
    _predictions_ok(spec, _train(spec)[0])


def _predictions_ok(spec: RunSpec, model: Any) -> None:
    __tracebackhide__ = True
    import torch

    from mlp_lab.data import Batch
    from mlp_lab.errors import PluginError
    from mlp_lab.model import checked_parameters
    from mlp_lab.training import kind_of

    name = spec.impl.name
    try:
        if not checked_parameters(model, f"implementation '{name}'"):
            raise _fail(name, "parameters() returned no tensors: name the trainable ones")
    except PluginError as exc:
        raise ConformanceError(str(exc)) from None
    test = _tiny().test
    model.train(False)
    with torch.no_grad():
        scores = model.predict(test.x)
        loss = model.loss(Batch(test.x, test.y, test.onehot))
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(test), 10):
        raise _fail(name, f"predict(x) must return a tensor of scores of shape ({len(test)}, 10), got {kind_of(scores)}")
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        raise _fail(name, "predict(x) must return finite floating-point scores")
    digits = scores.argmax(1)
    if digits.min() < 0 or digits.max() > 9:
        raise _fail(name, "the predicted digits (argmax of the scores) must lie in 0..9")
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not torch.isfinite(loss):
        raise _fail(name, f"loss(batch) must return a finite 0-dim tensor, got {loss!r}")


def check_deterministic(name: str, steps: int = STEPS, overrides: dict[str, Any] | None = None) -> None:
    """The same seed gives the same losses, step by step, and the same predictions."""
    __tracebackhide__ = True
    spec = _spec(name, steps, overrides=overrides)
    _same(spec, _train(spec), _train(spec))


def _same(spec: RunSpec, first: tuple[Any, Any], second: tuple[Any, Any]) -> None:
    __tracebackhide__ = True
    import torch

    (model_a, summary_a), (model_b, summary_b) = first, second
    if summary_a.losses != summary_b.losses:
        diff = next(i for i, (a, b) in enumerate(zip(summary_a.losses, summary_b.losses, strict=True)) if a != b)
        raise _fail(spec.impl.name, f"two runs with seed {spec.seed} differ from step {diff} on (draw randomness from torch)")
    x = _tiny().test.x
    model_a.train(False)
    model_b.train(False)
    with torch.no_grad():
        if not torch.equal(model_a.predict(x), model_b.predict(x)):
            raise _fail(spec.impl.name, f"two runs with seed {spec.seed} end with different predictions")


def check_learns(name: str, steps: int = STEPS, overrides: dict[str, Any] | None = None) -> None:
    """A few training steps on the tiny set lower the loss on the training set."""
    __tracebackhide__ = True
    spec = _spec(name, steps, overrides=overrides)
    _learned(spec, _train(spec)[1])


def _learned(spec: RunSpec, summary: Any) -> None:
    __tracebackhide__ = True
    before, after = summary.evaluations[0].train_loss, summary.final.train_loss
    if not after < before:
        lowered = f"{spec.hp.steps} steps did not lower the training loss ({before:.6g} before, {after:.6g} after)"
        raise _fail(spec.impl.name, lowered)


def check_mlflow_roundtrip(name: str, workdir: Path | str, steps: int = STEPS, overrides: dict[str, Any] | None = None) -> str:
    """A run logs to MLflow (a SQLite store under ``workdir``) and its model reloads through ``mlflow.pyfunc``,
    predicting the same digits as the same training done here; returns the model's URI."""
    __tracebackhide__ = True
    spec = _spec(name, steps, overrides=overrides)
    return _roundtrip(spec, _train(spec)[0], workdir)


def _roundtrip(spec: RunSpec, model: Any, workdir: Path | str) -> str:
    __tracebackhide__ = True
    import mlflow.pyfunc
    import numpy as np
    import torch

    from mlp_lab.pyfunc_model import DigitClassifier
    from mlp_lab.runs import execute
    from mlp_lab.tracking import Tracker

    name, data = spec.impl.name, _tiny()
    store = Path(workdir).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    raw = data.raw_test.numpy().astype("float32")
    with _mlflow_settings_kept():
        tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", "mlp-lab-conformance")
        outcome = execute(spec, data, torch.device("cpu"), tracker, quiet=True)
        if outcome.status != "FINISHED" or outcome.model_uri is None:
            raise _fail(name, f"the tracked run ended {outcome.status}: {outcome.error}")
        logged = tracker.client.get_metric_history(outcome.run_id, "train_loss")
        if len(logged) != spec.hp.steps or "test_accuracy" not in tracker.client.get_run(outcome.run_id).data.metrics:
            raise _fail(name, f"the run logged {len(logged)} of {spec.hp.steps} training losses, or no test_accuracy")
        reloaded = np.asarray(mlflow.pyfunc.load_model(outcome.model_uri).predict(raw))
    expected = DigitClassifier(model, data.mean, data.std).predict(None, raw)
    if reloaded.shape != expected.shape or not np.array_equal(reloaded, expected):
        raise _fail(name, f"the model reloaded from {outcome.model_uri} predicts other digits than the trained model")
    return outcome.model_uri


@contextlib.contextmanager
def _mlflow_settings_kept() -> Iterator[None]:
    """Put back the tracking URI and the environment variables MLflow sets for the whole process, so
    the kit's temporary store does not become the default of the tests that follow."""
    import mlflow

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uri)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_gradients(name: str, samples: int = 5, overrides: dict[str, Any] | None = None, random_weights: bool = True) -> bool:
    """Hand-written gradients, where offered (``forward_backward``), match autograd's, at random weights (or, with
    ``random_weights=False``, the model's own initial ones); False when there are none."""
    __tracebackhide__ = True
    from mlp_lab import gradcheck
    from mlp_lab.data import Batch
    from mlp_lab.errors import PluginError

    spec = _spec(name, 1, overrides=overrides)
    if not spec.model_class.has_hand_written_gradients():
        near = gradcheck.near_misses(spec.model_class)
        if near:  # a typo would leave the hand-written gradients unchecked, and the kit green
            raise _fail(name, f"{spec.model_class.__name__} defines {', '.join(near)}, not forward_backward")
        return False
    import random

    import torch

    random.seed(SEED)
    torch.manual_seed(SEED)
    train = _tiny().train
    try:
        model = spec.model_class(spec.hp)
        hints: list[str] = []
        rows = gradcheck.hand_written(
            model,
            Batch(train.x[:samples], train.y[:samples], train.onehot[:samples]),
            f"implementation '{name}'",
            random_weights=random_weights,
            hints=hints,
        )
    except PluginError as exc:
        raise ConformanceError(str(exc)) from None
    except (Exception, SystemExit) as exc:
        raise _fail(name, f"building the model or forward_backward failed: {described(exc)}") from exc
    if not rows:
        raise _fail(name, "forward_backward returned no gradients")
    bad = [r.name + (f" (max diff {r.max_diff:.3g})" if math.isfinite(r.max_diff) else "") for r in rows if not r.approximate]
    if bad:
        raise _fail(name, f"hand-written gradients differ from autograd's: {', '.join(bad)}" + "".join(f"; {h}" for h in hints))
    return True


def check_implementation(
    name: str, workdir: Path | str | None = None, steps: int = STEPS, overrides: dict[str, Any] | None = None
) -> list[str]:
    """Every check, in order, sharing the trainings; returns the names of the checks that ran.

    ``gradients`` runs only for hand-written gradients, before any training (a wrong one would otherwise
    show as a loss that diverged). ``workdir`` holds the MLflow store (a
    temporary folder when None); ``overrides`` sets hyperparameters or options (``{"lr": 0.05}``)
    where the defaults do not suit a 30-step run.
    """
    __tracebackhide__ = True
    check_registered(name)
    gradients = check_gradients(name, overrides=overrides)  # first: a wrong gradient shows as one, not as divergence
    spec = _spec(name, steps, overrides=overrides)
    first = _train(spec)
    _predictions_ok(spec, first[0])
    _same(spec, first, _train(spec))
    _learned(spec, first[1])
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="mlp-lab-conformance-") as tmp:
            _roundtrip(spec, first[0], tmp)
    else:
        _roundtrip(spec, first[0], workdir)
    return ["registered", *(["gradients"] if gradients else []), "predictions", "deterministic", "learns", "mlflow"]


try:  # the pytest plugin (entry point pytest11); the functions above work without pytest
    import pytest
except ImportError:  # pragma: no cover - pytest is not a dependency of mlp-lab
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def mlp_lab_conformance_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A folder for the conformance runs' MLflow store, one per test session (creating a store takes seconds)."""
        return tmp_path_factory.mktemp("mlp-lab-conformance")

    @pytest.fixture
    def mlp_lab_conformance(mlp_lab_conformance_store: Path) -> Any:
        """``mlp_lab_conformance(name, steps=30, overrides=None)`` runs every conformance check on ``name``."""
        return lambda name, steps=STEPS, overrides=None: check_implementation(name, mlp_lab_conformance_store, steps, overrides)

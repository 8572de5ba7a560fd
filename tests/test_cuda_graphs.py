"""``--compile`` on CUDA replays recorded steps: the same training as eager steps. Skips without a GPU.

Needs no MLflow, so it also runs on a GPU machine that has only torch: ``python -m pytest tests/test_cuda_graphs.py``.
"""

from __future__ import annotations

import random

import pytest
import torch

from mlp_lab import data, devices, training
from mlp_lab.cuda_graphs import make_capturable
from mlp_lab.model import Model
from mlp_lab.registry import get_registry
from mlp_lab_plugins import mlp

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def build(name: str, overrides: dict, device: str) -> tuple[Model, object]:
    impl = get_registry().get(name)
    hp = impl.hyperparams(overrides)
    random.seed(0)
    torch.manual_seed(0)
    return impl.model_class()(hp).to(device), hp


def test_built_in_models_say_which_steps_replay():
    registry = get_registry()
    assert all(registry.get(n).model_class().replays_steps() for n in ("scratch", "autograd", "nn-module", "best"))
    assert not Model.replays_steps()
    scratch, _ = build("scratch", {"decay_at": 30}, "cpu")
    assert {scratch.step_key(s) for s in range(60)} == {True, False}
    best, _ = build("best", {"schedule": "constant"}, "cpu")
    assert {best.step_key(s) for s in range(60)} == {1.0}
    cosine, _ = build("best", {"steps": 60}, "cpu")
    assert len({cosine.step_key(s) for s in range(60)}) > 50  # eager: the learning rate is a Python number
    make_capturable(cosine)
    assert len({cosine.step_key(s) for s in range(60)}) == 1  # recorded: computed on the device


def test_optimisers_become_capturable():
    model, _ = build("nn-module", {}, "cpu")
    make_capturable(model)
    assert all(group["capturable"] for group in model.optimizer.param_groups)
    assert all(not group["fused"] for group in model.optimizer.param_groups)  # no fused kernel chosen off CUDA


@CUDA
def test_adam_becomes_fused_on_cuda_unless_the_model_chose():
    model, _ = build("nn-module", {}, "cuda")
    make_capturable(model)
    assert all(g["capturable"] and g["fused"] and not g["foreach"] for g in model.optimizer.param_groups)
    chosen, _ = build("nn-module", {}, "cuda")
    chosen.optimizer = torch.optim.AdamW(chosen.net.parameters(), foreach=True)
    make_capturable(chosen)
    assert all(g["capturable"] and not g["fused"] and g["foreach"] for g in chosen.optimizer.param_groups)


@CUDA
@pytest.mark.parametrize(
    "name, overrides, keys",
    [
        ("scratch", {"decay_at": 30}, 2),
        ("autograd", {}, 1),
        ("nn-module", {}, 1),
        ("mini-batch", {}, 1),
    ],
)
def test_replayed_steps_give_the_eager_losses(name, overrides, keys):
    d = data.load("tiny").to("cuda")
    losses = {}
    for compiled in (False, True):
        model, hp = build(name, {"steps": 60, "eval_every": 20, **overrides}, "cuda")
        summary = training.train(model, d, hp, 0, lambda v, f: None, lambda e: None, compile=compiled)
        losses[compiled] = summary.losses
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-5)
    model, hp = build(name, {"steps": 60, **overrides}, "cuda")
    step = devices.compiled_train_step(model, torch.device("cuda"))
    stream = training.batches(d.train, hp.batch_size, torch.Generator(device="cuda").manual_seed(0))
    for i in range(60):
        step(next(stream), i)
    assert len(step.graphs) == keys and not step.given_up


@CUDA
def test_random_steps_replay_and_learn():
    """Dropout, batch norm and augmentation inside the graph: new random numbers at every replay."""
    d = data.load("tiny").to("cuda")
    model, hp = build("best", {"steps": 100, "eval_every": 50, "schedule": "constant", "hidden": 128}, "cuda")
    summary = training.train(model, d, hp, 0, lambda v, f: None, lambda e: None, compile=True)
    assert len(set(summary.losses[10:20])) == 10
    assert summary.final.train_accuracy > 0.5


@CUDA
def test_a_step_that_cannot_be_recorded_trains_eagerly(capsys):
    class Syncing(Model):
        def __init__(self, hp):
            super().__init__(hp)
            self.w = torch.zeros(784, 10, requires_grad=True)

        def parameters(self):
            return {"w": self.w}

        def predict(self, x):
            return x @ self.w

        def loss(self, batch):
            return torch.nn.functional.cross_entropy(self.predict(batch.x), batch.y)

        def step_key(self, step):
            return None

        def train_step(self, batch, step):
            lsi = self.loss(batch)
            (grad,) = torch.autograd.grad(lsi, self.w)
            with torch.no_grad():
                self.w -= 0.1 * grad
            if lsi.item() > 1e9:  # a host synchronisation: cannot be recorded
                raise AssertionError
            return lsi.detach()

    d = data.load("tiny").to("cuda")
    model = Syncing(get_registry().get("scratch").hyperparams({})).to("cuda")
    step = devices.compiled_train_step(model, torch.device("cuda"))
    for i in range(10):
        step(d.train, i)
    assert step.given_up
    assert "cannot replay this model's step from a CUDA graph" in capsys.readouterr().err


@CUDA
def test_a_cosine_schedule_replays_from_one_graph_with_the_eager_losses():
    """``best``'s default schedule changes the learning rate every step: recorded, it is computed on the device."""
    d = data.load("tiny").to("cuda")
    losses = {}
    for compiled in (False, True):
        model, hp = build("best", {"steps": 60, "eval_every": 20, "hidden": 64, "augment": 0, "dropout": 0.0}, "cuda")
        summary = training.train(model, d, hp, 0, lambda v, f: None, lambda e: None, compile=compiled)
        losses[compiled] = summary.losses
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-5)
    model, hp = build("best", {"steps": 60, "hidden": 64}, "cuda")
    step = devices.compiled_train_step(model, torch.device("cuda"))
    stream = training.batches(d.train, hp.batch_size, torch.Generator(device="cuda").manual_seed(0))
    for i in range(60):
        step(next(stream), i)
    assert len(step.graphs) == 1 and not step.given_up
    last = hp.lr * mlp.lr_factor(59, 60, "cosine", hp.warmup)  # near zero: float32 on the device, 2e-5 apart
    assert model.optimizer.param_groups[0]["lr"].item() == pytest.approx(last, rel=1e-3)


@CUDA
def test_a_step_key_that_changes_every_step_trains_eagerly(capsys):
    from mlp_lab.cuda_graphs import MAX_KEYS, GraphedStep

    class EveryStep(type(build("autograd", {}, "cpu")[0])):
        def step_key(self, step):
            return step

    hp = get_registry().get("autograd").hyperparams({"steps": 30})
    torch.manual_seed(0)
    model = EveryStep(hp).to("cuda")
    d = data.load("tiny").to("cuda")
    step = GraphedStep(model, torch.device("cuda"))
    losses = [step(d.train, i) for i in range(30)]
    assert step.given_up and not step.graphs and len(losses) == 30
    assert f"more than {MAX_KEYS} different step keys" in capsys.readouterr().err

"""The conformance kit (mlp_lab.testing): every built-in passes it, and each check catches what it is for."""

from __future__ import annotations

import pytest

from mlp_lab import testing
from mlp_lab.registry import load

# Every built-in implementation, found the way users find them: new built-ins are covered on their own.
BUILTINS = [name for name, impl in load().implementations.items() if impl.builtin]


def test_there_are_builtins_to_check():
    assert {"scratch", "autograd", "nn-module"} <= set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_passes_the_kit(mlp_lab_conformance, name):
    """Through the pytest11 fixture, as a plugin's own test suite uses it."""
    ran = mlp_lab_conformance(name)
    has_hand_written = testing.implementation(name).model_class().has_hand_written_gradients()
    gradients = ["gradients"] if has_hand_written else []  # checked before any training
    assert ran == ["registered", *gradients, "predictions", "deterministic", "learns", "mlflow"]


BAD = """
import random
import threading

import torch
from mlp_lab import Model, hookimpl


class Good(Model):
    def __init__(self, hp):
        super().__init__(hp)
        self.w = torch.zeros(784, 10).normal_(0, 0.01)
        self.b = torch.zeros(10)

    def parameters(self):
        return {"w": self.w, "b": self.b}

    def scores(self, x):
        return x @ self.w + self.b

    def predict(self, x):
        return self.scores(x)

    def loss(self, batch):
        return torch.nn.functional.cross_entropy(self.scores(batch.x), batch.y)

    def forward_backward(self, batch):
        z = self.scores(batch.x)
        dz = (torch.softmax(z, 1) - batch.onehot) / len(batch)
        return torch.nn.functional.cross_entropy(z, batch.y), {"z": z}, {"z": dz, "w": batch.x.T @ dz, "b": dz.sum(0)}

    def train_step(self, batch, step):
        loss, _, g = self.forward_backward(batch)
        self.w -= 0.5 * g["w"]
        self.b -= 0.5 * g["b"]
        return loss


class WrongGradient(Good):
    def forward_backward(self, batch):
        loss, a, g = super().forward_backward(batch)
        return loss, a, {**g, "w": 2 * g["w"]}


class NineScores(Good):
    def predict(self, x):
        return super().predict(x)[:, :9]


class Unseeded(Good):
    def __init__(self, hp):
        super().__init__(hp)
        self.b += torch.tensor(random.Random().random()) * torch.arange(10.0)  # a random source the core does not seed


class Idle(Good):
    def train_step(self, batch, step):
        return self.loss(batch)


class Unpicklable(Good):
    def __init__(self, hp):
        super().__init__(hp)
        self.lock = threading.Lock()


class Exits(Good):
    def train_step(self, batch, step):
        raise SystemExit(3)


class Fussy(Good):
    @classmethod
    def check_hyperparams(cls, hp):
        if hp.hidden != 7:
            raise ValueError(f"hidden must be 7, got {hp.hidden}")


class BrokenCheck(Good):
    @classmethod
    def check_hyperparams(cls, hp):
        return hp.hiden


class Misspelt(Good):
    forward_backwards = Good.forward_backward  # a typo: the hand-written gradients would never be checked
    forward_backward = Model.forward_backward


class BrokenInit(Good):
    def __init__(self, hp):
        raise ValueError("no such layer")


@hookimpl
def register_implementations(register):
    register("good", "A linear softmax classifier with hand-written gradients.", Good, defaults={"steps": 10})
    register("wrong-gradient", "Its hand-written gradient of w is twice autograd's.", WrongGradient)
    register("nine-scores", "Predicts 9 scores per sample.", NineScores)
    register("unseeded", "Draws its init from an unseeded random source.", Unseeded)
    register("idle", "Never updates its parameters.", Idle)
    register("unpicklable", "Holds a lock, which no model file can hold.", Unpicklable)
    register("two-lines", "First line.\\nSecond line.", Good)
    register("exits", "Calls sys.exit in train_step.", Exits)
    register("broken-init", "Raises when built.", BrokenInit)
    register("fussy", "Refuses every hidden size but 7, its default too.", Fussy)
    register("broken-check", "Its check_hyperparams has a typo.", BrokenCheck)
    register("misspelt", "Defines forward_backwards.", Misspelt)
"""


@pytest.fixture
def bad_models(plugin_dist):
    plugin_dist("bad-models", "bad_models", BAD)


def test_a_conforming_third_party_model_passes_with_its_gradients_checked(bad_models, mlp_lab_conformance_store):
    assert testing.check_implementation("good", mlp_lab_conformance_store, steps=5) == [
        "registered",
        "gradients",
        "predictions",
        "deterministic",
        "learns",
        "mlflow",
    ]


@pytest.mark.parametrize(
    ("check", "name", "kwargs", "says"),
    [
        (testing.check_registered, "two-lines", {}, "needs a one-line description"),  # refused at registration
        (testing.check_registered, "nope", {}, "unknown plugin 'nope'"),
        (
            testing.check_predictions,
            "nine-scores",
            {"steps": 5},
            "predict returned shape (500, 9) for 500 inputs; expected a (500, 10) tensor",
        ),
        (testing.check_deterministic, "unseeded", {"steps": 5}, "differ from step 0"),
        (testing.check_learns, "idle", {"steps": 5}, "did not lower the training loss"),
        (testing.check_gradients, "wrong-gradient", {}, "hand-written gradients differ from autograd's: w (max diff"),
        (testing.check_gradients, "wrong-gradient", {}, "; w is autograd's gradient times 2"),
        (testing.check_learns, "exits", {"steps": 5}, "training failed: SystemExit: 3"),
        (testing.check_gradients, "broken-init", {}, "building the model or forward_backward failed: ValueError: no such layer"),
        (testing.check_learns, "good", {"steps": 5, "overrides": {"hiden": 3}}, "unknown parameter 'hiden' for good; known:"),
        (testing.check_learns, "fussy", {"steps": 5}, "check_hyperparams refuses its defaults: hidden must be 7, got 50"),
        (testing.check_gradients, "misspelt", {}, "Misspelt defines forward_backwards, not forward_backward"),
        (
            testing.check_gradients,
            "broken-check",
            {},
            "check_hyperparams failed: AttributeError: no hyperparameter 'hiden' (there are ",
        ),
    ],
)
def test_each_check_catches_what_it_is_for(bad_models, check, name, kwargs, says):
    with pytest.raises(testing.ConformanceError) as caught:
        check(name, **kwargs)
    assert says in str(caught.value)
    assert isinstance(caught.value, AssertionError)  # pytest reports it as a plain test failure


def test_a_model_that_cannot_be_saved_fails_before_it_trains(bad_models, mlp_lab_conformance_store):
    says = "implementation 'unpicklable' (plugin 'bad_models' from bad-models 0.1): the model cannot be saved: attribute 'lock'"
    for check in (testing.check_predictions, testing.check_mlflow_roundtrip):
        with pytest.raises(testing.ConformanceError) as caught:
            check("unpicklable", *([mlp_lab_conformance_store] if check is testing.check_mlflow_roundtrip else []), steps=3)
        assert str(caught.value).startswith(says)


def test_gradients_are_not_checked_where_none_are_hand_written(bad_models):
    assert testing.check_gradients("nn-module") is False


def test_parameters_may_be_any_mapping_of_tensors_and_the_kit_wants_some():
    import torch

    from mlp_lab.errors import PluginError
    from mlp_lab.model import Model, checked_parameters

    class Held(Model):
        def __init__(self, params):
            super().__init__(None)
            self.held = params

        def parameters(self):
            return self.held

    weights = torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.zeros(2))})
    assert list(checked_parameters(Held(weights), "it")) == ["w"]
    assert checked_parameters(Held({}), "it") == {}  # a model with nothing to train still runs
    for bad, says in (([torch.zeros(2)], "got list"), ({"w": 1.0}, "got a mapping of str: float")):
        with pytest.raises(PluginError, match=f"^it: parameters\\(\\) must return a dict of tensors by name, {says}$"):
            checked_parameters(Held(bad), "it")


def test_train_switches_the_submodules_of_a_model_that_is_also_a_module():
    import torch

    from mlp_lab.model import Model

    class Both(Model, torch.nn.Module):
        def __init__(self):
            Model.__init__(self, None)
            torch.nn.Module.__init__(self)
            self.drop = torch.nn.Dropout(0.5)  # kept in _modules, not in vars()
            self.held = torch.nn.Linear(2, 2)

    model = Both().train(False)
    assert not model.training and not model.drop.training and not model.held.training
    model.train()
    assert model.drop.training and model.held.training

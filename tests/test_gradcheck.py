"""``mlp-lab gradcheck``: the backprop-ninja table, and a planted wrong gradient caught."""

from __future__ import annotations

import pytest
import torch

from mlp_lab import gradcheck

WRONG = """
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.scratch import Scratch
from mlp_lab_plugins.seed import TANH_MSE

class WrongB1(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        grads["b1"] = grads["b1"] * 1.01  # planted: one gradient 1% off
        return loss, activations, grads

@hookimpl
def register_implementations(register):
    options = (*TANH_MSE, Option("decay_at", int, 5000), Option("decay", float, 0.1))
    register("wrong-b1", "Scratch with a planted wrong b1 gradient.", WrongB1, options=options)
"""


def table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 4 and cells[0] not in ("tensor", ""):
            rows[cells[0]] = cells[1:]
    return rows


def test_scratch_gradients_match_autograd(run_cli):
    result = run_cli("gradcheck", "--plugin", "scratch")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert set(rows) == {"h2", "z2", "w2", "b2", "h1", "z1", "w1", "b1"}
    assert all(r[1] == "True" for r in rows.values())
    assert rows["h2"][0] == "True"  # as in the notebook, some are exact, the others approximate
    assert "All 8 gradients match." in result.stdout


@pytest.mark.parametrize("init_std, samples, seed", [("0.1", "5", "1337"), ("0.1", "1000", "0"), ("1.0", "1000", "3")])
def test_right_gradients_pass_at_any_scale_despite_float32_rounding(run_cli, init_std, samples, seed):
    """Larger weights leave about 1e-7 of the largest entry in w1's near-zero entries: right code, not a mismatch."""
    result = run_cli("gradcheck", "--plugin", "scratch", "-p", f"init_std={init_std}", "--samples", samples, "--seed", seed)
    assert result.exit_code == 0, result.output
    assert "All 8 gradients match." in result.stdout


def test_close_is_allclose_with_atol_scaled_to_the_largest_finite_entry():
    ref = torch.tensor([1.0, 1e-3, -2e-4, 0.0])
    assert gradcheck.close(ref + 5e-6, ref)  # float32 rounding of sums: within 1e-5 of the largest entry
    assert not gradcheck.close(ref * 1.001, ref)  # 0.1% off
    assert not gradcheck.close(torch.tensor([1.0, 2e-3, -2e-4, 0.0]), ref)  # one small entry twice what it should be
    assert not gradcheck.close(torch.tensor([1.0, 1e-3, 2e-4, 0.0]), ref)  # a sign flipped on a small entry
    assert not gradcheck.close(torch.tensor([float("inf"), 1000.0]), torch.tensor([float("inf"), 1.0]))  # inf sets no scale
    assert gradcheck.close(torch.zeros(3), torch.zeros(3)) and gradcheck.close(torch.zeros(0), torch.zeros(0))
    assert not gradcheck.close(torch.full((3,), 1e-7), torch.zeros(3))  # against zero: allclose's own atol, 1e-8


def test_a_planted_wrong_gradient_exits_1_naming_it(run_cli, plugin_dist):
    plugin_dist("wrong-plugin", "wrong_mod", WRONG)
    result = run_cli("gradcheck", "--plugin", "wrong-b1")
    assert result.exit_code == 1
    rows = table_rows(result.stdout)
    assert rows["b1"][1] == "False" and rows["w1"][1] == "True"
    assert result.stderr.strip().splitlines() == ["Gradient mismatch in: b1", "Hint: b1 is autograd's gradient times 1.01"]


def test_autograd_plugins_are_checked_against_finite_differences(run_cli):
    for plugin in ("autograd", "nn-module"):
        result = run_cli("gradcheck", "--plugin", plugin, "--entries", "5")
        assert result.exit_code == 0, result.output
        assert "finite differences, float64" in result.stdout
        rows = table_rows(result.stdout)
        assert len(rows) == 4 and all(r[1] == "True" for r in rows.values())


def test_the_model_is_built_for_the_batch_it_is_checked_on(run_cli):
    """Batch norm of one image is undefined: the plugin says so (it knows the batch size), not torch, mid-forward."""
    result = run_cli("gradcheck", "--plugin", "batch-norm", "--samples", "1")
    assert result.exit_code == 2 and "norm=batch needs batches of 2 or more images" in result.stderr, result.output
    two = run_cli("gradcheck", "--plugin", "batch-norm", "--samples", "2", "--entries", "2")
    assert two.exit_code == 0, two.output


UNUSED = """
import torch
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.scratch import Scratch
from mlp_lab_plugins.seed import TANH_MSE

class ExtraActivation(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        activations["unused"] = activations["h1"].detach().clone().requires_grad_(True)  # the loss never sees it
        grads["unused"] = torch.zeros_like(activations["unused"])
        return loss, activations, grads

@hookimpl
def register_implementations(register):
    options = (*TANH_MSE, Option("decay_at", int, 5000), Option("decay", float, 0.1))
    register("extra-activation", "Scratch exposing an activation the loss does not use.", ExtraActivation, options=options)
"""


def test_an_activation_the_loss_does_not_use_has_gradient_zero(run_cli, plugin_dist):
    plugin_dist("extra-plugin", "extra_mod", UNUSED)
    result = run_cli("gradcheck", "--plugin", "extra-activation")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout)["unused"][:2] == ["True", "True"]  # exact and approximate


LEARNER = """
from mlp_lab import Option, hookimpl
from mlp_lab_plugins import scratch
from mlp_lab_plugins.scratch import Scratch, forward, loss
from mlp_lab_plugins.seed import TANH_MSE


def no_output_derivative(p, x, y, a):  # the learner's slip: dz2 = dh2, tanh' forgotten at the output
    g = scratch.backward(p, x, y, a)
    g["z2"] = dz2 = g["h2"]
    g["w2"], g["b2"] = a["h1"].T @ dz2, dz2.sum(0)
    g["h1"] = dh1 = dz2 @ p["w2"].T
    g["z1"] = dz1 = (1 - a["h1"] ** 2) * dh1
    g["w1"], g["b1"] = x.T @ dz1, dz1.sum(0)
    return g


class Forgot(Scratch):
    def forward_backward(self, batch):
        y = self.hp.target_scale * batch.onehot
        a = forward(self.p, batch.x)
        return loss(a["h2"], y), a, no_output_derivative(self.p, batch.x, y, a)


class SecondPass(Scratch):  # right gradients, but of activations from another forward pass than the loss's
    def forward_backward(self, batch):
        lsi, _, grads = super().forward_backward(batch)
        return lsi, forward(self.p, batch.x), grads


class TimesN(Scratch):  # a mean loss whose gradients forgot its 1/N
    def forward_backward(self, batch):
        lsi, a, grads = super().forward_backward(batch)
        return lsi / len(batch), a, grads


class Typo(Scratch):  # forward_backwards: never called, so autograd's gradients are the ones checked
    forward_backwards = Scratch.forward_backward
    forward_backward = scratch.Model.forward_backward


@hookimpl
def register_implementations(register):
    options = (*TANH_MSE, Option("decay_at", int, 5000), Option("decay", float, 0.1))
    register("forgot", "Scratch without tanh' at the output.", Forgot, options=options)
    register("second-pass", "Scratch returning another pass's activations.", SecondPass, options=options)
    register("typo", "Scratch with forward_backward misspelt.", Typo, options=options)
    register("times-n", "A mean loss, its gradients a sum's.", TimesN, options=options)
"""


def test_a_learners_slips_are_caught_and_named(run_cli, plugin_dist):
    plugin_dist("learner-plugin", "learner_mod", LEARNER)
    forgot = run_cli("gradcheck", "--plugin", "forgot")  # at the seed's init_std 0.001 tanh' is 1: random weights show it
    assert forgot.exit_code == 1 and "Gradient mismatch in: z2, w2, b2, h1, z1, w1, b1" in forgot.stderr, forgot.output
    step = "Hint: going back from the loss, z2 is the first that is wrong (h2 is right): look at the step from h2 back to z2"
    assert step in forgot.stderr.splitlines()
    times_n = run_cli("gradcheck", "--plugin", "times-n", "--samples", "4")
    assert times_n.exit_code == 1
    hint = "Hint: every mismatch is autograd's gradient times 4 (the batch size, 4: a 1/N missing?)"
    assert hint in times_n.stderr.splitlines(), times_n.stderr
    assert run_cli("gradcheck", "--plugin", "forgot", "--own-weights").exit_code == 0  # what the tiny init hid
    second = run_cli("gradcheck", "--plugin", "second-pass")
    assert second.exit_code == 1, second.output
    assert "h2 (not from the loss's forward pass)" in second.stdout
    typo = run_cli("gradcheck", "--plugin", "typo", "--entries", "2")
    assert typo.exit_code == 0 and "autograd vs finite differences" in typo.stdout, typo.output
    assert "Note: Typo defines forward_backwards, not forward_backward" in typo.stderr


FLAWED = """
import torch
from mlp_lab import Option, hookimpl
from mlp_lab_plugins.scratch import Scratch
from mlp_lab_plugins.seed import TANH_MSE

class Missing(Scratch):  # no gradient for w1 and b1: not checked is not passed
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        return loss, activations, {k: v for k, v in grads.items() if k not in ("w1", "b1")}

class WrongShape(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        return loss, activations, {**grads, "b1": grads["b1"][:10]}

class Stray(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        return loss, activations, {**grads, "logits": grads["h2"]}

class Detached(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        return loss.detach(), activations, grads

class NoGrad(Scratch):  # "no autograd here", the whole method under no_grad
    @torch.no_grad()
    def forward_backward(self, batch):
        return super().forward_backward(batch)

class NumpyGrads(Scratch):
    def forward_backward(self, batch):
        loss, activations, grads = super().forward_backward(batch)
        return loss, activations, {k: v.detach().numpy() for k, v in grads.items()}

class SumLoss(Scratch):  # loss() a mean, the trained loss a sum: both right, but not the same number
    def loss(self, batch):
        return super().loss(batch) / len(batch)

class Raises(Scratch):
    def __init__(self, hp):
        raise RuntimeError("init fails")

class ListParams(Scratch):
    def parameters(self):
        return list(self.p.values())

@hookimpl
def register_implementations(register):
    options = (*TANH_MSE, Option("decay_at", int, 5000), Option("decay", float, 0.1))
    for name, model in [("missing", Missing), ("wrong-shape", WrongShape), ("stray", Stray), ("detached", Detached),
                        ("raises", Raises), ("list-params", ListParams), ("no-grad", NoGrad), ("numpy-grads", NumpyGrads),
                        ("sum-loss", SumLoss)]:
        register(name, "Scratch with a flaw in its gradients.", model, options=options)
"""


def test_a_parameter_without_a_hand_written_gradient_fails(run_cli, plugin_dist):
    plugin_dist("flawed-plugin", "flawed_mod", FLAWED)
    result = run_cli("gradcheck", "--plugin", "missing")
    assert result.exit_code == 1
    rows = table_rows(result.stdout)
    assert rows["w1 (no hand-written gradient)"][:2] == ["False", "False"]
    assert rows["w2"][1] == "True"
    assert result.stderr.strip() == "Gradient mismatch in: w1 (no hand-written gradient), b1 (no hand-written gradient)"
    shape = run_cli("gradcheck", "--plugin", "wrong-shape")
    assert shape.exit_code == 1 and "Traceback" not in shape.output
    assert shape.stderr.strip() == "Gradient mismatch in: b1 (shape (10,), autograd's (50,))"


def test_a_plugin_that_breaks_in_gradcheck_is_one_line(run_cli, plugin_dist):
    plugin_dist("flawed-plugin", "flawed_mod", FLAWED)
    label = "implementation '{}' (plugin 'flawed_mod' from flawed-plugin 0.1)"
    line = next(i for i, text in enumerate(FLAWED.splitlines(), 1) if 'raise RuntimeError("init fails")' in text)
    expected = {
        "stray": ": forward_backward returned gradients for logits, neither parameters nor activations"
        " (those are w1, b1, w2, b2, z1, h1, z2, h2)",
        "detached": ": forward_backward must return the loss as computed from the parameters, with autograd on"
        " (not detached, not under torch.no_grad(): keep that for the update in train_step)",
        "no-grad": ": forward_backward must return the loss as computed from the parameters, with autograd on"
        " (not detached, not under torch.no_grad(): keep that for the update in train_step)",
        "numpy-grads": ": forward_backward's grads['h2'] is a numpy.ndarray, not a tensor",
        "raises": f" failed: RuntimeError: init fails (at flawed_mod.py:{line} in __init__)",  # where, in its code
        "list-params": ": parameters() must return a dict of tensors by name, got list",
    }
    for name, message in expected.items():
        result = run_cli("gradcheck", "--plugin", name)
        assert (result.exit_code, result.stderr.strip()) == (2, "Error: " + label.format(name) + message), result.output


def test_a_loss_that_differs_from_the_one_trained_is_noted(run_cli, plugin_dist):
    plugin_dist("flawed-plugin", "flawed_mod", FLAWED)
    result = run_cli("gradcheck", "--plugin", "sum-loss", "--samples", "4")
    assert result.exit_code == 0, result.output  # the gradients are right
    (note,) = result.stderr.strip().splitlines()
    assert note.startswith("Note: loss() gives ") and "on the same batch; 0.25 times it: evaluations report" in note
    assert run_cli("gradcheck", "--plugin", "scratch").stderr == ""  # the same loss: nothing to say


def test_a_gradient_autograd_finds_nan_fails_its_row_and_says_what_to_try():
    """NaN against NaN used to pass (allclose's equal_nan): a parameter that must stay positive, drawn negative."""
    import torch

    from mlp_lab.data import Batch

    class Positive:
        def __init__(self):
            self.p = {"scale": torch.full((3,), 2.0)}

        def parameters(self):
            return self.p

        def forward_backward(self, batch):
            root = self.p["scale"].sqrt()
            return root.sum(), {"root": root}, {"scale": 0.5 / root.detach(), "root": torch.ones(3)}

    batch = Batch(torch.zeros(1, 784), torch.zeros(1, dtype=torch.long), torch.zeros(1, 10))
    torch.manual_seed(0)
    drawn = {r.name: r.approximate for r in gradcheck.hand_written(Positive(), batch)}  # some drawn negative: NaN
    assert drawn["scale (autograd's is NaN or infinite here: try --own-weights)"] is False
    own = gradcheck.hand_written(Positive(), batch, random_weights=False)
    assert all(r.approximate for r in own) and {r.name for r in own} == {"scale", "root"}

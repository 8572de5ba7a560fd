"""The ladder of improved variants: one change per rung, seeded determinism, learning, options, ``best``."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from mlp_lab import data, training
from mlp_lab.data import Batch, Dataset
from mlp_lab.registry import get_registry
from mlp_lab_plugins import mlp, variants

from .conftest import runs_in, subprocess_env

RUNGS = [name for name, _, _ in variants.LADDER]

# What each rung changes relative to the one before it (the first: relative to nn-module).
CHANGES = {
    "relu": {"activation"},
    "cross-entropy": {"loss"},
    "he-init": {"init"},
    "mini-batch": {"batch_size", "eval_every"},
    "lr-schedule": {"schedule", "warmup"},
    "dropout": {"input_dropout", "dropout"},
    "weight-decay": {"weight_decay"},
    "augment": {"augment"},
    "batch-norm": {"norm"},
}


def defaults(name: str) -> dict:
    impl = get_registry().get(name)
    return {k: o.default for k, o in impl.all_options().items()}


def short_training(name: str, seed: int, dataset: Dataset, **overrides) -> tuple[training.Summary, mlp.MLP]:
    """Train as the core does (seed torch and random, build, train), without tracking."""
    impl = get_registry().get(name)
    hp = impl.hyperparams(overrides)
    random.seed(seed)
    torch.manual_seed(seed)
    model = impl.model_class()(hp)
    return training.train(model, dataset, hp, seed, lambda v, f: None, lambda ev: None), model


def test_every_rung_is_registered_in_order_after_the_seed_with_its_predecessor_named():
    names = get_registry().names()
    assert names[names.index("nn-module") + 1 :][: len(RUNGS)] == RUNGS
    previous = "nn-module"
    for name in RUNGS:
        impl = get_registry().get(name)
        assert impl.builtin and impl.plugin == "variants"
        assert impl.description.startswith(previous), (name, impl.description)
        previous = name


def test_each_rung_changes_one_thing_relative_to_the_one_before():
    previous = {**defaults("relu"), "activation": "tanh"}  # nn-module, in the shared model's terms
    assert {k: previous[k] for k in ("steps", "lr", "hidden", "batch_size")} == {
        k: defaults("nn-module")[k] for k in ("steps", "lr", "hidden", "batch_size")
    }
    for name, changed in CHANGES.items():
        current = defaults(name)
        assert {k for k in current if current[k] != previous[k]} == changed, name
        previous = current
    assert defaults("best")["augment"] is True


def test_the_shared_model_with_nn_modules_settings_is_nn_module_to_the_last_bit():
    tiny = data.load("tiny")
    seed_step3, _ = short_training("nn-module", 11, tiny, steps=15)
    rung0, _ = short_training("relu", 11, tiny, steps=15, activation="tanh")
    assert seed_step3.losses == rung0.losses


@pytest.mark.parametrize("name", RUNGS)
def test_same_seed_same_numbers_and_a_short_run_lowers_the_loss(name):
    tiny = data.load("tiny")
    extra = {"hidden": 64} if name == "best" else {}
    first, model = short_training(name, 5, tiny, steps=40, eval_every=20, **extra)
    second, _ = short_training(name, 5, tiny, steps=40, eval_every=20, **extra)
    other, _ = short_training(name, 6, tiny, steps=40, eval_every=20, **extra)
    assert first.losses == second.losses
    assert [e.test_accuracy for e in first.evaluations] == [e.test_accuracy for e in second.evaluations]
    assert first.losses != other.losses
    # The clean training-set loss (evaluation mode, no dropout or distortion) falls.
    assert first.evaluations[-1].train_loss < 0.7 * first.evaluations[0].train_loss
    assert first.evaluations[-1].train_accuracy > first.evaluations[0].train_accuracy + 0.3


def test_training_never_sees_the_test_split():
    """Swap the test split for noise: every training loss and final weight stays the same."""
    tiny = data.load("tiny")
    noise = Batch(torch.randn_like(tiny.test.x), torch.randint(0, 10, tiny.test.y.shape), tiny.test.onehot.flip(0))
    swapped = Dataset(tiny.name, tiny.train, noise, tiny.mean, tiny.std, tiny.digest, tiny.source, tiny.raw_test)
    a, model_a = short_training("best", 3, tiny, steps=20, eval_every=5, hidden=64)
    b, model_b = short_training("best", 3, swapped, steps=20, eval_every=5, hidden=64)
    assert a.losses == b.losses
    for (name, p), q in zip(model_a.net.state_dict().items(), model_b.net.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    "param, message",
    [
        ("dropout=1.5", "dropout must be < 1.0"),
        ("norm=group", "norm must be one of none, batch, layer"),
        ("layers=0", "layers must be >= 1"),
        ("augment=maybe", "augment must be bool"),
        ("rotate=-5", "rotate must be >= 0.0"),
        ("schedule=step", "schedule must be one of constant, cosine"),
        ("weight_decay=x", "weight_decay must be float"),
    ],
)
def test_bad_option_values_are_one_line_usage_errors_before_any_run(run_cli, store, param, message):
    for name in ("dropout", "best"):
        result = run_cli("run", "--plugin", name, "-p", param, "--tiny")
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [f"Error: {name}: {message}, got {param.split('=')[1]!r}"]
    assert runs_in(store) == []


def test_every_option_of_every_rung_has_a_type_default_range_and_help():
    for name in RUNGS:
        for option in get_registry().get(name).options:
            assert option.help and option.type in (int, float, str, bool)
            assert option.choices is not None or (
                (option.min is not None or option.above is not None) and (option.max is not None or option.below is not None)
            ), (name, option.name)
            assert option.parse(option.default) == option.default


def test_batch_norm_on_single_images_is_refused_by_name_before_training(run_cli, store):
    impl = get_registry().get("batch-norm")
    with pytest.raises(ValueError, match="norm=batch needs batches of 2 or more images"):
        impl.model_class().check_hyperparams(impl.hyperparams({"batch_size": 1}))
    impl.model_class().check_hyperparams(impl.hyperparams({"batch_size": 2, "norm": "batch"}))
    impl.model_class().check_hyperparams(impl.hyperparams({"batch_size": 1, "norm": "layer"}))
    result = run_cli("run", "--plugin", "dropout", "--plugin", "batch-norm", "--batch-size", "1", "--tiny", "--steps", "2")
    assert result.exit_code == 2
    message = "Error: batch-norm: norm=batch needs batches of 2 or more images (batch statistics of one are undefined)"
    assert result.stderr.splitlines() == [message]
    assert runs_in(store) == []  # no run, not even dropout's: the whole command is refused


def test_listing_the_ladder_imports_no_torch():
    code = (
        "import sys, json; from mlp_lab.listing import plugin_listing;"
        "names = [i['name'] for i in plugin_listing()['implementations']];"
        "print(json.dumps([names, 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    names, imported = json.loads(out.stdout)
    assert set(RUNGS) <= set(names) and not imported


def test_distortions_keep_the_background_and_are_the_identity_at_strength_zero():
    x = data.load("tiny").train.x[:64]
    hp = variants_hp(shift=0.0, rotate=0.0, scale=0.0, elastic=0.0)
    assert torch.allclose(mlp.distort(x, hp), x, atol=1e-5)
    torch.manual_seed(0)
    moved = mlp.distort(x, variants_hp(shift=3.0, rotate=15.0, scale=0.15, elastic=2.0))
    assert not torch.allclose(moved, x, atol=0.1)
    assert moved.min() >= x.min() - 1e-5 and moved.max() <= x.max() + 1e-5
    torch.manual_seed(0)
    assert torch.equal(moved, mlp.distort(x, variants_hp(shift=3.0, rotate=15.0, scale=0.15, elastic=2.0)))


def test_a_pure_shift_moves_each_digit_by_at_most_the_shift():
    x = data.load("tiny").train.x[:64]
    torch.manual_seed(1)
    moved = mlp.distort(x, variants_hp(shift=2.0, rotate=0.0, scale=0.0, elastic=0.0))
    offsets = centroid(moved) - centroid(x)
    assert offsets.abs().max() <= 2.0 + 0.05 and offsets.abs().mean() > 0.5


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factors = [mlp.lr_factor(s, 1000, "cosine", 0.1) for s in range(1000)]
    assert factors[0] == pytest.approx(0.01) and factors[99] == 1.0 and factors[100] == 1.0
    assert all(a >= b for a, b in zip(factors[100:], factors[101:], strict=False)) and factors[-1] < 1e-4
    assert {mlp.lr_factor(s, 1000, "constant", 0.1) for s in range(0, 1000, 50)} == {1.0}


@pytest.mark.parametrize("warmup", [0.1, 0.0])
def test_the_schedule_computed_on_a_tensor_step_is_the_same(warmup):
    """What a recorded step computes on the device, step by step, against the Python numbers."""
    on_tensor = mlp.lr_factor(torch.arange(1000, dtype=torch.float32), 1000, "cosine", warmup)
    expected = torch.tensor([mlp.lr_factor(s, 1000, "cosine", warmup) for s in range(1000)])
    assert torch.allclose(on_tensor, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_best_beats_nn_module_on_the_default_set_in_a_ci_budget(run_cli, store):
    result = run_cli("run", "--plugin", "nn-module", "--plugin", "best", "--steps", "150", "--seed", "0", "-q")
    assert result.exit_code == 0, result.output
    runs = {r.data.tags["mlp_lab.plugin"]: r for r in runs_in(store) if r.data.tags["mlp_lab.kind"] == "run"}
    assert runs["best"].data.params["augment"] == "True" and runs["best"].data.params["layers"] == "2"
    best, baseline = (runs[n].data.metrics["test_accuracy"] for n in ("best", "nn-module"))
    assert best > baseline + 0.03, (best, baseline)


def variants_hp(**values):
    from mlp_lab.options import Hyperparams

    return Hyperparams(values)


def centroid(x: torch.Tensor) -> torch.Tensor:
    """Centre of mass (row, column) of each image's ink, in pixels."""
    ink = (x - x.min()).view(-1, 28, 28)
    idx = torch.arange(28, dtype=x.dtype)
    total = ink.sum((1, 2))
    return torch.stack([(ink.sum(2) * idx).sum(1) / total, (ink.sum(1) * idx).sum(1) / total], 1)

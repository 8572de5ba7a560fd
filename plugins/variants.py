"""The notebook's exercise ("try to improve accuracy!") answered as a ladder of implementations.

Each rung changes one thing relative to the rung before it, starting from the seed's step 3
(``nn-module``), so the comparison shows what each change is worth; ``best`` ends the ladder
with the strongest plain MLP found. All rungs are the one configurable model of
``mlp_lab_plugins.mlp`` and differ only in their defaults: every rung declares every option, so
any change can be switched on or off anywhere (``-p dropout=0.2``) and every run logs the full
recipe as params.

The entry point is called ``variants`` so that it loads after ``seed`` (built-in entry points
load by name) and ``--plugin all`` runs the ladder in order.
"""

from __future__ import annotations

from typing import Any

from mlp_lab import Option, hookimpl

MODEL = "mlp_lab_plugins.mlp:MLP"

OPTIONS = (
    Option("layers", int, 1, "hidden layers", min=1, max=8),
    Option("activation", str, "tanh", "hidden activation", choices=("tanh", "relu")),
    Option(
        "loss",
        str,
        "mse",
        "mse: tanh outputs towards scaled one-hot; cross-entropy: softmax on logits",
        choices=("mse", "cross-entropy"),
    ),
    Option(
        "target_scale",
        float,
        0.9,
        "with loss=mse, one-hot targets are scaled by this to sit inside tanh's range",
        above=0.0,
        max=1.0,
    ),
    Option("label_smoothing", float, 0.0, "with loss=cross-entropy, label smoothing", min=0.0, below=1.0),
    Option(
        "init",
        str,
        "default",
        "weights: torch's default (uniform +-1/sqrt(fan_in)) or He/Kaiming normal",
        choices=("default", "kaiming"),
    ),
    Option("norm", str, "none", "normalisation after each hidden Linear", choices=("none", "batch", "layer")),
    Option("dropout", float, 0.0, "dropout rate after each hidden activation", min=0.0, below=1.0),
    Option("input_dropout", float, 0.0, "dropout rate on the input pixels", min=0.0, below=1.0),
    Option("weight_decay", float, 0.01, "AdamW's decoupled weight decay", min=0.0, max=10.0),
    Option(
        "schedule", str, "constant", "learning rate: constant, or linear warm-up then cosine to 0", choices=("constant", "cosine")
    ),
    Option("warmup", float, 0.0, "with schedule=cosine, fraction of the steps spent warming up", min=0.0, below=1.0),
    Option(
        "augment", bool, False, "random distortions of each training batch (shift, rotate, scale, elastic)", choices=(False, True)
    ),
    Option("shift", float, 2.0, "with augment, largest shift in pixels", min=0.0, max=10.0),
    Option("rotate", float, 10.0, "with augment, largest rotation in degrees", min=0.0, max=90.0),
    Option("scale", float, 0.1, "with augment, largest relative change of size", min=0.0, below=1.0),
    Option("elastic", float, 0.0, "with augment, largest smooth elastic displacement in pixels (0: none)", min=0.0, max=10.0),
)

# The seed's step 3 (nn-module), the first rung's predecessor.
NN_MODULE = {"steps": 10000, "lr": 1e-3, "hidden": 200}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


RELU = _with(NN_MODULE, activation="relu")
CROSS_ENTROPY = _with(RELU, loss="cross-entropy")
HE_INIT = _with(CROSS_ENTROPY, init="kaiming")
MINI_BATCH = _with(HE_INIT, batch_size=100, eval_every=600)  # evaluated once per epoch on full MNIST
LR_SCHEDULE = _with(MINI_BATCH, schedule="cosine", warmup=0.02)
DROPOUT = _with(LR_SCHEDULE, input_dropout=0.2, dropout=0.5)
WEIGHT_DECAY = _with(DROPOUT, weight_decay=0.1)
AUGMENT = _with(WEIGHT_DECAY, augment=True)
BATCH_NORM = _with(AUGMENT, norm="batch")
BEST = _with(BATCH_NORM, layers=2, hidden=1024, steps=3000, input_dropout=0.0, dropout=0.3)

LADDER = (
    ("relu", "nn-module with ReLU instead of tanh in the hidden layer (output: still tanh and MSE).", RELU),
    ("cross-entropy", "relu with softmax cross-entropy on logits instead of MSE on tanh outputs.", CROSS_ENTROPY),
    ("he-init", "cross-entropy with He/Kaiming normal initial weights and zero biases instead of torch's default.", HE_INIT),
    ("mini-batch", "he-init on shuffled mini-batches of 100 instead of the full batch (same 10,000 steps).", MINI_BATCH),
    (
        "lr-schedule",
        "mini-batch with AdamW's learning rate warmed up over 2% of the steps, then cosine-decayed to 0.",
        LR_SCHEDULE,
    ),
    ("dropout", "lr-schedule with dropout: 0.2 on the input pixels, 0.5 after the hidden activation.", DROPOUT),
    ("weight-decay", "dropout with AdamW weight decay 0.1 instead of 0.01.", WEIGHT_DECAY),
    ("augment", "weight-decay on randomly shifted, rotated and scaled training images (+-2 px, +-10 deg, +-10%).", AUGMENT),
    ("batch-norm", "augment with batch normalisation between each hidden Linear and its activation.", BATCH_NORM),
    (
        "best",
        "batch-norm with two hidden layers of 1024, dropout 0.3 after each and none on the input, 3,000 steps: "
        "the strongest plain MLP here (-p augment=0 turns the distortions off).",
        BEST,
    ),
)


@hookimpl
def register_implementations(register):
    names = {o.name for o in OPTIONS}
    for name, description, settings in LADDER:
        defaults = {k: v for k, v in settings.items() if k not in names}
        options = tuple(Option(**{**o.__dict__, "default": settings.get(o.name, o.default)}) for o in OPTIONS)
        register(name, description, MODEL, defaults=defaults, options=options)

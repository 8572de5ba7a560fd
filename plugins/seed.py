"""The seed notebook's three implementations: from scratch, with autograd, with nn.Module."""

from mlp_lab import Option, hookimpl

TANH_MSE = (
    Option("init_std", float, 1e-3, "std of the normal initial weights (biases start at zero)", above=0.0),
    Option("target_scale", float, 0.9, "one-hot targets are scaled by this to sit inside tanh's range", above=0.0),
)


@hookimpl
def register_implementations(register):
    register(
        "scratch",
        "Step 1: 784-50-10 tanh MLP, sum-of-squares loss, forward and backward written by hand, full batch.",
        "mlp_lab_plugins.scratch:Scratch",
        defaults={"steps": 10000, "lr": 0.1, "hidden": 50},
        options=(
            *TANH_MSE,
            Option("decay_at", int, 5000, "step from which the learning rate is multiplied by decay", min=0),
            Option("decay", float, 0.1, "learning-rate factor from decay_at on", above=0.0),
        ),
    )
    register(
        "autograd",
        "Step 2: the scratch network and init, gradients from loss.backward(), lr 0.1/n throughout.",
        "mlp_lab_plugins.autograd:Autograd",
        defaults={"steps": 10000, "lr": 0.1, "hidden": 50},
        options=TANH_MSE,
    )
    register(
        "nn-module",
        "Step 3: nn.Linear 784-200-10 with tanh, nn.MSELoss, AdamW lr 1e-3, full batch.",
        "mlp_lab_plugins.nn_module:NNModule",
        defaults={"steps": 10000, "lr": 1e-3, "hidden": 200},
        options=(
            Option("target_scale", float, 0.9, "one-hot targets are scaled by this to sit inside tanh's range", above=0.0),
            Option("weight_decay", float, 0.01, "AdamW's decoupled weight decay", min=0.0),
        ),
    )

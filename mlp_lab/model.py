"""The implementation contract: what a plugin's model provides to the core.

The core owns data, seeding, device placement, the training loop, timing and tracking. A model
owns its parameters and their initialization, prediction, and one training step. The core builds
it on the CPU right after seeding torch, then moves it with :meth:`Model.to`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mlp_lab.data import Batch
    from mlp_lab.options import Hyperparams

REQUIRED = ("parameters", "predict", "loss", "train_step")


class Model:
    """Base class for implementations. Subclass it and fill in the four required methods.

    ``__init__(hp)`` receives the resolved :class:`~mlp_lab.options.Hyperparams` (shared ones
    such as ``hp.lr``, ``hp.hidden``, ``hp.steps`` and the implementation's own options).
    Inputs are normalised (N, 784) float tensors; there are 10 classes.
    """

    n_in = 784
    n_out = 10

    def __init__(self, hp: Hyperparams) -> None:
        self.hp = hp
        self.training = True

    # -- required ------------------------------------------------------------------------
    def parameters(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by name (``w1``, ``b1``, ...): logged, gradient-checked, saved."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, 10) for inputs ``x`` (N, 784); the predicted digit is their argmax."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        """The training objective on ``batch`` as a 0-dim tensor, differentiable by autograd."""
        raise NotImplementedError

    def train_step(self, batch: Batch, step: int) -> torch.Tensor:
        """One update on ``batch`` (forward, backward, update) at 0-based ``step``; returns the loss.

        Return the loss as a tensor on the device and do not call ``.item()``: the core fetches
        losses in batches, so a step never waits for the device.
        """
        raise NotImplementedError

    # -- optional ------------------------------------------------------------------------
    @classmethod
    def check_hyperparams(cls, hp: Hyperparams) -> None:
        """Refuse a combination of options this model cannot train with: raise ``ValueError`` saying why.

        Called before any run starts (``mlp-lab run``, ``gradcheck``, the conformance kit), so
        the refusal is a one-line error and no run is created. Ranges and choices of a single
        option belong in its :class:`~mlp_lab.options.Option`; this is for combinations (say,
        batch norm with batches of one image).
        """

    def forward_backward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Hand-written gradients, for ``mlp-lab gradcheck``: ``(loss, activations, grads)``.

        ``activations`` are the intermediate tensors of the forward pass by name; ``grads`` holds
        the hand-written gradient of the loss for each parameter and activation, by the same
        names. Implementations without hand-written gradients leave this out; they are checked
        against finite differences instead.
        """
        raise NotImplementedError

    def step_key(self, step: int) -> Hashable:
        """For ``--compile`` on CUDA: what the device work of ``train_step(batch, step)`` depends on besides tensor values.

        Return a value that is equal for two steps exactly when they launch the same work (the same
        shapes and the same Python numbers, such as a learning rate that decays at some step), and
        keep whatever changes from step to step in tensors. The core then records the step once per
        key as a CUDA graph and replays it (one launch per step); without this method ``--compile``
        uses ``torch.compile``.
        """
        raise NotImplementedError

    # -- provided --------------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Model:
        """Move every tensor and module held in an attribute, keeping tensor identities."""
        import torch

        def move(value: Any) -> Any:
            if isinstance(value, torch.nn.Module):
                return value.to(device=device, dtype=dtype)
            if isinstance(value, torch.Tensor):
                target = dtype if dtype is not None and value.is_floating_point() else None
                value.data = value.data.to(device=device, dtype=target)
                return value
            if isinstance(value, (list, tuple)):
                return type(value)(move(v) for v in value)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        for name, value in vars(self).items():
            setattr(self, name, move(value))
        return self

    def train(self, mode: bool = True) -> Model:
        """Switch training behaviour (dropout, batch statistics) on or off, for modules too."""
        import torch

        if isinstance(self, torch.nn.Module):  # a model that is also a module: its submodules live outside vars()
            torch.nn.Module.train(self, mode)
        self.training = mode
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.train(mode)
        return self

    @classmethod
    def replays_steps(cls) -> bool:
        """Whether this implementation defines :meth:`step_key` (its steps can be replayed from CUDA graphs)."""
        return cls.step_key is not Model.step_key

    @classmethod
    def has_hand_written_gradients(cls) -> bool:
        """Whether this implementation overrides :meth:`forward_backward`."""
        return cls.forward_backward is not Model.forward_backward


def checked_parameters(model: Model, owner: str) -> dict[str, torch.Tensor]:
    """``model.parameters()`` as a dict (any mapping of names to tensors, ``nn.ParameterDict`` too), or a
    :class:`~mlp_lab.errors.PluginError` saying how it breaks the contract."""
    from collections.abc import Mapping

    import torch

    from mlp_lab.errors import PluginError

    params = model.parameters()
    if isinstance(params, (Mapping, torch.nn.ParameterDict)):
        pairs = dict(params.items())
        if all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in pairs.items()):
            return pairs
        got = "a mapping of " + ", ".join(sorted({f"{type(k).__name__}: {type(t).__name__}" for k, t in pairs.items()}))
    else:
        got = type(params).__name__
    raise PluginError(f"{owner}: parameters() must return a dict of tensors by name, got {got}")


def refusal(model_class: Any, hp: Hyperparams) -> str | None:
    """Why ``model_class`` refuses ``hp`` (the first line of the ``ValueError`` its
    :meth:`Model.check_hyperparams` raised), else None. Any other error there is the plugin's own: it is raised."""
    import inspect

    from mlp_lab.errors import first_line
    from mlp_lab.options import Hyperparams

    check = getattr(model_class, "check_hyperparams", None)
    if check is None:  # a stand-in for a model class that could not be loaded
        return None
    if not isinstance(inspect.getattr_static(model_class, "check_hyperparams"), (classmethod, staticmethod)):
        raise TypeError(f"{model_class.__name__}.check_hyperparams must be a @classmethod (no model is built to check)")
    try:
        check(Hyperparams(dict(hp.values)))  # a copy: a check changes nothing a run uses
    except ValueError as exc:
        return first_line(exc)
    return None

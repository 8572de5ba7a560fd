"""The trained model as the file a run logs: an inference copy with its data's normalisation, saved by torch.

The training process writes it; the tracking process logs it as the run's MLflow model (see
:mod:`mlp_lab.pyfunc_model`) without importing torch.
"""

from __future__ import annotations

import copy
import io
import pickle
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

import mlp_lab
from mlp_lab.model import Model, checked_parameters


def save(model: Model, mean: float, std: float, owner: str | None = None) -> bytes:
    """The model file's bytes: a CPU inference copy of ``model`` and the normalisation of its training inputs.

    With ``owner``, a model that cannot be saved is a :class:`PluginError` naming the attribute to blame.
    """
    buffer = io.BytesIO()
    try:
        torch.save({"model": inference_copy(model), "mean": mean, "std": std}, buffer)
    except Exception as exc:
        if owner is None:
            raise
        raise unsaveable(model, owner, exc) from exc
    return buffer.getvalue()


class _Discard(io.RawIOBase):
    """A file that keeps nothing: what saving writes, counted and dropped."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def check_saveable(model: Model, owner: str) -> None:
    """Save ``model`` as built, before training (writing nothing): a :class:`PluginError` now, naming the attribute
    that cannot be saved where one is to blame, rather than after the training budget."""
    checked_parameters(model, owner)
    try:
        torch.save({"model": inference_copy(model), "mean": 0.0, "std": 1.0}, _Discard())
    except Exception as exc:
        raise unsaveable(model, owner, exc) from exc


def unsaveable(model: Model, owner: str, exc: Exception) -> Exception:
    """Why ``model`` could not be saved, as a :class:`PluginError` naming the first attribute that cannot be
    copied or pickled (an optimizer is not saved), else saying what saving raised."""
    from mlp_lab.errors import PluginError, described

    for name, value in vars(model).items():
        if isinstance(value, torch.optim.Optimizer):
            continue
        try:
            pickle.dumps(copy.deepcopy(value))
        except Exception as why:  # noqa: BLE001 - whatever copying or pickling the attribute raises
            what = f"attribute '{name}' ({type(value).__name__}): {described(why)}"
            return PluginError(f"{owner}: the model cannot be saved: {what}")
    return PluginError(f"{owner}: the model cannot be saved: {described(exc)}")


def load(path: str | Path) -> dict[str, Any]:
    """What :func:`save` wrote: ``model``, ``mean`` and ``std`` (unpickling needs the plugin's package)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def inference_copy(model: Model) -> Model:
    """A CPU copy of ``model`` in evaluation mode, without optimizer state."""
    clone = copy.copy(model)
    for name, value in vars(model).items():
        if isinstance(value, torch.optim.Optimizer):
            setattr(clone, name, None)
        else:
            setattr(clone, name, copy.deepcopy(value))
    clone.to("cpu")
    clone.train(False)
    for t in checked_parameters(clone, type(model).__name__).values():
        t.requires_grad_(False)
    return clone


def requirements(distribution: str, plugin_version: str) -> list[str]:
    """What the logged model needs: torch, MLflow, mlp-lab and the plugin's distribution."""
    try:
        mlflow_version = version("mlflow")
    except PackageNotFoundError:  # mlflow-skinny
        mlflow_version = version("mlflow-skinny")
    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow_version}", f"mlp-lab=={mlp_lab.__version__}"]
    if distribution not in ("mlp-lab", "unknown") and plugin_version:
        reqs.append(f"{distribution}=={plugin_version}")
    return reqs

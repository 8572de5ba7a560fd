"""The model MLflow stores for every run: raw 0-255 pixel rows in, predicted digits out.

It wraps an inference copy of the implementation's model (on the CPU, optimizers dropped) with
the normalisation of its training data, so ``mlflow.pyfunc.load_model(uri).predict(rows)`` needs
nothing else. Loading needs the plugin's package installed, as for any pickled Python model.
"""

from __future__ import annotations

import copy
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from mlp_lab.model import Model


class DigitClassifier(mlflow.pyfunc.PythonModel):
    def __init__(self, model: Model, mean: float, std: float) -> None:
        self.model = inference_copy(model)
        self.mean = mean
        self.std = std

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        """Predicted digits for float32 rows of 784 raw grey levels (0-255), as the model's signature says."""
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, 784)
        with torch.no_grad():
            scores = self.model.predict((x - self.mean) / self.std)
        return scores.argmax(1).numpy()


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
    for t in clone.parameters().values():
        t.requires_grad_(False)
    return clone


def requirements(distribution: str, version: str) -> list[str]:
    """What the logged model needs: torch, MLflow, mlp-lab and the plugin's distribution."""
    import mlp_lab

    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", f"mlp-lab=={mlp_lab.__version__}"]
    if distribution not in ("mlp-lab", "unknown") and version:
        reqs.append(f"{distribution}=={version}")
    return reqs


def load(uri: str) -> Any:
    """The pyfunc model at ``uri`` (``runs:/RUN_ID/model`` or ``models:/...``)."""
    return mlflow.pyfunc.load_model(uri)

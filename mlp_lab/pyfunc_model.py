"""The model MLflow stores for every run: raw 0-255 pixel rows in, predicted digits out.

It is logged as an MLflow model from code: MLflow keeps ``pyfunc_code.py``, which builds a
:class:`DigitClassifier`, and the run's model file (:mod:`mlp_lab.model_file`: a CPU inference
copy of the implementation's model with the normalisation of its training data), which the
classifier reads when loaded. So ``mlflow.pyfunc.load_model(uri).predict(rows)`` needs nothing
else, and logging needs no torch. Loading needs the plugin's package installed, as for any
pickled Python model. Models of earlier mlp-lab versions (the classifier pickled whole) load too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

CODE = str(Path(__file__).with_name("pyfunc_code.py"))  # what MLflow runs to build the model
ARTIFACT = "model_file"  # the model file's name among the model's artifacts


class DigitClassifier(mlflow.pyfunc.PythonModel):
    def __init__(self, model: Any = None, mean: float = 0.0, std: float = 1.0) -> None:
        self.model = model
        self.mean = mean
        self.std = std

    def load_context(self, context: Any) -> None:
        """Read the run's model file (a classifier pickled whole by an earlier version already has its model)."""
        path = (context.artifacts or {}).get(ARTIFACT) if context is not None else None
        if path:
            from mlp_lab import model_file

            saved = model_file.load(path)
            self.model, self.mean, self.std = saved["model"], saved["mean"], saved["std"]

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        """Predicted digits for float32 rows of 784 raw grey levels (0-255), as the model's signature says;
        a ``ValueError`` for pixels that are not raw grey levels (scaled to 0-1, standardised, ...)."""
        import torch

        from mlp_lab import grey_levels

        rows = np.array(model_input, dtype=np.float32)  # a copy: MLflow's may be read-only
        problem = grey_levels.problem(rows)
        if problem:
            raise ValueError(f"model input: {problem}")
        x = torch.from_numpy(rows).reshape(-1, 784)
        with torch.no_grad():
            scores = self.model.predict((x - self.mean) / self.std)
        return scores.argmax(1).numpy()


def signature(input_example: np.ndarray) -> Any:
    """Float32 rows of 784 grey levels in, one int64 digit per row out."""
    from mlflow.models import infer_signature

    return infer_signature(input_example, np.zeros(len(input_example), dtype=np.int64))


def load(uri: str) -> Any:
    """The pyfunc model at ``uri`` (``runs:/RUN_ID/model`` or ``models:/...``)."""
    return mlflow.pyfunc.load_model(uri)

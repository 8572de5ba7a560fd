"""``mlp-lab predict``: a run's logged model, loaded through MLflow, classifies image files.

Images are MNIST-like: 28x28 grey levels 0-255, a light digit on a dark background (``invert``
for a dark digit on a light background). A PNG holds one image; a ``.npy`` array holds one or
more, shaped (28, 28), (784,), (N, 28, 28) or (N, 784), of raw grey levels (0-255, not scaled to
0-1 or standardised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlp_lab.errors import UsageError, first_line


@dataclass
class Images:
    """The images of one file as rows of 784 raw grey levels (float32)."""

    path: Path
    rows: np.ndarray

    def labels(self) -> list[str]:
        if len(self.rows) == 1 and self.path.suffix.lower() != ".npy":
            return [str(self.path)]
        return [f"{self.path}[{i}]" for i in range(len(self.rows))]


def read(path: Path, invert: bool = False) -> Images:
    """The images in ``path`` (PNG or other Pillow image, or .npy); a usage error for what is not 28x28."""
    if not path.is_file():
        raise UsageError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"{path}: not a NumPy .npy array ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise UsageError(f"{path}: expected numbers, got dtype {array.dtype}")
        shape = array.shape
        if shape in ((28, 28), (784,)):
            array = array.reshape(1, 784)
        elif len(shape) == 3 and shape[1:] == (28, 28) or len(shape) == 2 and shape[1] == 784:
            array = array.reshape(len(array), 784)
        else:
            raise UsageError(f"{path}: expected images shaped (28, 28), (784,), (N, 28, 28) or (N, 784), got {shape}")
        if len(array) == 0:
            raise UsageError(f"{path}: holds no images")
        rows = array.astype(np.float32)
        check_grey_levels(path, rows)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                if image.size != (28, 28):
                    raise UsageError(
                        f"{path}: image is {image.size[0]}x{image.size[1]}, expected 28x28 (MNIST-sized): resize it"
                        " first, e.g. PIL.Image.open(path).resize((28, 28))"
                    )
                rows = np.asarray(image.convert("L"), dtype=np.float32).reshape(1, 784)
                opacity = _opacity(image)
        except UnidentifiedImageError:
            raise UsageError(f"{path}: not an image Pillow can read (expected a 28x28 PNG or a .npy array)") from None
        if opacity is not None:  # drawn on a transparent background: what is drawn is the digit, whatever its colour
            if invert:
                raise UsageError(
                    f"{path}: its background is transparent, so the drawing is read as the digit: leave out --invert"
                )
            rows = opacity
    if invert:
        rows = 255.0 - rows
    if path.suffix.lower() != ".npy":  # arrays are taken as they are: MNIST's own, blank ones and all
        check_background(path, rows, invert)
    return Images(path, rows)


def _opacity(image: Any) -> np.ndarray | None:
    """The alpha channel as grey levels, for a drawing on a transparent background (its border transparent)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return None
    alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[:, :, 3]
    if alpha.min() == alpha.max() or _border(alpha.reshape(1, 28, 28)).mean() > 127:
        return None  # opaque, or an opaque background with a few clear pixels: read by its colours
    return alpha.reshape(1, 784)


def _border(images: np.ndarray) -> np.ndarray:
    """The outer two pixels of each 28x28 image, where MNIST's digits never reach."""
    frame = np.ones((28, 28), dtype=bool)
    frame[2:-2, 2:-2] = False
    return images[:, frame]


def check_background(path: Path, row: np.ndarray, invert: bool) -> None:
    """A usage error for an image MNIST's models would misread without a word: a blank one, or a dark digit on a
    light background (told by the image's outer two pixels, dark in MNIST's)."""
    if row.min() == row.max():
        raise UsageError(f"{path}: the image is blank (all grey level {row.min():g})")
    if _border(row.reshape(1, 28, 28)).mean() > 127:
        fix = "it is light on dark already: leave out --invert" if invert else "add --invert"
        raise UsageError(f"{path}: a dark digit on a light background (its border is light): {fix}")


def check_grey_levels(path: Path, rows: np.ndarray) -> None:
    """A usage error for arrays that are not raw 0-255 grey levels (see :func:`mlp_lab.grey_levels.problem`)."""
    from mlp_lab import grey_levels

    problem = grey_levels.problem(rows)
    if problem:
        raise UsageError(f"{path}: {problem}")


def load_model(run_id: str, client: Any) -> Any:
    """The pyfunc model logged by run ``run_id`` (``runs:/RUN_ID/model``)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"--run {run_id}: no such run in {client.tracking_uri}") from None
        raise UsageError(f"--run {run_id}: cannot read it from {client.tracking_uri}: {first_line(exc)}") from None
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    except MlflowException:
        kind = run.data.tags.get("mlp_lab.kind")
        why = "a comparison group has none; use one of its child runs" if kind == "group" else f"the run is {run.info.status}"
        raise UsageError(f"--run {run_id}: the run has no logged model ({why})") from None
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--run {run_id}: cannot load its model here: {type(exc).__name__}: {exc}") from None


def predict(run_id: str, files: Sequence[Path], uri: str | None, invert: bool = False) -> list[tuple[str, int]]:
    """(label, predicted digit) for every image in ``files``, in order; files are checked before the model loads."""
    from mlp_lab.compare import open_client

    images = [read(Path(f), invert) for f in files]
    model = load_model(run_id, open_client(uri))
    rows = np.concatenate([im.rows for im in images])
    digits = np.asarray(model.predict(rows)).reshape(-1)
    labels = [label for im in images for label in im.labels()]
    return [(label, int(d)) for label, d in zip(labels, digits, strict=True)]

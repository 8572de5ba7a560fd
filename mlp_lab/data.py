"""The data every implementation sees: MNIST with the course's conventions.

First N samples of each split in file order; raw grey levels 0-255 as float, flattened to 784;
normalised by one scalar mean and (unbiased) std of the reduced training inputs, applied to both
splits; labels as class indices, with one-hot targets for the implementations that want them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlp_lab import mnist

SIZES = {"default": (1000, 1000), "tiny": (500, 100), "full": (60000, 10000)}


@dataclass
class Batch:
    """Inputs and targets handed to an implementation.

    ``x``: normalised inputs (N, 784) float; ``y``: labels (N,) int64; ``onehot``: (N, 10) float,
    1 at the label. Implementations that train towards tanh outputs scale ``onehot`` themselves
    (the seed uses 0.9).
    """

    x: torch.Tensor
    y: torch.Tensor
    onehot: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Dataset:
    """Both splits, normalised, on one device, with what identifies them."""

    name: str
    train: Batch
    test: Batch
    mean: float
    std: float
    digest: str
    source: str
    raw_test: torch.Tensor = field(repr=False)

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device``."""
        move = lambda b: Batch(b.x.to(device), b.y.to(device), b.onehot.to(device))  # noqa: E731
        return Dataset(self.name, move(self.train), move(self.test), self.mean, self.std, self.digest, self.source, self.raw_test)


def load(size: str = "default", data_dir: Path | None = None) -> Dataset:
    """MNIST reduced to ``size`` (default 1000/1000, tiny 500/100, full 60000/10000)."""
    n_train, n_test = SIZES[size]
    if size == "full":
        files, source = mnist.full_files(data_dir), str(Path(data_dir or mnist.default_data_dir()).resolve())
    else:
        files, source = mnist.embedded_files(), str(mnist.EMBEDDED_DIR)
    train_x, train_y = _split(files["train_images"], files["train_labels"], n_train)
    test_x, test_y = _split(files["test_images"], files["test_labels"], n_test)
    digest = hashlib.sha256()
    for t in (train_x, train_y, test_x, test_y):
        digest.update(t.numpy().tobytes())
    train_f, test_f = train_x.float(), test_x.float()
    mean, std = train_f.mean(), train_f.std()
    return Dataset(
        name=f"mnist-{size}-{n_train}-{n_test}",
        train=_batch((train_f - mean) / std, train_y),
        test=_batch((test_f - mean) / std, test_y),
        mean=mean.item(),
        std=std.item(),
        digest=digest.hexdigest()[:16],
        source=source,
        raw_test=test_x,
    )


def _split(images: bytes, labels: bytes, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    (count, rows, cols), pixels = mnist.parse_idx(images)
    (count_labels,), label_bytes = mnist.parse_idx(labels)
    if count < n or count_labels < n:
        raise mnist.DataError(f"the MNIST files hold {min(count, count_labels)} samples, fewer than the {n} asked for")
    x = torch.frombuffer(bytearray(pixels[: n * rows * cols]), dtype=torch.uint8).reshape(n, rows * cols)
    y = torch.frombuffer(bytearray(label_bytes[:n]), dtype=torch.uint8).long()
    return x, y


def _batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return Batch(x, y, torch.nn.functional.one_hot(y, 10).float())

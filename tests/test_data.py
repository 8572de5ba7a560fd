"""Data: the embedded subset, the full files, checksums, the course's normalisation, fetching."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from mlp_lab import data, mnist

from .conftest import SHARED_MNIST

needs_full = pytest.mark.skipif(not SHARED_MNIST.exists(), reason="../shared/data/mnist is not beside the checkout")


def raw_images(folder: Path, name: str, n: int) -> torch.Tensor:
    raw = gzip.decompress((folder / f"{name}.gz").read_bytes())
    return torch.tensor(list(raw[16 : 16 + n * 784]), dtype=torch.float32).reshape(n, 784)


def test_default_set_is_the_first_1000_of_each_split_normalised_by_train_stats():
    d = data.load()
    assert d.train.x.shape == (1000, 784) and d.test.x.shape == (1000, 784)
    assert d.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first training labels
    assert d.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    raw = raw_images(mnist.EMBEDDED_DIR, "train-images-idx3-ubyte", 1000)
    assert d.mean == pytest.approx(raw.mean().item(), rel=1e-6)
    assert d.std == pytest.approx(raw.std(unbiased=True).item(), rel=1e-6)
    assert torch.allclose(d.train.x, (raw - d.mean) / d.std, atol=1e-5)
    assert d.train.onehot.sum(1).eq(1).all() and (d.train.onehot.argmax(1) == d.train.y).all()


def test_tiny_is_500_100_and_reuses_the_embedded_files():
    d = data.load("tiny")
    assert (len(d.train), len(d.test)) == (500, 100)
    assert d.train.y.tolist() == data.load().train.y[:500].tolist()


@needs_full
def test_embedded_set_matches_the_full_files():
    full = data.load("full", SHARED_MNIST)
    assert (len(full.train), len(full.test)) == (60000, 10000)
    assert full.train.y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    small = data.load()
    assert torch.equal(
        raw_images(SHARED_MNIST, "train-images-idx3-ubyte", 1000), raw_images(mnist.EMBEDDED_DIR, "train-images-idx3-ubyte", 1000)
    )
    assert small.train.y.tolist() == full.train.y[:1000].tolist()


@pytest.fixture
def stand_in(monkeypatch) -> Path:
    """The embedded files (real MNIST bytes, the first 1000 of each split) as the full set: the checksums the
    full files are held to become theirs, so fetching and checking run everywhere, the shared folder or not."""
    monkeypatch.setattr(mnist, "SHA256_FULL", dict(mnist.SHA256_EMBEDDED))
    return mnist.EMBEDDED_DIR


def expected(folder: Path) -> dict[str, bytes]:
    return {key: gzip.decompress((folder / f"{name}.gz").read_bytes()) for key, name in mnist.FILES.items()}


def test_plain_files_are_accepted(tmp_path, stand_in):
    for name in mnist.FILES.values():
        (tmp_path / name).write_bytes(gzip.decompress((stand_in / f"{name}.gz").read_bytes()))
    assert mnist.full_files(tmp_path, download=False) == expected(stand_in)


def test_corrupt_and_truncated_files_are_clear_errors(tmp_path, stand_in):
    for name in mnist.FILES.values():
        shutil.copy(stand_in / f"{name}.gz", tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(mnist.DataError, match="corrupt or truncated"):
        mnist.full_files(tmp_path, download=False)
    raw = bytearray(gzip.decompress((stand_in / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] ^= 1
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(mnist.DataError, match="checksum"):
        mnist.full_files(tmp_path, download=False)


@pytest.fixture
def mirror(tmp_path, stand_in):
    """A real HTTP mirror on a loopback port serving the stand-in files."""
    root = tmp_path / "mirror"
    shutil.copytree(stand_in, root)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_missing_files_are_downloaded_and_verified(tmp_path, mirror, monkeypatch, stand_in):
    root, url = mirror
    monkeypatch.setenv("MLP_LAB_MNIST_MIRRORS", f"http://127.0.0.1:9/nothing/,{url}")
    target = tmp_path / "cache"
    assert mnist.full_files(target) == expected(stand_in)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in mnist.FILES.values())
    assert mnist.full_files(target, download=False) == expected(stand_in)  # kept: read from the folder next time


def test_a_mirror_serving_bad_bytes_is_refused(tmp_path, mirror, monkeypatch):
    root, url = mirror
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 100))
    monkeypatch.setenv("MLP_LAB_MNIST_MIRRORS", url)
    with pytest.raises(mnist.DataError, match="checksum mismatch"):
        mnist.full_files(tmp_path / "cache")
    assert not (tmp_path / "cache" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_LAB_MNIST_MIRRORS", "http://127.0.0.1:9/")
    with pytest.raises(mnist.DataError) as err:
        data.load("full", tmp_path / "empty")
    message = str(err.value)
    assert "offline?" in message and str(tmp_path / "empty") in message and "train-images-idx3-ubyte" in message
    assert "\n" not in message  # one line, as every usage error


def test_data_dir_defaults_to_env_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MLP_LAB_DATA_DIR", str(tmp_path))
    assert mnist.default_data_dir() == tmp_path
    monkeypatch.delenv("MLP_LAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert mnist.default_data_dir() == tmp_path / "c" / "mlp-lab" / "mnist"

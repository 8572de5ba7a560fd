"""MNIST files: where they are, checking them, reading them, fetching them.

The default 1000/1000 subset ships inside the package (``mlp_lab/data/mnist-1000``); the full
set is read from a data folder (``--data-dir``, else ``MLP_LAB_DATA_DIR``, else a per-user cache
folder) and downloaded there from the public mirrors when missing. Every file is checked by the
SHA-256 of its decompressed bytes, so any faithful copy (plain or gzip) is accepted and a corrupt
or truncated one is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

from mlp_lab.errors import UsageError

EMBEDDED_DIR = Path(__file__).parent / "data" / "mnist-1000"

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SHA256_FULL = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Written by scripts/make_embedded_data.py: the first 1000 samples of each split.
SHA256_EMBEDDED = {
    "train-images-idx3-ubyte": "386bb018796babeaca208787b77c1b9db39532c4098951ea35f4694e744eb4b7",
    "train-labels-idx1-ubyte": "895f65588e45d05babf0b5fa7aee2a0d782d8143b40b5764e596df91bc9dddeb",
    "t10k-images-idx3-ubyte": "de7c252b04f05e1f8309634180ccdf286dc6dbac8c579b74e76e02ae0331ca52",
    "t10k-labels-idx1-ubyte": "832c0d20f0dc42e575488c75a83a970787d4c8d4d05831b2ef03701b4a478a90",
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class DataError(UsageError):
    """A data file is missing, corrupt or cannot be fetched."""


def default_data_dir() -> Path:
    """``MLP_LAB_DATA_DIR``, else the per-user cache folder (``$XDG_CACHE_HOME/mlp-lab/mnist``)."""
    if os.environ.get("MLP_LAB_DATA_DIR"):
        return Path(os.environ["MLP_LAB_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlp-lab" / "mnist"


def mirrors() -> list[str]:
    """The mirrors to download from; ``MLP_LAB_MNIST_MIRRORS`` (comma-separated) overrides them."""
    env = os.environ.get("MLP_LAB_MNIST_MIRRORS")
    urls = env.split(",") if env else list(MIRRORS)
    return [u if u.endswith("/") else u + "/" for u in urls if u]


def read_verified(folder: Path, name: str, sha256: str) -> bytes:
    """The decompressed bytes of ``name`` (plain or ``.gz``) in ``folder``, checked by SHA-256."""
    for path in (folder / name, folder / f"{name}.gz"):
        if not path.exists():
            continue
        try:
            raw = path.read_bytes()
            data = gzip.decompress(raw) if path.suffix == ".gz" else raw
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path} is corrupt or truncated ({exc}); delete it and try again") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DataError(f"{path} does not match the MNIST checksum (corrupt or truncated); delete it and try again")
        return data
    raise FileNotFoundError(name)


def parse_idx(data: bytes) -> tuple[tuple[int, ...], bytes]:
    """The shape and the payload of an IDX file of unsigned bytes."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError("not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return shape, data[4 + 4 * ndim :]


def embedded_files() -> dict[str, bytes]:
    """The default subset shipped with the package, verified against its recorded checksums."""
    try:
        return {key: read_verified(EMBEDDED_DIR, name, SHA256_EMBEDDED[name]) for key, name in FILES.items()}
    except FileNotFoundError as exc:
        raise DataError(f"the embedded MNIST subset is missing from the package ({exc}); reinstall mlp-lab") from None


def full_files(data_dir: Path | None, download: bool = True) -> dict[str, bytes]:
    """The four full MNIST files from ``data_dir`` (default: :func:`default_data_dir`), fetched when missing."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    out = {}
    for key, name in FILES.items():
        try:
            out[key] = read_verified(folder, name, SHA256_FULL[name])
        except FileNotFoundError:
            if not download:
                raise DataError(f"{folder / name}(.gz) is missing") from None
            out[key] = fetch(folder, name)
    return out


def fetch(folder: Path, name: str) -> bytes:
    """Download ``name``.gz into ``folder`` (made if missing) from the first mirror that serves a verified copy."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        why = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror or str(exc)
        raise DataError(f"cannot make the data folder {folder} to download MNIST into: {why}") from None
    errors = []
    for base in mirrors():
        url = f"{base}{name}.gz"
        try:
            raw = _download(url)
            data = gzip.decompress(raw)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next mirror
            errors.append(f"{url}: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != SHA256_FULL[name]:
            errors.append(f"{url}: checksum mismatch")
            continue
        tmp = folder / f".{name}.gz.part"
        try:
            tmp.write_bytes(raw)
            tmp.replace(folder / f"{name}.gz")
        except OSError as exc:
            raise DataError(f"cannot save {name}.gz in {folder}: {exc.strerror or exc}") from None
        return data
    raise DataError(
        f"could not download {name}.gz ({'; '.join(errors) or 'no mirror'}); offline? put the four MNIST files "
        f"({', '.join(FILES.values())}, plain or .gz) into {folder}, "
        "or point --data-dir / MLP_LAB_DATA_DIR at a folder that has them"
    )


def _download(url: str) -> bytes:
    """The bytes at ``url``, with a progress bar on a terminal."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True) as bar:
            task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.advance(task, len(chunk))
    return b"".join(chunks)

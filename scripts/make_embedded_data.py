"""Build the default 1000/1000 MNIST subset shipped inside the package.

Reads the four full IDX files (plain or .gz) from a folder, keeps the first N samples of
each split in file order, writes them as gzipped IDX files to ``mlp_lab/data/mnist-1000/``
and prints the SHA-256 of each decompressed file, to be recorded in ``mlp_lab/mnist.py``.

    python scripts/make_embedded_data.py ../shared/data/mnist
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

N = 1000
OUT = Path(__file__).resolve().parent.parent / "mlp_lab" / "data" / "mnist-1000"
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def read(folder: Path, name: str) -> bytes:
    plain = folder / name
    return plain.read_bytes() if plain.exists() else gzip.decompress((folder / f"{name}.gz").read_bytes())


def head(raw: bytes, n: int) -> bytes:
    """The IDX header rewritten for n items, followed by the first n items."""
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim]))
    item = 1
    for d in dims[1:]:
        item *= d
    start = 4 + 4 * ndim
    return raw[:4] + struct.pack(f">{ndim}I", n, *dims[1:]) + raw[start : start + n * item]


def main(folder: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        data = head(read(Path(folder), name), N)
        (OUT / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        print(f'    "{name}": "{hashlib.sha256(data).hexdigest()}",')


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist")

"""Tiny CIFAR-10 batches in the official layout, written into a temp dir by the tests."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_rows(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def write_batch(path: Path, data, labels, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fixture", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f, protocol=protocol)


def write_cifar(root: Path, per_batch: int = 8, test: int = 6) -> Path:
    """Write ``root/cifar-10-batches-py`` with five training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *make_rows(per_batch, i), protocol=2 if i % 2 else 4)
    write_batch(folder / "test_batch", *make_rows(test, 99))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f, protocol=2)
    return folder


def tar_of(folder: Path, arcname: str = "cifar-10-batches-py") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()

"""CIFAR-10 in its official python layout, ``<root>/cifar-10-batches-py/``.

Files: ``data_batch_1`` .. ``data_batch_5`` (10,000 training images each), ``test_batch``
(10,000), ``batches.meta`` (class names). Each batch is a pickled dict with ``b"data"``, a
``(N, 3072)`` uint8 array of channel-major 32x32 RGB rows, and ``b"labels"``, N ints in 0..9.
Batch files are read with a restricted unpickler and validated; the official per-file MD5s are
not required, so the same layout from another source loads too.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import CifarnetError
from .dataset import Dataset, Split
from .download import DownloadError, download, md5sum, safe_extract
from .safe_pickle import UnsafePickleError, load_restricted

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
NUM_CLASSES = 10


class DataError(CifarnetError, RuntimeError):
    """Data that is missing, unreadable or not what it claims to be; the message names the file."""


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one batch file.

    Returns:
        images ``(N, 32, 32, 3)`` uint8 (NHWC), labels ``(N,)`` int64.
    Raises:
        DataError: unreadable, truncated, unsafe, or wrong keys, shapes, dtype or labels.
    """
    try:
        batch = load_restricted(path)
    except UnsafePickleError as err:
        raise DataError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{path}: not a readable CIFAR batch (truncated or corrupt?): "
                        f"{type(err).__name__}: {err}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: expected a dict with b'data' and b'labels', found {keys}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be uint8 rows of 3072 values (3x32x32), got {desc}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: b'labels' must be a flat list of integers, got {labels.dtype} {labels.shape}")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise DataError(f"{path}: label {bad} out of range 0..{NUM_CLASSES - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)           # N, 32, 32, 3
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_class_names(path: Path) -> list[str]:
    if not path.exists():
        return [f"class_{i}" for i in range(NUM_CLASSES)]
    try:
        meta = load_restricted(path)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    except UnsafePickleError as err:
        raise DataError(f"{path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any malformation is reported the same way
        raise DataError(f"{path}: cannot read class names: {type(err).__name__}: {err}") from None
    if len(names) != NUM_CLASSES:
        raise DataError(f"{path}: expected {NUM_CLASSES} class names, found {len(names)}")
    return names


def _how_to_place(root: Path) -> str:
    return (f"Download {URL} (MD5 {ARCHIVE_MD5}) and extract it into {root}, so that "
            f"{root / FOLDER / 'data_batch_1'} exists, or write the same layout from another copy of "
            "CIFAR-10 (see the README's Run section).")


def ensure_cifar10(root: str | Path, download_missing: bool = True, url: str = URL,
                   md5: str = ARCHIVE_MD5) -> Path:
    """Return ``<root>/cifar-10-batches-py``, downloading and extracting it first if missing.

    Raises:
        DataError: files missing and download disabled or impossible; the message says what was
            looked for where, the address, and how to place the files by hand.
    """
    root = Path(root)
    folder = root / FOLDER
    needed = [folder / name for name in TRAIN_FILES + [TEST_FILE]]
    missing = [p for p in needed if not p.exists()]
    if not missing:
        return folder
    if not download_missing:
        raise DataError(f"CIFAR-10 not found: {missing[0]} is missing ({len(missing)} of {len(needed)} "
                        f"files) and download is disabled. {_how_to_place(root)}")
    archive = root / ARCHIVE_NAME
    made = not root.exists()
    try:
        if not (archive.exists() and md5sum(archive) == md5):
            download(url, archive, md5)
        safe_extract(archive, root)
    except DownloadError as err:
        if made and root.is_dir() and not any(root.iterdir()):
            root.rmdir()                                   # leave no empty data/ behind
        raise DataError(f"CIFAR-10 not found under {folder} and the download failed: {err}. "
                        f"{_how_to_place(root)}") from None
    still = [p for p in needed if not p.exists()]
    if still:
        raise DataError(f"{archive} was extracted but {still[0]} is still missing; is it the CIFAR-10 archive?")
    return folder


def load_cifar10(root: str | Path = "data", download: bool = True, url: str = URL,
                 md5: str = ARCHIVE_MD5) -> Dataset:
    """Load all of CIFAR-10 (50,000 training and 10,000 test images) as uint8 NHWC arrays."""
    folder = ensure_cifar10(root, download, url, md5)
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    train = Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = Split(*read_batch(folder / TEST_FILE))
    return Dataset(train=train, test=test, class_names=read_class_names(folder / META_FILE),
                   source="cifar10", info={"root": str(root)})

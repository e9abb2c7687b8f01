"""Top-k class probabilities for image files, from a checkpoint (``mode=predict``).

Images of any size are converted to RGB and resized to the model's input size (bilinear, needs
Pillow), normalised with the checkpoint's own statistics, and classified with its class names.
"""
from __future__ import annotations

import csv
import glob
import logging
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .checkpoint import Checkpoint
from .data import DataError, Normalization
from .data.image_folder import EXTENSIONS, read_image, require_pillow
from .errors import InvalidValue
from .inference import InferencePlan, infer

log = logging.getLogger(__name__)


def find_images(pattern: str) -> list[Path]:
    """Image files named by ``pattern``: a file, a directory (its images) or a glob."""
    path = Path(pattern)
    if path.is_dir():
        found = [p for p in sorted(path.iterdir()) if p.suffix.lower() in EXTENSIONS]
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).suffix.lower() in EXTENSIONS]
    if not found:
        raise DataError(f"no images found for images={pattern!r} (a file, a directory or a glob of "
                        f"{', '.join(sorted(EXTENSIONS))} files)")
    return found


def predict(model, checkpoint: Checkpoint, paths: list[Path], backend, topk: int = 3,
            batch_size: int = 256) -> list[dict]:
    """One row per readable image: ``path`` and ``top`` (a list of ``(class name, probability)``,
    best first). An image that cannot be read is skipped with a one-line warning naming it.

    Raises:
        ValueError: ``topk`` below 1.  DataError: Pillow missing, or not one image readable.
    """
    if topk < 1:
        raise InvalidValue(f"topk must be >= 1, got {topk}")
    require_pillow("mode=predict")
    meta = checkpoint.meta
    size = int(meta["input_shape"][0])
    names = meta.get("class_names") or [str(i) for i in range(model.output_shape(tuple(meta["input_shape"]))[0])]
    if topk > len(names):
        log.warning("topk=%d but the checkpoint knows %d classes; showing all %d", topk, len(names), len(names))
        topk = len(names)
    norm = Normalization.from_dict(meta["normalization"])
    plan = InferencePlan(model)
    readable, images = [], []
    for path in paths:
        try:
            images.append(read_image(path, size))                               # H, W, 3 uint8
            readable.append(path)
        except DataError as err:
            log.warning("skipped %s", err)
    if not readable:
        raise DataError(f"none of the {len(paths)} images could be read (each is named above)")
    rows = []
    for start in range(0, len(readable), batch_size):
        chunk = readable[start:start + batch_size]
        batch = np.stack(images[start:start + batch_size])                       # B, H, W, 3 uint8
        logits = to_numpy(infer(plan, norm(backend.asarray(batch))))
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)       # B, K
        order = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
        for p, row, idx in zip(chunk, probs, order, strict=True):
            rows.append({"path": str(p), "top": [(names[i], float(row[i])) for i in idx]})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    k = len(rows[0]["top"]) if rows else 0
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + [col for i in range(1, k + 1) for col in (f"class_{i}", f"prob_{i}")])
        for r in rows:
            writer.writerow([r["path"]] + [v for name, prob in r["top"] for v in (name, f"{prob:.6f}")])


def format_rows(rows: list[dict]) -> str:
    width = max(len(r["path"]) for r in rows)
    name_width = max(len(n) for r in rows for n, _ in r["top"])
    return "\n".join(f"{r['path']:<{width}}  " + "  ".join(f"{n:<{name_width}} {p:6.1%}" for n, p in r["top"])
                     for r in rows)

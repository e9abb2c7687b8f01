"""Batches on the chosen backend, prepared in a background thread while the model computes.

The order of an epoch is a pure function of ``(seed, epoch)`` and each batch's augmentation of
``(seed, epoch, batch index)``, so a run resumed at batch k of epoch e sees exactly the batches
an uninterrupted run would have seen.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import NUMPY, Backend
from ..errors import InvalidValue
from .augment import Augmentation
from .dataset import Split
from .normalize import Normalization


class BatchLoader:
    """Iterate over ``(x, y)`` batches of a split.

    Args:
        split: uint8 images and labels on the host.
        batch_size: images per batch.
        normalization: per-channel statistics applied while converting to ``dtype``.
        backend: where batches are delivered (NumPy or CuPy).
        augmentation: applied to training batches; None for evaluation.
        shuffle: draw a new order each epoch from ``(seed, epoch)``; False keeps file order.
        drop_last: drop the final incomplete batch (training); False covers every image (evaluation).
        prefetch: batches prepared ahead in a background thread (0: prepare inline).
        shard: ``(rank, size)``: this process reads and augments only part ``rank`` of ``size``
            of every batch (data-parallel processes); the parts are those of
            :func:`cifarnet.parallel.part_edges`, and each image's augmentation is the one it gets
            in the whole batch.
    Yields:
        x ``(B, H, W, C)`` ``dtype`` and y ``(B,)`` int64 (B: this shard's part of the batch),
        both on ``backend``.
    """

    def __init__(self, split: Split, batch_size: int, normalization: Normalization, *,
                 backend: Backend = NUMPY, augmentation: Augmentation | None = None, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, prefetch: int = 2, dtype: Any = np.float32,
                 shard: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise InvalidValue(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > len(split):
            raise InvalidValue(f"batch_size {batch_size} exceeds the {len(split)} images of the split with drop_last")
        self.split, self.batch_size, self.normalization = split, batch_size, normalization
        self.backend, self.augmentation, self.shuffle = backend, augmentation, shuffle
        self.drop_last, self.seed, self.prefetch, self.dtype = drop_last, seed, prefetch, dtype
        rank, size = shard
        if not 0 <= rank < size:
            raise ValueError(f"shard must be (rank, size) with 0 <= rank < size, got {shard}")
        self.shard = shard

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def share(self) -> int:
        """Images of a full batch this shard takes."""
        rank, size = self.shard
        return self.batch_size * (rank + 1) // size - self.batch_size * rank // size

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the split in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return np.arange(len(self.split))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.split))

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None):
        """Batch ``index`` of epoch ``epoch``, prepared in the calling thread."""
        order = self.order(epoch) if order is None else order
        idx = np.sort(order[index * self.batch_size:(index + 1) * self.batch_size])
        rank, size = self.shard
        start, stop = len(idx) * rank // size, len(idx) * (rank + 1) // size    # part_edges' part
        images, labels = self.split.images[idx[start:stop]], self.split.labels[idx[start:stop]]  # B, H, W, C uint8
        if self.augmentation is not None:
            draws = self.augmentation.draw(len(idx), np.random.default_rng([self.seed, epoch, index, 0xA09]))
            if self.augmentation.flip and self.augmentation.alternate:
                draws = (*draws[:2], self.augmentation.alternating_flips(len(self.split), self.seed, epoch)[idx])
            images = self.augmentation.apply(images, *(d[start:stop] for d in draws))
        x = self.normalization(self.backend.asarray(images), self.dtype)
        return x, self.backend.asarray(labels)

    def epoch(self, epoch: int, start_batch: int = 0, stop_batch: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Batches ``start_batch, ..., stop_batch - 1`` of epoch ``epoch`` (``stop_batch``: all of them
        when None; fewer for the last epoch of a run of fractional epochs)."""
        stop_batch = len(self) if stop_batch is None else stop_batch
        if not 0 <= start_batch <= stop_batch <= len(self):
            raise ValueError(f"need 0 <= start_batch <= stop_batch <= {len(self)}, got {start_batch}, {stop_batch}")
        order = self.order(epoch)
        indices = range(start_batch, stop_batch)
        if self.prefetch <= 0:
            for i in indices:
                yield self.batch(epoch, i, order)
            return
        yield from _prefetched((self.batch(epoch, i, order) for i in indices), self.prefetch)

    __call__ = epoch


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` ahead; errors resurface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            q.put((_DONE, err))

    worker = threading.Thread(target=produce, name="cifarnet-batches", daemon=True)
    worker.start()
    try:
        while True:
            item, err = q.get()
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)

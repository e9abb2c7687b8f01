"""Per-channel normalisation, applied per batch while converting uint8 to float."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_module
from ..errors import InvalidValue


@dataclass(frozen=True)
class Normalization:
    """``x = (pixel / 255 - mean) / std`` per channel; mean and std are in [0, 1] pixel units.

    The statistics travel with a run (and its checkpoints) as :meth:`to_dict`, so evaluation and
    later runs normalise exactly as training did.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise InvalidValue(f"need one positive std per mean, got mean={self.mean}, std={self.std}")

    @classmethod
    def from_images(cls, images: np.ndarray) -> Normalization:
        """Exact per-channel mean and (population) std of uint8 ``(N, H, W, C)`` images."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        channels = images.shape[-1]
        counts = np.zeros((channels, 256), dtype=np.int64)                        # histogram per channel
        offsets = (np.arange(channels) * 256).astype(np.int32)
        for start in range(0, len(images), 2048):                                 # bounded temporaries
            chunk = images[start:start + 2048].reshape(-1, channels).astype(np.int32) + offsets
            counts += np.bincount(chunk.reshape(-1), minlength=256 * channels).reshape(channels, 256)
        means, stds = [], []
        for c in range(channels):
            total = counts[c].sum()
            mean = (counts[c] * levels).sum() / total
            means.append(float(mean))
            stds.append(float(np.sqrt((counts[c] * (levels - mean) ** 2).sum() / total)))
        return cls(tuple(means), tuple(stds))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def __call__(self, images, dtype: Any = np.float32):
        """uint8 ``(N, H, W, C)`` on any backend -> normalised ``dtype`` array on the same backend."""
        xp = array_module(images)
        n, row = images.shape[0], int(np.prod(images.shape[1:]))
        std = np.asarray(self.std, dtype=np.float64)
        # per-channel constants tiled along a whole image row (H*W*C): NumPy's broadcast over a
        # 3-long last axis runs ~5x slower than one long contiguous inner loop
        reps = row // len(self.std)
        scale = xp.asarray(np.tile(1.0 / (255.0 * std), reps), dtype=dtype)      # H*W*C
        shift = xp.asarray(np.tile(-np.asarray(self.mean) / std, reps), dtype=dtype)
        out = images.reshape(n, row).astype(dtype)                                 # N, H*W*C
        out *= scale
        out += shift
        return out.reshape(images.shape)


# The training-split statistics of the official CIFAR-10 release.
CIFAR10_STATS = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))

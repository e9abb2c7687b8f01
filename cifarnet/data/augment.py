"""Training augmentation on uint8 batches: random crop with padding and horizontal flip.

Vectorised over the batch: every image draws its own crop offset and flip, and one fancy-index
gather produces the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValue

PAD_MODES = {"zero": "constant", "reflect": "reflect"}


@dataclass(frozen=True)
class Augmentation:
    """Args: ``crop_padding`` pixels added on each side before cropping back to size (0: no
    crop); ``pad_mode`` ``"zero"`` or ``"reflect"``; ``flip`` mirrors left-right with p = 0.5;
    ``alternate`` (with ``flip``): airbench's alternating flip instead, each image's flip drawn
    once for the whole run and every image mirrored on odd epochs (:meth:`alternating_flips`), so
    that an image is seen both ways in any two epochs running."""

    crop_padding: int = 4
    pad_mode: str = "reflect"
    flip: bool = True
    alternate: bool = False

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise InvalidValue(f"pad_mode must be one of {sorted(PAD_MODES)}, got {self.pad_mode!r}")
        if self.crop_padding < 0:
            raise InvalidValue(f"crop_padding must be >= 0, got {self.crop_padding}")

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image crop offsets ``(oy, ox)`` in ``[0, 2*pad]`` and flip flags, each ``(n,)``."""
        p = self.crop_padding
        oy, ox = rng.integers(0, 2 * p + 1, size=(2, n))
        flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool)
        return oy, ox, flips

    @staticmethod
    def alternating_flips(size: int, seed: int, epoch: int) -> np.ndarray:
        """The flips of images ``0 .. size-1`` in ``epoch`` under the alternating scheme: one draw
        per image from ``seed`` for the whole run, inverted on odd epochs. Shape ``(size,)``."""
        once = np.random.default_rng([seed, 0xF119]).random(size) < 0.5
        return once ^ bool(epoch % 2)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> augmented uint8 ``(N, H, W, C)`` (a new array)."""
        return self.apply(images, *self.draw(len(images), rng))

    def apply(self, images: np.ndarray, oy: np.ndarray, ox: np.ndarray, flips: np.ndarray) -> np.ndarray:
        """Crop each image at its offset in the padded image, then mirror where ``flips``."""
        n, h, w, _ = images.shape
        p = self.crop_padding
        padded = images
        if p:
            padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=PAD_MODES[self.pad_mode])
        hp, wp, c = padded.shape[1:]
        rows = oy[:, None] + np.arange(h)                                        # N, H
        cols = ox[:, None] + np.arange(w)                                        # N, W
        cols = np.where(flips[:, None], cols[:, ::-1], cols)
        # one gather of whole pixels (C bytes each) by their flat position in the padded batch
        pixel = (np.arange(n)[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]   # N, H, W
        return np.take(padded.reshape(-1, c), pixel.reshape(-1), axis=0).reshape(n, h, w, c)

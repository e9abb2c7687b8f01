"""Images in class folders, ``<root>/<split>/<class>/*.png|jpg`` (like torchvision's ImageFolder).

Reading needs Pillow (``pip install 'cifarnet[images]'``). Images are converted to RGB and, if
they are not ``image_size`` square already, resized (bilinear). Class names are the sorted folder
names of the training split; every other split must use the same set of folders or a subset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cifar10 import DataError
from .dataset import Dataset, Split

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def require_pillow(needed_by: str = "the image-folder source (data=image_folder)"):
    """Pillow's ``Image`` module; a :class:`DataError` naming ``needed_by`` when it is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{needed_by} reads image files and needs Pillow: pip install 'cifarnet[images]' "
                        "(or pillow)") from None
    return Image


def read_image(path: Path, image_size: int = 32) -> np.ndarray:
    """One image as ``(image_size, image_size, 3)`` uint8 RGB."""
    image = require_pillow()
    try:
        with image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read image: {err}") from None


def read_split(folder: Path, class_names: list[str], image_size: int) -> Split:
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found (expected {folder}/<class>/*.png)")
    unknown = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in class_names)
    if unknown:
        raise DataError(f"{folder}: class folder {unknown[0]!r} is not among the training classes {class_names}")
    images, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            if path.suffix.lower() in EXTENSIONS:
                images.append(read_image(path, image_size))
                labels.append(label)
    if not images:
        raise DataError(f"{folder}: no images found (looked for {', '.join(sorted(EXTENSIONS))} in class folders)")
    return Split(np.stack(images), np.array(labels, dtype=np.int64))


def load_image_folder(root: str | Path = "data/images", train_split: str = "train", test_split: str = "test",
                      image_size: int = 32) -> Dataset:
    """Load ``root/<train_split>`` and ``root/<test_split>``."""
    root = Path(root)
    train_dir = root / train_split
    if not train_dir.is_dir():
        raise DataError(f"image folder {train_dir} not found (expected {train_dir}/<class>/*.png)")
    class_names = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not class_names:
        raise DataError(f"{train_dir}: no class folders")
    return Dataset(train=read_split(train_dir, class_names, image_size),
                   test=read_split(root / test_split, class_names, image_size),
                   class_names=class_names, source="image_folder", info={"root": str(root)})

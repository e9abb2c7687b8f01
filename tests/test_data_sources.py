"""The synthetic and image-folder sources."""
import numpy as np
import pytest

from cifarnet.data import Augmentation, BatchLoader, DataError, Normalization, load_dataset
from cifarnet.inference import infer
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD
from cifarnet.training import accuracy, train_step


def test_synthetic_is_deterministic_and_balanced():
    a = load_dataset("synthetic", train_size=200, test_size=50, data_seed=3)
    b = load_dataset("synthetic", train_size=200, test_size=50, data_seed=3)
    c = load_dataset("synthetic", train_size=200, test_size=50, data_seed=4)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.images, c.train.images)
    assert a.train.images.shape == (200, 32, 32, 3) and a.train.images.dtype == np.uint8
    assert np.bincount(a.train.labels).tolist() == [20] * 10
    assert np.bincount(a.test.labels).tolist() == [5] * 10
    assert len(a.class_names) == 10


def test_synthetic_is_learnable_in_one_short_epoch(backend):
    data = load_dataset("synthetic", train_size=2000, test_size=500, data_seed=0)
    norm = Normalization.from_images(data.train.images)
    model = build_model(model_description("simplecnn"), seed=0).to(backend)
    opt, loss_fn = SGD(lr=0.05, momentum=0.9), SoftmaxCrossEntropy()
    train = BatchLoader(data.train, 64, norm, backend=backend, augmentation=Augmentation(),
                        shuffle=True, drop_last=True, seed=0)
    for x, y in train.epoch(0):                                   # one epoch: 31 steps
        train_step(model, loss_fn, opt, x, y)
    test = BatchLoader(data.test, 250, norm, backend=backend)
    acc = np.mean([accuracy(infer(model, x), y) for x, y in test.epoch(0)])
    assert acc > 0.5, f"test accuracy {acc:.1%} after one epoch (chance is 10%)"


def _write_png(path, colour, size=(32, 32)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder(tmp_path):
    pytest.importorskip("PIL", reason="the image-folder source needs Pillow (the [images] extra)")
    for split, n in (("train", 3), ("test", 2)):
        for cls, colour in (("cats", (200, 10, 10)), ("dogs", (10, 200, 10))):
            for i in range(n):
                _write_png(tmp_path / split / cls / f"{i}.png", colour)
    _write_png(tmp_path / "train" / "dogs" / "big.jpg", (10, 200, 10), size=(64, 48))   # resized to 32x32
    (tmp_path / "train" / "dogs" / "notes.txt").write_text("not an image")
    data = load_dataset("image_folder", root=tmp_path)
    assert data.class_names == ["cats", "dogs"]
    assert data.train.images.shape == (7, 32, 32, 3) and data.test.images.shape == (4, 32, 32, 3)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert data.train.images[0, 0, 0].tolist() == [200, 10, 10]


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL", reason="the image-folder source needs Pillow (the [images] extra)")
    with pytest.raises(DataError, match=str(tmp_path / "train")):
        load_dataset("image_folder", root=tmp_path)
    _write_png(tmp_path / "train" / "a" / "0.png", (0, 0, 0))
    _write_png(tmp_path / "test" / "b" / "0.png", (0, 0, 0))
    with pytest.raises(DataError, match="class folder 'b' is not among the training classes"):
        load_dataset("image_folder", root=tmp_path)
    (tmp_path / "test" / "b" / "0.png").unlink()
    (tmp_path / "test" / "b").rmdir()
    (tmp_path / "test" / "a").mkdir()
    (tmp_path / "test" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0\.png: cannot read image"):
        load_dataset("image_folder", root=tmp_path)

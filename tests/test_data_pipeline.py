"""Augmentation, normalisation and batch iteration."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.data import Augmentation, BatchLoader, Normalization, Split
from cifarnet.data.normalize import CIFAR10_STATS


@pytest.fixture
def split():
    rng = np.random.default_rng(5)
    return Split(rng.integers(0, 256, (50, 8, 6, 3), dtype=np.uint8), rng.integers(0, 10, 50))


IDENTITY = Normalization((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))   # x == pixel value


def test_augmentation_shapes_and_dtype(split):
    out = Augmentation()(split.images, np.random.default_rng(0))
    assert out.shape == split.images.shape and out.dtype == np.uint8


def test_flip_is_an_exact_mirror(split):
    aug = Augmentation(crop_padding=0, flip=True)
    n = len(split.images)
    out = aug.apply(split.images, np.zeros(n, int), np.zeros(n, int), np.ones(n, bool))
    np.testing.assert_array_equal(out, split.images[:, :, ::-1, :])
    kept = aug.apply(split.images, np.zeros(n, int), np.zeros(n, int), np.zeros(n, bool))
    np.testing.assert_array_equal(kept, split.images)


@pytest.mark.parametrize("mode, np_mode", [("zero", "constant"), ("reflect", "reflect")])
def test_crops_are_windows_of_the_padded_image(split, mode, np_mode):
    aug = Augmentation(crop_padding=3, pad_mode=mode, flip=True)
    oy, ox, flips = aug.draw(len(split.images), np.random.default_rng(1))
    assert oy.min() >= 0 and oy.max() <= 6 and ox.max() <= 6 and len(set(oy.tolist())) > 3
    out = aug.apply(split.images, oy, ox, flips)
    padded = np.pad(split.images, ((0, 0), (3, 3), (3, 3), (0, 0)), mode=np_mode)
    for i in range(len(out)):
        window = padded[i, oy[i]:oy[i] + 8, ox[i]:ox[i] + 6]
        np.testing.assert_array_equal(out[i], window[:, ::-1] if flips[i] else window)
    assert flips.any() and not flips.all()


def test_each_image_draws_its_own_offset_and_flip():
    oy, ox, flips = Augmentation().draw(1000, np.random.default_rng(0))
    assert len(set(zip(oy.tolist(), ox.tolist(), strict=True))) == 81 and 400 < flips.sum() < 600


def test_normalization_statistics_and_application(split):
    stats = Normalization.from_images(split.images)
    pixels = split.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, pixels.std(axis=0), rtol=1e-12)
    x = stats(split.images)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(-1, 3).std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(x, ((split.images / 255.0 - stats.mean) / stats.std), rtol=1e-5, atol=1e-5)
    assert Normalization.from_dict(stats.to_dict()) == stats
    assert CIFAR10_STATS.mean[0] == pytest.approx(0.4914)


def test_eval_batches_are_untouched_and_cover_everything(backend, split):
    loader = BatchLoader(split, 16, IDENTITY, backend=backend)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = np.concatenate([to_numpy(b[0]) for b in batches])
    np.testing.assert_allclose(x, split.images.astype(np.float32), atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([to_numpy(b[1]) for b in batches]), split.labels)
    assert list(loader.epoch(1))[0][0].shape == (16, 8, 6, 3)


def test_training_order_is_a_function_of_seed_and_epoch(split):
    def loader(seed):
        return BatchLoader(split, 8, IDENTITY, augmentation=Augmentation(), shuffle=True, drop_last=True, seed=seed)

    a, b, c = loader(0), loader(0), loader(1)
    assert len(a) == 6
    np.testing.assert_array_equal(a.order(3), b.order(3))
    assert not np.array_equal(a.order(3), a.order(4)) and not np.array_equal(a.order(3), c.order(3))
    for (xa, ya), (xb, yb) in zip(a.epoch(2), b.epoch(2), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    seen = np.concatenate([y for _, y in a.epoch(0)])
    assert len(seen) == 48                                    # drop_last drops the last 2 images


def test_labels_stay_with_their_images(split):
    lookup = {bytes(img): lab for img, lab in zip(split.images, split.labels, strict=True)}
    loader = BatchLoader(split, 7, IDENTITY, shuffle=True, seed=4)
    for x, y in loader.epoch(5):
        for img, lab in zip(x, y, strict=True):
            assert lookup[bytes(np.rint(img).astype(np.uint8))] == lab


def test_start_batch_resumes_the_same_sequence(split):
    loader = BatchLoader(split, 8, IDENTITY, augmentation=Augmentation(), shuffle=True, drop_last=True, seed=7)
    full = list(loader.epoch(4))
    tail = list(loader.epoch(4, start_batch=2))
    assert len(tail) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], tail, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError):
        list(loader.epoch(0, start_batch=99))


def test_prefetch_thread_gives_the_same_batches_as_inline(split):
    kwargs = dict(augmentation=Augmentation(), shuffle=True, drop_last=True, seed=2)
    inline = list(BatchLoader(split, 8, IDENTITY, prefetch=0, **kwargs).epoch(1))
    threaded = list(BatchLoader(split, 8, IDENTITY, prefetch=3, **kwargs).epoch(1))
    for (xa, ya), (xb, yb) in zip(inline, threaded, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_prefetch_errors_reach_the_consumer_and_early_exit_stops_the_thread(split):
    import threading

    class Broken(Augmentation):
        def apply(self, images, oy, ox, flips):
            raise RuntimeError("augmentation exploded")

    with pytest.raises(RuntimeError, match="augmentation exploded"):
        list(BatchLoader(split, 8, IDENTITY, augmentation=Broken(), prefetch=2).epoch(0))
    loader = BatchLoader(split, 2, IDENTITY, prefetch=2)
    for i, _ in enumerate(loader.epoch(0)):
        if i == 1:
            break
    assert not [t for t in threading.enumerate() if t.name == "cifarnet-batches"]


def test_bad_loader_arguments(split):
    with pytest.raises(ValueError):
        BatchLoader(split, 0, IDENTITY)
    with pytest.raises(ValueError, match="exceeds"):
        BatchLoader(split, 100, IDENTITY, drop_last=True)
    with pytest.raises(ValueError, match="pad_mode"):
        Augmentation(pad_mode="wrap")


@pytest.mark.parametrize("size", [2, 3])
def test_shards_of_a_batch_are_its_parts_augmented_as_in_the_whole_batch(split, size):
    """Each process reads only its part of every batch (data-parallel ranks); put together, the parts
    are the batch one process gets, augmentation included."""
    kwargs = dict(augmentation=Augmentation(crop_padding=2), shuffle=True, drop_last=True, seed=4, prefetch=0)
    whole = list(BatchLoader(split, 16, IDENTITY, **kwargs).epoch(3))
    shards = [list(BatchLoader(split, 16, IDENTITY, shard=(rank, size), **kwargs).epoch(3)) for rank in range(size)]
    assert [BatchLoader(split, 16, IDENTITY, shard=(r, size)).share for r in range(size)] == \
        [len(shards[r][0][1]) for r in range(size)]
    for i, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[i][0] for s in shards]), x)
        np.testing.assert_array_equal(np.concatenate([s[i][1] for s in shards]), y)
    with pytest.raises(ValueError, match="shard"):
        BatchLoader(split, 16, IDENTITY, shard=(2, 2))

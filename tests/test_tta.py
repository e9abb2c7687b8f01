"""Test-time augmentation: the views against slow references, the weighting, and eval.tta in
mode=eval and in a training run's final evaluation; airbench's alternating flip."""
import json

import numpy as np
import pytest

from cifarnet.data import Augmentation, BatchLoader
from cifarnet.data.dataset import Split
from cifarnet.data.normalize import Normalization
from cifarnet.inference.tta import mirrored, translated, tta_logits, views

from .cli_helpers import cifarnet, compose_plain, errors_in, train_tiny


def reflect_pixel(x, i, j):
    """x[:, i, j] with indices beyond the edge reflected (NumPy's 'reflect', PyTorch's too)."""
    h, w = x.shape[1:3]
    i = -i if i < 0 else 2 * (h - 1) - i if i >= h else i
    j = -j if j < 0 else 2 * (w - 1) - j if j >= w else j
    return x[:, i, j]


def test_views_are_the_mirror_and_one_pixel_translations(rng):
    x = rng.standard_normal((2, 5, 4, 3))
    np.testing.assert_array_equal(mirrored(x)[:, :, 0], x[:, :, 3])
    for dy, dx in [(1, 1), (-1, -1)]:
        moved = translated(x, dy, dx)
        for i in range(5):
            for j in range(4):
                np.testing.assert_array_equal(moved[:, i, j], reflect_pixel(x, i - dy, j - dx))
    assert [w for w, _ in views(x, 2)] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    with pytest.raises(ValueError, match="must be one of"):
        views(x, 3)


def test_the_logits_are_the_weighted_views(rng):
    x, W = rng.standard_normal((3, 6, 6, 2)), rng.standard_normal((72, 5))

    def run(v):
        return v.reshape(len(v), -1) @ W

    level2 = tta_logits(run, x, 2)
    up_left, down_right = translated(x, -1, -1), translated(x, 1, 1)
    expected = (0.25 * (run(x) + run(mirrored(x)))
                + 0.125 * (run(up_left) + run(mirrored(up_left)) + run(down_right) + run(mirrored(down_right))))
    np.testing.assert_allclose(level2, expected, rtol=1e-13)
    np.testing.assert_allclose(tta_logits(run, x, 1), 0.5 * (run(x) + run(mirrored(x))), rtol=1e-13)
    np.testing.assert_array_equal(tta_logits(run, x, 0), run(x))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tta")
    train_tiny(cwd, "outputs/run", "trainer.epochs=1", "eval.tta=2")
    return cwd


@pytest.mark.slow
def test_mode_eval_says_which_augmentation_it_used(trained):
    plain = cifarnet(trained, "mode=eval", "ckpt=outputs/run", "data=synthetic", "data.test_size=64",
                     "eval.tta=0", "hydra.run.dir=outputs/eval0")
    views6 = cifarnet(trained, "mode=eval", "ckpt=outputs/run", "data=synthetic", "data.test_size=64",
                      "eval.tta=2", "hydra.run.dir=outputs/eval2")
    assert plain.returncode == 0 and views6.returncode == 0, plain.stderr + views6.stderr
    assert "(no test-time augmentation)" in plain.stdout and "6 views" in views6.stdout
    assert json.loads((trained / "outputs/eval2/eval.json").read_text())["tta"] == 2
    bad = cifarnet(trained, "mode=eval", "ckpt=outputs/run", "eval.tta=3", "hydra.run.dir=outputs/eval3")
    assert bad.returncode == 1 and errors_in(bad) == [
        "cifarnet: error: eval.tta must be one of 0, 1, 2 (none, mirror, mirror and translations), got 3"]


def test_a_training_run_s_final_evaluation_and_its_time(tmp_path):
    from cifarnet.experiment import train

    summary = train(compose_plain("trainer.epochs=1", "eval.tta=2"), tmp_path)
    final = summary["final_eval"]
    assert final["tta"] == 2 and final["images"] == 64 and 0 <= final["accuracy"] <= 1
    t = summary["time"]
    assert t["total_seconds"] == pytest.approx(t["data_init_seconds"] + t["training_seconds"]
                                               + t["final_evaluation_seconds"], abs=2e-3)
    assert t["final_evaluation_seconds"] == final["seconds"] > 0
    assert json.loads((tmp_path / "result.json").read_text())["final_eval"]["tta"] == 2
    assert train(compose_plain("trainer.epochs=1"), tmp_path / "plain")["final_eval"] is None


def test_alternating_flips_are_drawn_once_and_inverted_on_odd_epochs():
    even, odd, later = (Augmentation.alternating_flips(1000, 3, e) for e in (0, 1, 4))
    np.testing.assert_array_equal(odd, ~even)
    np.testing.assert_array_equal(later, even)
    assert 400 < even.sum() < 600
    assert not np.array_equal(even, Augmentation.alternating_flips(1000, 4, 0))      # from the seed


def test_the_loader_applies_the_alternating_flip_per_image():
    """Without crops, an image's two epochs (0 and 1) are exact mirrors of each other."""
    images = np.random.default_rng(0).integers(0, 255, (40, 6, 6, 3), dtype=np.uint8)
    split = Split(images, np.arange(40) % 10)
    identity = Normalization(mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    loader = BatchLoader(split, 8, identity, augmentation=Augmentation(0, "reflect", True, alternate=True),
                         shuffle=False, drop_last=True, seed=5, prefetch=0)
    first = np.concatenate([x for x, _ in loader.epoch(0)])
    second = np.concatenate([x for x, _ in loader.epoch(1)])
    np.testing.assert_array_equal(second, first[:, :, ::-1, :])
    flips = Augmentation.alternating_flips(40, 5, 0)
    np.testing.assert_array_equal(first[flips], images[flips][:, :, ::-1, :].astype(np.float32))
    np.testing.assert_array_equal(first[~flips], images[~flips].astype(np.float32))

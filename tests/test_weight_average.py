"""The weight average and lookahead: the update rule, its schedule, the end of a run, and a run
resumed from a checkpoint continuing it bit for bit."""
import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet.models import build_model, model_description
from cifarnet.training.average import WeightAverage

from .cli_helpers import compose_plain


def model():
    return build_model(model_description("resnet20"), input_shape=(8, 8, 3), seed=0, dtype=np.float64)


def test_every_fifth_step_the_average_moves_and_the_weights_follow(rng):
    m = model()
    avg = WeightAverage(5, 0.95 ** 5, 3.0, True, total_steps=20)
    avg.start(m)
    start = {n: a.copy() for n, a in avg.arrays(m).items()}
    assert "stem_bn.running_mean" in start and "stem_conv.W" in start
    for step in range(1, 5):
        for _, p in m.named_parameters():
            p += rng.standard_normal(p.shape) * 0.01
        avg.after_step(m, step)                          # nothing before the fifth
    moved = {n: a.copy() for n, a in avg.arrays(m).items()}
    avg.after_step(m, 5)
    d = 0.95 ** 5 * (5 / 20) ** 3
    for name, a in avg.arrays(m).items():
        expected = start[name] + (1 - d) * (moved[name] - start[name])
        np.testing.assert_allclose(avg.average[name], expected, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(a, avg.average[name])       # lookahead: the weights are the average


def test_without_lookahead_the_weights_become_the_average_only_after_the_last_step(rng):
    m = model()
    avg = WeightAverage(2, 0.5, 0.0, False, total_steps=4)
    avg.start(m)
    for step in range(1, 5):
        for _, p in m.named_parameters():
            p += 1.0
        avg.after_step(m, step)
        if step < 4:
            assert not np.array_equal(m["fc"].params["W"], avg.average["fc.W"])
    np.testing.assert_array_equal(m["fc"].params["W"], avg.average["fc.W"])
    # the weights gain 1 a step; d = 0.5 at steps 2 and 4: the average moves to +1 (half of +2),
    # then to +1 + 0.5 * (4 - 1) = +2.5, and the weights end there
    first = model()["fc"].params["W"]
    np.testing.assert_allclose(avg.average["fc.W"] - first, 0.5 * (0.5 * 2) + 0.5 * 4, rtol=1e-12)


def test_the_factor_follows_its_schedule():
    avg = WeightAverage(5, 0.95 ** 5, 3.0, True, total_steps=476)
    assert avg.factor(5) == pytest.approx(0.95 ** 5 * (5 / 476) ** 3)
    assert avg.factor(476) == pytest.approx(0.95 ** 5)


def test_a_resumed_run_continues_the_average_bit_for_bit(tmp_path):
    from cifarnet.experiment import merge_with_checkpoint, train

    options = ("trainer.ema_every=3", "model=resnet20", "model.widths=[4,4,4]", "data.image_size=8",
               "optimizer.groups=[{match:stem_conv.W,frozen_after_epochs:1}]")     # and a layer frozen from epoch 2
    train(compose_plain("trainer.epochs=3", *options), tmp_path / "straight")
    first = train(compose_plain("trainer.epochs=3", "trainer.stop_after_minutes=1e-6", *options), tmp_path / "run")
    assert first["stopped_early"] and first["epochs"] == 1                 # the same run, in two pieces
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "epoch001_numpy.npz")
    assert any(k.startswith("ema/") for k in saved.extras)
    resumed = merge_with_checkpoint(saved.meta["config"],
                                    compose_plain("trainer.epochs=3", "trainer.stop_after_minutes=null", *options),
                                    ["trainer.epochs", "trainer.stop_after_minutes"], str(saved.path))
    train(resumed, tmp_path / "run", saved)
    a = ckpt.load(tmp_path / "straight" / "checkpoints" / "epoch003_numpy.npz")
    b = ckpt.load(tmp_path / "run" / "checkpoints" / "epoch003_numpy.npz")
    assert a.model_state.keys() == b.model_state.keys() and a.extras.keys() == b.extras.keys()
    for key in a.model_state:
        np.testing.assert_array_equal(a.model_state[key], b.model_state[key], err_msg=key)
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key], err_msg=key)
    # 24 steps (8 an epoch, a multiple of 3): the weights are the average at the end
    for name, value in a.model_state.items():
        if f"ema/{name}" in a.extras:
            np.testing.assert_array_equal(value, a.extras[f"ema/{name}"])


def test_a_checkpoint_without_the_average_cannot_continue_one(tmp_path):
    from cifarnet.experiment import merge_with_checkpoint, train

    train(compose_plain("trainer.epochs=1"), tmp_path / "run")
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "epoch001_numpy.npz")
    resumed = merge_with_checkpoint(saved.meta["config"], compose_plain("trainer.epochs=2", "trainer.ema_every=2"),
                                    ["trainer.epochs", "trainer.ema_every"], str(saved.path))
    with pytest.raises(ckpt.CheckpointError, match="weight average does not match"):
        train(resumed, tmp_path / "run", saved)

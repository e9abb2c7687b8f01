"""Runner features airbench's recipe needs, for every model: fractional epochs, the summed loss,
the piecewise-linear schedule."""
import csv

import numpy as np
import pytest

from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.schedules import make_lr_schedule
from cifarnet.schedules.lr import total_steps
from cifarnet.training.settings import epochs_to_run

from .cli_helpers import compose_plain

AIRBENCH_KNOTS = [[0, 0.2], [0.23, 1.0], [1.0, 0.07]]


def test_airbench_s_schedule_step_by_step():
    """476 steps (9.9 epochs of 48): 0.2 -> 1.0 over the first int(0.23 * 476) = 109 steps, then
    down to 0.07 at step 476, as airbench's formula gives it at every step."""
    s = make_lr_schedule("piecewise", 2.0, 9.9, 48, knots=AIRBENCH_KNOTS)
    assert s.total_steps == 476
    for step in range(476):
        if step < 109:
            frac = step / 109
            factor = 0.2 * (1 - frac) + 1.0 * frac
        else:
            frac = (step - 109) / (476 - 109)
            factor = 1.0 * (1 - frac) + 0.07 * frac
        assert s(step) == pytest.approx(2.0 * factor, rel=1e-12), step


def test_piecewise_knots_must_be_in_order():
    with pytest.raises(ValueError, match="increasing step order"):
        make_lr_schedule("piecewise", 1.0, 1, 10, knots=[[0.5, 1.0], [0.2, 0.5]])


def test_fractional_epochs_round_their_steps_up():
    assert total_steps(9.9, 48) == 476 and epochs_to_run(9.9) == 10
    assert total_steps(20, 782) == 20 * 782 and epochs_to_run(20) == 20
    assert total_steps(0.25, 10) == 3 and epochs_to_run(0.25) == 1


def test_a_run_of_a_fraction_of_an_epoch_ends_its_last_epoch_early(tmp_path):
    from cifarnet.experiment import train

    # 256 images in batches of 32: 8 steps an epoch; 1.5 epochs are 12 steps, the second epoch 4
    summary = train(compose_plain("trainer.epochs=1.5", "schedule=linear"), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert summary["epochs"] == 2 and [int(r["step"]) for r in rows] == [8, 12]
    steps = list(csv.DictReader(open(tmp_path / "lr.csv")))
    assert len(steps) == 12
    assert float(steps[-1]["lr"]) == pytest.approx(0.01 * (1 - 11 / 12))     # the schedule spans the 12


def test_the_summed_loss_s_gradient_is_the_mean_s_times_the_batch(rng):
    logits, labels = rng.standard_normal((6, 10)), rng.integers(0, 10, 6)
    mean, summed = SoftmaxCrossEntropy(0.2), SoftmaxCrossEntropy(0.2, "sum")
    (loss_m, ctx_m), (loss_s, ctx_s) = mean.forward(logits, labels), summed.forward(logits, labels)
    assert loss_s == loss_m                                   # the value reported stays the mean
    np.testing.assert_allclose(summed.backward(ctx_s), 6 * mean.backward(ctx_m), rtol=1e-14)
    # a process's share of a global batch: the summed loss's gradient is the share's own rows'
    np.testing.assert_allclose(summed.backward(ctx_s, 0.5), summed.backward(ctx_s), rtol=1e-14)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        SoftmaxCrossEntropy(0.0, "max")

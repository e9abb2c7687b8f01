"""Learning-rate and dropout schedule values at chosen steps.

With ``steps_per_epoch=1`` the epoch-based options of the registered schedules are steps."""
import numpy as np
import pytest

from cifarnet.layers import Dropout
from cifarnet.models import build_model, model_description
from cifarnet.schedules import make_dropout_schedule, make_lr_schedule, set_dropout_rate


def values(schedule, steps):
    return [schedule(s) for s in steps]


def test_constant():
    assert values(make_lr_schedule("constant", 0.1, 100, 1), [0, 50, 99]) == [0.1, 0.1, 0.1]


def test_step():
    s = make_lr_schedule("step", 1.0, 30, 1, milestones=[10, 20], gamma=0.1)
    assert values(s, [0, 9, 10, 19, 20, 29]) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine():
    s = make_lr_schedule("cosine", 1.0, 100, 1, min_lr=0.1)
    # min + (base - min) * (1 + cos(pi * t / 100)) / 2
    assert values(s, [0, 25, 50, 100]) == pytest.approx([1.0, 0.1 + 0.9 * (1 + np.sqrt(0.5)) / 2, 0.55, 0.1])


def test_linear():
    s = make_lr_schedule("linear", 1.0, 100, 1, end_lr=0.2)
    assert values(s, [0, 25, 50, 100]) == pytest.approx([1.0, 0.8, 0.6, 0.2])


def test_warmup_then_cosine():
    s = make_lr_schedule("cosine", 1.0, 110, 1, warmup_epochs=10)
    # ramp (step + 1) / 10, then the cosine runs over the remaining 100 steps
    assert values(s, [0, 4, 9, 10, 60, 110]) == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-12)


def test_warmup_then_step():
    s = make_lr_schedule("step", 0.4, 100, 1, warmup_epochs=4, milestones=[50])
    assert values(s, [0, 3, 4, 49, 50]) == pytest.approx([0.1, 0.4, 0.4, 0.4, 0.04])


def test_options_in_epochs_become_steps():
    s = make_lr_schedule("step", 1.0, 3, 10, milestones=[1.5], warmup_epochs=0.5)
    assert (s.total_steps, s.warmup_steps, s.milestones) == (30, 5, [15])
    assert values(s, [0, 4, 14, 15]) == pytest.approx([0.2, 1.0, 1.0, 0.1])


def test_unknown_schedule_lists_known():
    with pytest.raises(KeyError, match="known: constant, cosine, linear, piecewise, step"):
        make_lr_schedule("poly", 0.1, 10, 1)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError):
        make_lr_schedule("constant", 0.1, 10, 1, warmup_epochs=11)


def test_dropout_schedules():
    assert values(make_dropout_schedule("none", 0.5, 10), [0, 5, 10]) == [0.5, 0.5, 0.5]
    assert values(make_dropout_schedule("linear", 0.5, 10), [0, 5, 10, 20]) == pytest.approx([0.5, 0.25, 0, 0])
    assert values(make_dropout_schedule("cosine", 0.5, 10, final=0.1), [0, 5, 10]) == pytest.approx([0.5, 0.3, 0.1])


def test_set_dropout_rate_reaches_every_dropout_layer():
    model = build_model(model_description("simplecnn"))
    assert set_dropout_rate(model, 0.2) == 1
    assert [layer.rate for _, layer in model.walk() if isinstance(layer, Dropout)] == [0.2]
    with pytest.raises(ValueError):
        set_dropout_rate(model, 1.0)

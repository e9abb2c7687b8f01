"""Parameter groups (learning-rate scales, weight decays, freezing) and SGD's decoupled form."""
import numpy as np
import pytest

from cifarnet.layers import TRAIN
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, fit_to_data, model_description
from cifarnet.optim import SGD, Adam
from cifarnet.optim.groups import ParamGroups

AIRBENCH_GROUPS = [{"kind": "batchnorm", "lr_scale": 64.0}, {"match": "whiten.b", "frozen_after_epochs": 3}]


def small_airbench(rng):
    model = build_model(model_description("airbench94", widths=[4, 8, 8]), seed=0, dtype=np.float64)
    fit_to_data(model, rng.standard_normal((8, 32, 32, 3)))
    return model


def gradients(model, rng, n=6):
    x, y = rng.standard_normal((n, 32, 32, 3)), rng.integers(0, 10, n)
    loss = SoftmaxCrossEntropy(0.2, "sum")
    logits, ctx = model.forward(x, TRAIN)
    _, lctx = loss.forward(logits, y)
    return model.backward(ctx, loss.backward(lctx), need_dx=False)[1]


def test_groups_select_by_kind_or_name_first_match_wins(rng):
    model = small_airbench(rng)
    found = ParamGroups(AIRBENCH_GROUPS + [{"match": "*"}]).assign(model)
    assert {n for n, g in found.items() if g is not None and g.lr_scale == 64.0} == {
        f"group{g}_norm{i}.beta" for g in (1, 2, 3) for i in (1, 2)}
    assert found["whiten.b"].frozen_after_epochs == 3 and found["head.W"].match == "*"


def test_a_group_that_selects_nothing_or_says_something_unknown_is_refused(rng):
    model = small_airbench(rng)
    with pytest.raises(ValueError, match="the group with match 'nrom.beta' selects no parameter"):
        ParamGroups([{"match": "nrom.beta"}]).assign(model)
    with pytest.raises(ValueError, match="unknown key 'lr_scael'"):
        ParamGroups([{"kind": "batchnorm", "lr_scael": 2}])
    with pytest.raises(ValueError, match="needs 'match'"):
        ParamGroups([{"lr_scale": 2}])


def torch_like_sgd(params, grads, velocity, lr, coefficient, momentum):
    """PyTorch's Nesterov SGD for one parameter: g = grad + c p; v = m v + g; p -= lr (g + m v)."""
    g = grads + coefficient * params
    velocity = g if velocity is None else momentum * velocity + g
    return params - lr * (g + momentum * velocity), velocity


def test_decoupled_sgd_is_airbench_s_param_groups_step_by_step(rng):
    """airbench's optimizer: lr_b = 64 lr for batch-norm shifts, weight_decay wd / lr (wd / lr_b for
    them), lr = 11.5 / d, wd = 0.0153 * batch / d, d = 1024 (1 + 1 / (1 - 0.85)); three steps at
    schedule factors 0.2, 0.5, 1.0; the whitening bias frozen from epoch 3 on."""
    model = small_airbench(rng)
    batch, momentum = 1024, 0.85
    opt = SGD(lr=11.5, momentum=momentum, nesterov=True, weight_decay=0.0153, decoupled=True, groups=AIRBENCH_GROUPS)
    opt.batch_size = batch
    d = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / d, 0.0153 * batch / d
    expected = {name: (p.copy(), None) for name, p in model.named_parameters()}
    for step, (factor, epoch) in enumerate([(0.2, 0), (0.5, 2), (1.0, 3)]):
        grads = gradients(model, rng)
        opt.lr, opt.epoch = 11.5 * factor, epoch
        opt.step(model, grads)
        for name, (p, v) in expected.items():
            group_lr = lr * 64 if "norm" in name else lr
            frozen = name == "whiten.b" and epoch >= 3
            if frozen:
                continue
            expected[name] = torch_like_sgd(p, grads[name], v, group_lr * factor, wd / group_lr, momentum)
        for name, p in model.named_parameters():
            np.testing.assert_allclose(p, expected[name][0], rtol=1e-12, atol=1e-15, err_msg=f"{name}, step {step}")
    assert not np.allclose(expected["whiten.b"][0], 0)           # it trained before it froze


def test_groups_work_for_adam_too(rng):
    model = small_airbench(rng)
    opt = Adam(lr=0.01, groups=[{"match": "head.W", "frozen": True}, {"kind": "batchnorm", "lr_scale": 0.5}])
    head = model["head"].params["W"].copy()
    beta = model["group1_norm1"].params["beta"].copy()
    opt.step(model, gradients(model, rng))
    np.testing.assert_array_equal(model["head"].params["W"], head)
    # Adam's first step moves each element by lr * sign(g) (up to eps): the group's scale shows in it
    np.testing.assert_allclose(np.abs(model["group1_norm1"].params["beta"] - beta), 0.005, rtol=1e-4)


def test_the_decoupled_form_needs_the_batch(rng):
    model = small_airbench(rng)
    opt = SGD(lr=1.0, momentum=0.5, decoupled=True)
    with pytest.raises(ValueError, match="needs the batch size"):
        opt.step(model, gradients(model, rng))


def test_backward_skips_the_layers_before_the_first_that_trains(rng):
    """With the whitening bias frozen, nothing before group1_conv1 trains: backward stops there
    (no input gradient, whiten and its GELU not run), the other gradients unchanged, the frozen
    bias's gradient zero."""
    model = small_airbench(rng)
    x, y = rng.standard_normal((4, 32, 32, 3)), rng.integers(0, 10, 4)
    loss = SoftmaxCrossEntropy(0.2, "sum")
    logits, ctx = model.forward(x, TRAIN)
    dlogits = loss.backward(loss.forward(logits, y)[1])
    full = model.backward(ctx, dlogits, need_dx=False)[1]
    opt = SGD(lr=1.0, groups=AIRBENCH_GROUPS)
    opt.epoch = 3
    assert opt.frozen_names(model) == {"whiten.b"} and model.freeze_before(opt.frozen_names(model)) == 2
    called = []
    model["whiten_gelu"].backward = lambda *a, **k: called.append(1)          # must not run
    dx, skipped = model.backward(ctx, dlogits, need_dx=False)
    assert dx is None and called == [] and np.array_equal(skipped["whiten.b"], np.zeros(24))
    for name, grad in full.items():
        if name != "whiten.b":
            np.testing.assert_array_equal(skipped[name], grad, err_msg=name)
    del model["whiten_gelu"].backward
    opt.epoch = 2
    assert model.freeze_before(opt.frozen_names(model)) == 0                    # trains again from the start
    assert model.backward(ctx, dlogits, need_dx=True)[0] is not None           # an input gradient asked for: all run

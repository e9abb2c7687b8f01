"""Device kernel launches of a training step on the CuPy path, counted on the CPU with the stand-in
device module (:mod:`cifarnet.counting`): the rules it counts by, and the per-step budget."""
import numpy as np
import pytest

from cifarnet.counting import counting_backend
from cifarnet.functional.dispatch import use_fused_kernels
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD
from cifarnet.training.step import forward_backward, read_back

# Launches of one training step (forward, loss, backward, the step's read-back, the SGD update) on
# the CuPy path as it is by default (the reference variants), measured with this counter; the budget
# stops them from growing. The history of these numbers is in docs/gpu.md.
TODAY = {"resnet32": 1862, "simplecnn": 144}
# The same with backend.kernels=fused (cifarnet.functional.fused, batch_norm_act's kernels).
FUSED = {"resnet32": 292, "simplecnn": 56}


def launches_per_step(name: str, batch: int = 8, fused: bool = False) -> tuple[int, dict]:
    use_fused_kernels(fused)
    try:
        return _count(name, batch)
    finally:
        use_fused_kernels(False)


def _count(name: str, batch: int) -> tuple[int, dict]:
    backend = counting_backend()
    xp = backend.xp
    model = build_model(model_description(name), seed=0).to(backend)
    optimizer, loss_fn = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4), SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch, 32, 32, 3)).astype(np.float32))
    y = xp.asarray(rng.integers(0, 10, batch))
    for _ in range(2):                                   # the second step: the optimizer's slots exist
        xp.reset()
        result = forward_backward(model, loss_fn, x, y, workers=1)
        read_back(result, y, model.store.grads)
        optimizer.step(model, result.grads)
    return xp.launches, xp.by_op


@pytest.mark.parametrize("name", sorted(TODAY))
def test_a_training_step_stays_within_its_launch_budget(name):
    count, by_op = launches_per_step(name)
    assert count <= TODAY[name], sorted(((sum(c.values()), op) for op, c in by_op.items()), reverse=True)
    assert count >= 0.9 * TODAY[name], f"{count}: fewer launches than the budget; lower TODAY to {count}"


@pytest.mark.parametrize("name", sorted(FUSED))
def test_with_the_fused_kernels_a_step_stays_within_the_budget(name):
    count, by_op = launches_per_step(name, fused=True)
    assert count <= min(FUSED[name], 600), sorted(((sum(c.values()), op) for op, c in by_op.items()), reverse=True)
    assert count >= 0.9 * FUSED[name], f"{count}: fewer launches than the budget; lower FUSED to {count}"
    if name == "resnet32":         # 31 batch norms fused with their ReLU (15 with the residual sum), 2 alone;
        # the 15 whose output only a block's second convolution reads write its columns (no im2col)
        assert by_op["batch_norm_act.forward"] == {"bn_stats": 31, "bn_apply_act": 16, "bn_act_columns": 15}
        assert by_op["conv2d.forward"] == {"im2col": 33 - 15, "matmul": 33}
        assert by_op["batch_norm_act.backward"] == {"bn_grad_sums_act": 31, "bn_dx_act": 31}
        assert by_op["batch_norm.forward"] == {"bn_stats": 2, "bn_apply": 2}
    else:
        assert by_op["batch_norm_act.forward"] == {"bn_stats": 2, "bn_apply_act": 2}
    assert "layers/base.py" not in by_op and "relu.forward" not in by_op     # no gradient copies, no lone ReLU
    assert "training/plan.py" not in by_op       # residual gradients: col2im adds onto the shortcut's (dx_add)
    assert by_op["softmax_cross_entropy.forward"] == {"softmax_xent": 1}
    assert "softmax_cross_entropy.backward" not in by_op                     # the forward wrote the gradient
    assert by_op["step_summary.forward"] == {"step_summary": 1} and "training/step.py" not in by_op
    assert by_op["sgd_update.apply"] == {"sgd_step": 1}


def test_the_fused_path_computes_the_step_of_the_default_path():
    """One ResNet-20 step on the stand-in (the kernels' twins) against the reference variants."""
    def step(fused: bool):
        use_fused_kernels(fused)
        try:
            backend = counting_backend()
            model = build_model(model_description("resnet20", dropout=0.0), seed=0).to(backend)
            rng = np.random.default_rng(0)
            x = backend.xp.asarray(rng.standard_normal((4, 32, 32, 3)).astype(np.float32))
            y = backend.xp.asarray(rng.integers(0, 10, 4))
            result = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
            return float(result.loss), np.asarray(model.store.grads).copy()
        finally:
            use_fused_kernels(False)

    (loss_a, grads_a), (loss_b, grads_b) = step(False), step(True)
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_a)
    np.testing.assert_allclose(grads_b, grads_a, rtol=1e-3, atol=1e-4 * np.abs(grads_a).max())


def test_the_count_does_not_depend_on_the_batch():
    assert launches_per_step("simplecnn", batch=2)[0] == launches_per_step("simplecnn", batch=16)[0]


def test_the_counting_rules():
    xp = counting_backend().xp
    a = xp.asarray(np.arange(12.0).reshape(3, 4))
    b = xp.zeros((3, 4))                              # 1: a memset
    assert xp.launches == 1 and xp.uploads == 1
    c = a * 2 + b                                     # 2: two elementwise kernels
    c += 1                                            # 1
    s = c.sum(axis=0)                                 # 1: a reduction
    assert xp.launches == 5 and type(s).__name__ == "DeviceArray"
    v = a[1:, ::2].T                                  # views: 0
    e = xp.empty((3, 4))                              # allocation only: 0
    assert xp.launches == 5
    a[0] = 7.0                                        # 1: an assignment is a copy kernel
    g = a[xp.asarray([0, 2])]                         # 1: a gather (and an upload of the index)
    m = a.argmax(axis=1)                              # 1
    k = xp.concatenate([a, b])                        # 1, whatever NumPy does inside
    w = v.reshape(-1)                                 # 1: a non-contiguous array copied
    assert xp.launches == 10 and xp.uploads == 2
    assert float(s[0]) == 27.0 and xp.readbacks == 1       # 2 * (0 + 4 + 8) + 3
    assert xp.by_op == {"?": {"zeros": 1, "multiply": 1, "add": 2, "add.reduce": 1, "copy": 2, "gather": 1,
                              "argmax": 1, "concatenate": 1}}     # made outside cifarnet: "?"
    assert [type(t).__name__ for t in (e, g, m, k, w)] == ["DeviceArray"] * 5


def test_launches_are_attributed_to_the_op_running_them():
    _, by_op = launches_per_step("simplecnn")
    assert {"batch_norm_act.forward", "batch_norm_act.backward", "conv2d.forward", "sgd_update.apply"} <= set(by_op)
    assert by_op["sgd_update.apply"] == {"multiply": 3, "add": 2, "subtract": 1}    # whole-buffer calls, once
    assert by_op["conv2d.forward"] == {"pad": 1, "matmul": 1, "add": 1}

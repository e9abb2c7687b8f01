"""The training plan (cifarnet.training.plan): the model traced once, batch norm fused with the
activation after it, run node by node; the same numbers as the layers' own forward and backward."""
import numpy as np
import pytest

from cifarnet.inference.graph import Graph, fuse_for_training, trace
from cifarnet.layers import TRAIN, BatchNorm, Dropout, Linear, ReLU, Sequential
from cifarnet.models import build_model, fit_to_data, model_description
from cifarnet.store import FlatStore
from cifarnet.training.plan import TrainingPlan


def two_ways(name: str, dtype, batch: int = 6, freeze: set | None = None, options: dict | None = None):
    """``(layers, plan)``: the output and gradient buffer of one step by the layers' own forward and
    backward and by the plan, from the same weights and batch; and the plan."""
    results = []
    for through_plan in (False, True):
        model = build_model(model_description(name, **(options or {})), seed=0, dtype=dtype)
        if freeze:
            model.freeze_before(freeze)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 32, 32, 3)).astype(dtype)
        fit_to_data(model, x)                      # airbench's whitening filters (none elsewhere)
        store = FlatStore.of(model)
        if through_plan:
            plan = TrainingPlan.of(model)
            out, tape = plan.forward(x, TRAIN)
        else:
            out, ctx = model.forward(x, TRAIN)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        if through_plan:
            plan.backward(tape, dout, store.grad_views)
        else:
            model.backward(ctx, dout, need_dx=False, into=store.grad_views)
        buffers = np.concatenate([b.ravel() for _, b in model.named_buffers()])
        results.append((out, store.grads.copy(), buffers))
    return results, plan


@pytest.mark.parametrize("name, options", [("resnet20", {}), ("resnet20", {"shortcut": "zero_pad"}),
                                           ("simplecnn", {}), ("airbench94", {})])
def test_a_step_through_the_plan_is_the_layers_step(name, options):
    """float64: the same arithmetic up to the order of a few sums (to 1e-12); float32: to float32
    rounding. ResNet-20 also with zero-padded shortcuts (the residual's gradient goes through the
    padding's backward, a view, before the first convolution's gradient is added to it)."""
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        (a, b), _ = two_ways(name, dtype, options=options)
        for got, want, what in zip(b, a, ("output", "gradients", "running statistics"), strict=True):
            scale = np.abs(want).max()
            assert np.abs(got - want).max() <= tol * scale, (name, dtype, what)


def test_resnet20_s_batch_norms_are_fused_with_their_relus_and_residual_sums():
    plan = TrainingPlan(build_model(model_description("resnet20"), seed=0))
    fused = [n for n in plan.nodes if n.attrs.get("activation")]
    assert len(fused) == 19 and sum(n.attrs["residual"] for n in fused) == 9     # stem + 9 blocks x 2
    assert {n.kind for n in plan.nodes} == {"conv", "batchnorm", "global_avg_pool", "dropout", "linear"}
    assert not any(n.kind in ("relu", "add") for n in plan.nodes)
    unfused = TrainingPlan(build_model(model_description("resnet20"), seed=0), fused=False)
    assert len(unfused.nodes) == len(plan.nodes) + 19 + 9                       # the relus and adds apart


def test_a_batch_norm_read_twice_is_not_fused():
    graph = Graph(training=True)
    bn, relu = BatchNorm(3), ReLU()
    h = graph.add(bn, [0])
    out = graph.add("add", [graph.add(relu, [h]), h])                          # h read by the ReLU and the sum
    assert fuse_for_training(graph.nodes, out) == graph.nodes


def test_dropout_is_a_node_of_the_training_trace_only():
    model = Sequential([("fc", Linear(4, 3)), ("drop", Dropout(0.5)), ("relu", ReLU())])
    assert [n.kind for n in trace(model)[0]] == ["linear", "relu"]
    assert [n.kind for n in TrainingPlan(model).nodes] == ["linear", "dropout", "relu"]


def test_frozen_first_layers_run_forward_only_and_get_zero_gradients():
    frozen = {"whiten.b"}
    (a, b), plan = two_ways("airbench94", np.float64, freeze=frozen)
    assert plan.first_trained == 2 and plan.frozen_parameters == ["whiten.b"]
    np.testing.assert_allclose(b[1], a[1], rtol=0, atol=1e-12 * np.abs(a[1]).max())
    model = build_model(model_description("airbench94"), seed=0, dtype=np.float64)
    model.freeze_before(frozen)
    assert TrainingPlan.of(model) is TrainingPlan.of(model)                   # kept with the model
    model.freeze_before(set())
    assert TrainingPlan.of(model).first_trained == 0                          # made again when that changes


def test_each_parameter_is_reported_ready_once_as_its_gradient_becomes_final():
    model = build_model(model_description("resnet20"), seed=0)
    plan = TrainingPlan.of(model)
    store = FlatStore.of(model)
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    out, tape = plan.forward(x, TRAIN)
    seen, final = [], {}

    def ready(names):
        seen.extend(names)
        final.update({n: store.grad_views[n].copy() for n in names})       # the values at that moment

    plan.backward(tape, np.ones_like(out), store.grad_views, on_ready=ready)
    assert sorted(seen) == sorted(name for name, _ in model.named_parameters())
    assert seen[:2] == ["fc.W", "fc.b"] and seen[-1] == "stem_conv.W"        # the last layer first
    assert all(np.array_equal(final[n], store.grad_views[n]) for n in seen)  # nothing changed afterwards


def test_with_the_plan_s_permissions_the_numpy_variant_computes_in_place_and_still_right():
    """``overwrite_input`` and ``reuse`` (what the plan allows where nothing else reads the memory):
    the centred input lives in ``x``'s memory, the input gradient is written there, and ReLU's
    gradient into ``dout``'s; the numbers are the reference's."""
    from cifarnet.functional.batchnorm_act import BatchNormActNumpy, BatchNormActReference

    rng = np.random.default_rng(3)
    x, residual, dout = (rng.standard_normal((4, 5, 5, 6)) for _ in range(3))
    stats = [np.ones(6), np.full(6, 0.1), np.zeros(6), np.ones(6)]
    for res in (None, residual):
        kwargs = {"activation": "relu", "training": True, "residual": res}
        want_out, saved = BatchNormActReference.forward(x, *[s.copy() for s in stats], **kwargs)
        want_dx, want_grads = BatchNormActReference.backward(saved, dout)
        mine, my_dout = x.copy(), dout.copy()
        out, saved = BatchNormActNumpy.forward(mine, *[s.copy() for s in stats], overwrite_input=True, **kwargs)
        dx, grads = BatchNormActNumpy.backward(saved, my_dout, reuse=True)
        first = dx if res is None else dx[0]
        assert np.shares_memory(first, mine)                       # computed in the input's memory
        np.testing.assert_allclose(out, want_out, rtol=1e-12)
        np.testing.assert_allclose(first, want_dx if res is None else want_dx[0], rtol=1e-10, atol=1e-12)
        if res is not None:
            np.testing.assert_allclose(dx[1], want_dx[1], rtol=1e-12)
        for k in grads:
            np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-10)


def test_the_plan_lets_a_batch_norm_overwrite_a_convolution_s_output_only():
    plan = TrainingPlan(build_model(model_description("airbench94"), seed=0))
    marks = [(plan.nodes[plan._producer[n.inputs[0]]].kind, n.attrs["overwrite_input"])
             for n in plan.nodes if n.attrs.get("activation")]
    assert marks == [("maxpool", False), ("conv", True)] * 3                # pooling keeps its output
    resnet = TrainingPlan(build_model(model_description("resnet20"), seed=0))
    assert all(n.attrs["overwrite_input"] for n in resnet.nodes if n.attrs.get("activation"))


@pytest.mark.parametrize("activation, residual, training", [("relu", False, True), ("relu", True, True),
                                                             ("gelu", False, True), ("relu", True, False)])
def test_the_numpy_variant_in_blocks_of_a_few_rows_computes_what_the_reference_does(activation, residual, training):
    """``chunk_bytes`` small enough for seven blocks (the last one short), against the reference."""
    from cifarnet.functional.batchnorm_act import BatchNormActNumpy, BatchNormActReference

    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal((3, 5, 4, 6)) * 2 + 1, rng.standard_normal((3, 5, 4, 6))
    stats = [rng.uniform(0.5, 2, 6), rng.standard_normal(6), np.zeros(6), np.ones(6)]
    kwargs = {"activation": activation, "training": training,
              "residual": rng.standard_normal((3, 5, 4, 6)) if residual else None}
    want, saved = BatchNormActReference.forward(x, *[s.copy() for s in stats], **kwargs)
    want_dx, want_grads = BatchNormActReference.backward(saved, dout)
    got, saved = BatchNormActNumpy.forward(x.copy(), *[s.copy() for s in stats], chunk_bytes=2 * 24 * 8, **kwargs)
    assert len(saved[9]) == 8                                  # 15 rows of 24 values, 2 rows a block
    got_dx, grads = BatchNormActNumpy.backward(saved, dout.copy(), reuse=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_dx if residual else [got_dx], want_dx if residual else [want_dx], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-10, atol=1e-12)


def test_an_op_node_without_training_rules_is_refused_when_the_plan_is_made():
    from cifarnet.layers.base import Layer

    class Traced(Layer):                      # a container whose trace emits an op kind nobody registered
        def trace(self, graph, value):
            return graph.add("mystery_op", [value])

    with pytest.raises(ValueError, match="'mystery_op' has no training rules"):
        TrainingPlan(Traced())


def test_a_residual_s_gradients_add_in_place_on_arrays_whose_flags_say_nothing_of_writing():
    """CuPy's arrays have flags without ``writeable``; the sum of a value's two gradients must not
    ask for it (it did, and would have failed on the first residual block on a GPU)."""
    from cifarnet.training.plan import _accumulate

    class CupyLikeFlags:
        c_contiguous = True

    class DeviceLike(np.ndarray):
        flags = property(lambda self: CupyLikeFlags())

    acc = np.ones(4).view(DeviceLike)
    got = _accumulate({1: acc, 2: np.zeros(3)}, 1, np.full(4, 2.0), np.zeros(5), np)
    assert got is acc and np.array_equal(np.asarray(got), np.full(4, 3.0))        # added in place
    shared = np.ones(4)
    got = _accumulate({1: shared}, 1, np.ones(4), shared, np)                     # the caller's dout: not touched
    assert got is not shared and np.array_equal(shared, np.ones(4)) and np.array_equal(got, np.full(4, 2.0))


@pytest.mark.parametrize("activation, residual, training", [("relu", False, True), ("relu", True, True),
                                                             ("gelu", False, True), ("relu", False, False)])
def test_the_numpy_variant_equals_batch_norm_then_the_activation_bit_for_bit_in_float32(activation, residual,
                                                                                         training):
    """The fused NumPy variant against BatchNormNumpy, the addition and the activation run apart, in
    float32 and in blocks of a few rows: not close, equal (the sums are the same calls on the same
    whole arrays; a float32 run through the plan follows the unfused run exactly)."""
    from cifarnet.functional.activation import GeluNumpy, ReluReference
    from cifarnet.functional.batchnorm import BatchNormNumpy
    from cifarnet.functional.batchnorm_act import BatchNormActNumpy

    rng = np.random.default_rng(5)
    shape = (6, 7, 5, 8)
    x, dout, res = (rng.standard_normal(shape).astype(np.float32) * 3 + 1 for _ in range(3))
    stats = [rng.uniform(0.5, 2, 8), rng.standard_normal(8), rng.standard_normal(8), rng.uniform(0.5, 2, 8)]
    stats = [s.astype(np.float32) for s in stats]
    act = ReluReference if activation == "relu" else GeluNumpy
    bn_stats = [s.copy() for s in stats]
    y, bn_saved = BatchNormNumpy.forward(x.copy(), *bn_stats, training=training)
    want, act_saved = act.forward(y + res if residual else y)
    d, _ = act.backward(act_saved, dout.copy())
    want_dx, want_grads = BatchNormNumpy.backward(bn_saved, d)

    fused_stats = [s.copy() for s in stats]
    got, saved = BatchNormActNumpy.forward(x.copy(), *fused_stats, activation=activation, training=training,
                                           residual=res if residual else None, overwrite_input=True,
                                           chunk_bytes=3 * 5 * 8 * 4)
    assert len(saved[9]) == 14                                 # 42 rows, 3 a block
    got_dx, grads = BatchNormActNumpy.backward(saved, dout.copy(), reuse=True)
    assert np.array_equal(got, want)
    assert np.array_equal(got_dx[0] if residual else got_dx, want_dx)
    if residual:
        assert np.array_equal(got_dx[1], d)
    assert all(np.array_equal(grads[k], want_grads[k]) for k in ("gamma", "beta"))
    assert all(np.array_equal(a, b) for a, b in zip(fused_stats, bn_stats, strict=True))   # running statistics


def test_simplecnn_s_float32_steps_through_the_fused_plan_equal_the_unfused_steps_bit_for_bit():
    """Five SGD steps with dropout, momentum and weight decay: the weights after them are equal,
    so a float32 training run does not depend on the fusion (SimpleCNN has no Winograd layer)."""
    from cifarnet.losses import SoftmaxCrossEntropy
    from cifarnet.optim import SGD

    weights = []
    for fused in (False, True):
        model = build_model(model_description("simplecnn"), seed=0)
        plan = TrainingPlan(model, fused=fused)
        store, loss_fn = FlatStore.of(model), SoftmaxCrossEntropy()
        opt = SGD(lr=0.05, momentum=0.9, weight_decay=5e-4)
        rng = np.random.default_rng(6)
        for _ in range(5):
            x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
            logits, tape = plan.forward(x, TRAIN)
            _, ctx = loss_fn.forward(logits, rng.integers(0, 10, 16))
            plan.backward(tape, loss_fn.backward(ctx), store.grad_views)
            opt.step(model, store.grad_views)
        weights.append(store.params.copy())
    assert weights[0].dtype == np.float32 and np.array_equal(weights[0], weights[1])


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_a_block_s_first_convolution_adds_its_input_gradient_onto_the_shortcut_s_bit_for_bit(shortcut, monkeypatch):
    """ResNet-20's residual inputs: the first convolution of each block adds its input gradient onto
    the one its shortcut gave (``dx_add``: all 9 blocks)
    instead of the plan adding the two afterwards; float32 gradients equal to the last bit."""
    import dataclasses

    from cifarnet.layers import Conv2d, kinds

    received = []
    original = Conv2d.backward

    def spy(self, ctx, dout, need_dx=True, into=None, dx_add=None):
        received.append(dx_add is not None)
        dx = original(self, ctx, dout, need_dx=need_dx, into=into, dx_add=dx_add)
        return dx

    monkeypatch.setattr(Conv2d, "backward", spy)
    grads = []
    for adds in (True, False):
        if not adds:                               # the kind says it cannot: the plan adds afterwards
            plain = dataclasses.replace(kinds.kind_of("conv"), adds_input_gradient=False)
            monkeypatch.setattr("cifarnet.training.plan.kind_of",
                                lambda name, plain=plain: plain if name == "conv" else kinds.kind_of(name))
        received.clear()
        model = build_model(model_description("resnet20", shortcut=shortcut), seed=0)
        plan, store = TrainingPlan.of(model), FlatStore.of(model)
        x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
        out, tape = plan.forward(x, TRAIN)
        plan.backward(tape, np.random.default_rng(1).standard_normal(out.shape).astype(np.float32), store.grad_views)
        grads.append(store.grads.copy())
        assert sum(received) == (9 if adds else 0), received
    assert np.array_equal(grads[0], grads[1])

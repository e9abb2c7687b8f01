"""Buffers allocated once (cifarnet.arrays.workspace and the training plan's use of it): the
workspace's rules, then whole steps: nothing activation- or gradient-sized is allocated once the
first steps have run, every buffer stays where it was, and the numbers are the ones the plan
computes without a workspace."""
import tracemalloc

import numpy as np
import pytest

from cifarnet.arrays.workspace import Workspace, pooled, scratch, take
from cifarnet.layers import TRAIN
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, fit_to_data, model_description
from cifarnet.store import FlatStore
from cifarnet.training.plan import TrainingPlan
from cifarnet.training.step import forward_backward


def test_a_scope_s_array_is_the_same_one_until_its_shape_changes():
    ws = Workspace()
    a = ws.scope(1).take("out", (4, 3), np.float32)
    assert ws.scope(1).take("out", (4, 3), np.float32) is a
    assert ws.scope(2).take("out", (4, 3), np.float32) is not a             # another node's
    b = ws.scope(1).take("out", (2, 3), np.float32)                         # the last, smaller batch
    assert b.shape == (2, 3) and ws.allocations == 3
    assert ws.scope(1).take("out", (2, 3), np.float32) is b and len(ws.arrays()) == 2   # a replaced
    assert take(None, "out", (2,), np.float64).dtype == np.float64          # no workspace: a new array


def _toy_step(ws: Workspace, last: int = 1000) -> dict:
    """Requests as a plan's nodes make them: a lives on, a scratch array dies at the reset, b is made
    while a lives, c after a died."""
    a = ws.pooled((1000,), np.float32)
    cols = ws.scratch("cols", (500,), np.float32)
    again = ws.scratch("cols", (400,), np.float32)                  # the next chunk: the same bytes
    ws.reset_scratch()
    b = ws.pooled((last,), np.float32)
    ws.release(a.reshape(10, 100))                                   # any whole view of it
    c = ws.pooled((2000,), np.float32)
    ws.release(c[:10])                                               # a part only: c stays alive
    arrays = {"a": a, "cols": cols, "again": again, "b": b, "c": c}
    ws.release_all()
    return arrays


def test_a_step_s_arrays_are_planned_into_one_arena_after_the_first_step():
    ws = Workspace()
    first = _toy_step(ws)                          # allocated one by one and recorded, then planned
    assert first["again"].ctypes.data == first["cols"].ctypes.data
    arena = ws.arrays()[-1]
    assert ws.allocations == 4 + 1 and arena.ctypes.data % 64 == 0   # four requests, then the arena
    second, third = _toy_step(ws), _toy_step(ws)
    assert ws.allocations == 5                                       # nothing allocated any more
    for name in second:
        assert np.shares_memory(second[name], arena)
        assert second[name].ctypes.data == third[name].ctypes.data   # the same address every step
    assert not np.shares_memory(second["a"], second["b"])            # alive at once: apart
    assert not np.shares_memory(second["b"], second["c"])
    # a's bytes, free once it was released, go to c; the scratch's, free after the reset, to b
    assert 12000 <= arena.nbytes < 4000 + 2000 + 4000 + 8000


def test_a_step_off_the_plan_allocates_from_there_on_and_is_planned_again():
    ws = Workspace()
    _toy_step(ws)
    _toy_step(ws)
    arena = ws.arrays()[-1]
    off = _toy_step(ws, last=1500)                                   # b larger than planned
    assert np.shares_memory(off["a"], arena) and not np.shares_memory(off["b"], arena)
    assert not np.shares_memory(off["c"], arena)                     # the rest of the step too
    new_arena = ws.arrays()[-1]
    again = _toy_step(ws, last=1500)                                 # planned for the new sizes
    assert all(np.shares_memory(v, new_arena) for v in again.values())
    assert scratch(None, "x", (3,), np.float32, zeroed=True).tolist() == [0, 0, 0]
    assert pooled(None, (2,), np.float32).shape == (2,)


def test_a_max_pool_backward_stays_on_the_plan_whether_or_not_its_windows_hold_ties():
    """The wide max-pool backward breaks ties on a slower path; it asks the workspace for the same
    arrays either way, so steps alternating between inputs with ties (whole numbers) and without
    follow the recorded plan: no allocation after the first steps, and the gradients are the
    reference's (every window's gradient to its first maximum)."""
    from cifarnet.functional.pooling import MaxPoolReference, max_pool2d

    impl = max_pool2d.variants["numpy"]
    rng = np.random.default_rng(3)
    smooth = rng.standard_normal((3, 6, 6, 32))
    tied = rng.integers(0, 3, smooth.shape).astype(np.float64)          # many ties in every window
    dout = rng.standard_normal((3, 3, 3, 32))
    ws, allocations = Workspace(), []
    for x in [tied, smooth] * 3:
        ws.release_all()
        ws.reset_scratch()
        out, saved = impl.forward(x, kernel=2, chunk=1, workspace=ws)
        ws.reset_scratch()
        dx, _ = impl.backward(saved, dout)
        want, _ = MaxPoolReference.backward(MaxPoolReference.forward(x, kernel=2)[1], dout)
        np.testing.assert_array_equal(dx, want)
        allocations.append(ws.allocations)
    assert allocations[2:] == [allocations[1]] * 4                       # planned after the first step, then none


def test_steps_that_leave_the_plan_every_time_are_reported_once_and_an_epoch_s_last_batch_is_not(caplog):
    """Three steps in a row planned anew (requests that depend on the data) log one warning; the
    pattern of an epoch's smaller last batch (planned anew, then the full batch planned again, then
    followed) never does."""
    ws = Workspace()
    with caplog.at_level("WARNING", logger="cifarnet.workspace"):
        for last in [1000, 1000, 1000, 600, 1000, 1000, 1000] * 3:    # epochs ending in a smaller batch
            _toy_step(ws, last=last)
        assert "planned anew" not in caplog.text
        for last in [700, 900, 700, 900, 700, 900]:                    # a request's size changes every step
            _toy_step(ws, last=last)
    assert caplog.text.count("3 steps in a row asked for other arrays") == 1


def _step(model, x, y, workers):
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers, static_buffers=True)


def _addresses(model) -> list[int]:
    plan = TrainingPlan.of(model)
    return sorted(a.ctypes.data for ws in plan._workspaces.values() for a in ws.arrays())


@pytest.mark.parametrize("name, workers, held_at_least", [("resnet20", 1, 100e6), ("resnet20", 2, 100e6),
                                                         ("simplecnn", 1, 5e6), ("airbench94", 1, 50e6)])
def test_steady_state_steps_allocate_no_activation_or_gradient_buffers(name, workers, held_at_least):
    """After two steps, a step's transient memory (tracemalloc's peak above what was held before it)
    stays under 0.6 MB while the plan's buffers hold over 100 MB (ResNet-20 at batch 64: its
    activations alone are that); the buffers are the same arrays at the same addresses, and none
    was allocated. Without the workspace a ResNet-20 step at batch 64 allocates about 120 MB.
    airbench94 (GELU, whitening, max-pool) too: 0.1 MB, from 52 MB before its GELU, whitening
    convolution and max-pool backward took the workspace's arrays."""
    model = build_model(model_description(name), seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 64)
    for _ in range(2):
        _step(model, x, y, workers)
    plan = TrainingPlan.of(model)
    allocations = [ws.allocations for ws in plan._workspaces.values()]
    addresses = _addresses(model)
    held = sum(ws.nbytes for ws in plan._workspaces.values())
    assert len(allocations) == workers and held > held_at_least
    tracemalloc.start()
    try:
        for _ in range(3):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            _step(model, x, y, workers)
            transient = tracemalloc.get_traced_memory()[1] - before
            assert transient < 0.6e6, f"{name}: a steady-state step allocated {transient / 1e6:.2f} MB at its peak"
    finally:
        tracemalloc.stop()
    assert [ws.allocations for ws in plan._workspaces.values()] == allocations
    assert _addresses(model) == addresses


def test_a_node_s_output_sits_at_the_same_address_every_step():
    """The arrays the nodes write (what a CUDA graph would capture) do not move between steps, from
    the second on (the first step's record is what the plan places)."""
    model = build_model(model_description("resnet20"), seed=0)
    plan, store, loss = TrainingPlan.of(model), FlatStore.of(model), SoftmaxCrossEntropy()
    workspace = plan.workspace(0)
    x = np.random.default_rng(1).standard_normal((8, 32, 32, 3)).astype(np.float32)
    seen = []
    kept = [i for i, node in enumerate(plan.nodes[:-1]) if node.kind != "dropout"]   # dropout allocates its own
    for _ in range(4):
        logits, tape = plan.forward(x, TRAIN, workspace=workspace)
        seen.append([tape.outputs[i].ctypes.data for i in kept])
        _, ctx = loss.forward(logits, np.arange(8) % 10)
        plan.backward(tape, loss.backward(ctx), store.grad_views, workspace=workspace)
    assert seen[1] == seen[2] == seen[3]                         # from the second step on (the first is recorded)
    assert len(kept) > 40 and len(set(seen[2])) > 20            # distinct buffers, not one reused for all


@pytest.mark.parametrize("name, workers", [("resnet20", 1), ("resnet20", 2), ("simplecnn", 1), ("airbench94", 1),
                                           ("airbench94", 2)])
def test_a_step_on_buffers_used_before_equals_one_on_new_buffers_and_one_without(name, workers):
    """Bit for bit: each step of a sequence (batch 12, 12, a smaller last batch of 5 whose buffers
    replace the others', 12 again) through a workspace that ran the steps before, against the same
    step through a new workspace and, on one thread, through the plan without one. airbench94 at
    narrow widths (its GELU, whitening, Winograd and wide pooling). No update between steps."""
    options = {"widths": [24, 32, 32]} if name == "airbench94" else {}
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((b, 32, 32, 3)).astype(np.float32) for b in (12, 12, 5, 12)]
    models = []
    for _ in range(3):                            # each draws the same dropout masks, step by step
        model = build_model(model_description(name, **options), seed=0)
        fit_to_data(model, batches[0])
        models.append(model)
    warm, fresh, plain = models
    loss = SoftmaxCrossEntropy()
    for x in batches:
        y = np.arange(len(x)) % 10
        forward_backward(warm, loss, x, y, workers, min_per_part=4, static_buffers=True)
        TrainingPlan.of(fresh)._workspaces.clear()
        forward_backward(fresh, loss, x, y, workers, min_per_part=4, static_buffers=True)
        assert np.array_equal(FlatStore.of(warm).grads, FlatStore.of(fresh).grads)
        if workers == 1:
            plan, store = TrainingPlan.of(plain), FlatStore.of(plain)
            logits, tape = plan.forward(x, TRAIN)
            _, ctx = loss.forward(logits, y)
            plan.backward(tape, loss.backward(ctx), store.grad_views)
            assert np.array_equal(FlatStore.of(warm).grads, store.grads)


COUNT_WORKSPACES = """
import atexit
from cifarnet.training import plan as _plan
_asked = []
_workspace = _plan.TrainingPlan.workspace
_plan.TrainingPlan.workspace = lambda self, part=0: _asked.append(part) or _workspace(self, part)
atexit.register(lambda: print("workspaces asked:", len(_asked)))
"""


def test_trainer_static_buffers_runs_the_steps_in_the_plan_s_workspace_with_the_same_results(tmp_path):
    """``trainer.static_buffers=true`` from the command line reaches every step (off by default), and
    a run with it logs the very metrics a run without it does."""
    import csv

    from .cli_helpers import TINY, run_driver

    runs = {}
    for flag in ("false", "true"):
        done = run_driver(tmp_path, COUNT_WORKSPACES, *TINY, "trainer.epochs=2", "trainer.workers=1",
                          f"trainer.static_buffers={flag}", f"hydra.run.dir=outputs/{flag}")
        assert done.returncode == 0, done.stdout + done.stderr
        asked = int(done.stdout.split("workspaces asked:")[1].split()[0])
        with open(tmp_path / "outputs" / flag / "metrics.csv") as f:
            runs[flag] = [{k: v for k, v in row.items() if k not in ("epoch_seconds", "images_per_second")}
                          for row in csv.DictReader(f)]
        assert (asked > 0) == (flag == "true")
    assert runs["true"] == runs["false"] and len(runs["true"]) == 2


def test_a_view_s_buffer_is_released_only_after_the_node_that_made_it_ran_backward():
    """conv -> batch norm + ReLU -> flatten -> linear: flatten's output is a view of batch norm's,
    which batch norm's backward still reads (ReLU's derivative). Every release of that memory must
    come after batch norm's backward: released at flatten's, the arena could hand those bytes to
    batch norm's own temporaries while it reads them."""
    desc = {"arch": "sequential", "name": "viewnet", "num_classes": 10, "layers": [
        {"type": "conv", "out_channels": 8, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 10}]}
    model = build_model(desc, seed=0)
    plan, store, loss = TrainingPlan.of(model), FlatStore.of(model), SoftmaxCrossEntropy()
    assert [n.kind for n in plan.nodes] == ["conv", "batchnorm", "flatten", "linear"]
    workspace = plan.workspace(0)
    x = np.random.default_rng(3).standard_normal((4, 32, 32, 3)).astype(np.float32)
    logits, tape = plan.forward(x, TRAIN, workspace=workspace)
    norm_output = tape.outputs[1]
    released = []
    real_release = workspace.release
    workspace.release = lambda a: released.append((np.shares_memory(a, norm_output), tape[1] is None)) or \
        real_release(a)
    _, ctx = loss.forward(logits, np.arange(4))
    plan.backward(tape, loss.backward(ctx), store.grad_views, workspace=workspace)
    assert (True, True) in released                                  # released, once batch norm ran backward
    assert (True, False) not in released                             # never before


def test_on_the_device_path_the_fused_kernels_compute_into_static_buffers_with_the_same_launches():
    """The CuPy path (the counting stand-in, :mod:`cifarnet.counting`) with ``backend.kernels=fused``:
    with static buffers the convolutions', batch norms' and the pooling's outputs and gradients sit at the same
    addresses from the second step on, the step launches as many kernels as without, and the
    gradients are the same, bit for bit."""
    from cifarnet.counting import counting_backend
    from cifarnet.functional.dispatch import use_fused_kernels

    backend = counting_backend()
    xp = backend.xp
    rng = np.random.default_rng(4)
    x = xp.asarray(rng.standard_normal((8, 32, 32, 3)).astype(np.float32))
    y = xp.asarray(np.arange(8) % 10)
    use_fused_kernels(True)
    try:
        grads, launches = {}, {}
        for static in (False, True):
            model = build_model(model_description("resnet20"), seed=0).to(backend)
            counts = []
            for _ in range(3):
                xp.reset()
                forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, static_buffers=static)
                counts.append(xp.launches)
            grads[static], launches[static] = FlatStore.of(model).grads.view(np.ndarray).copy(), counts
        plan = TrainingPlan.of(model)
        workspace = plan.workspace(0)
        seen, inside = [], []
        for _ in range(3):
            logits, tape = plan.forward(x, TRAIN, workspace=workspace)
            outputs = [tape.outputs[i] for i, node in enumerate(plan.nodes)
                       if node.kind in ("conv", "batchnorm", "global_avg_pool")]
            seen.append([out.ctypes.data for out in outputs])
            arena = workspace.arrays()[-1].view(np.ndarray)
            inside.append(all(np.shares_memory(out.view(np.ndarray), arena) for out in outputs))
            plan.backward(tape, xp.ones_like(logits), FlatStore.of(model).grad_views, workspace=workspace)
    finally:
        use_fused_kernels(False)
    assert launches[True] == launches[False]
    assert np.array_equal(grads[True], grads[False])
    assert seen[0] == seen[1] == seen[2] and len(set(seen[0])) > 20
    assert inside == [True, True, True]                               # the workspace's arena, not the allocator


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["resnet20", "simplecnn"])
def test_on_the_device_path_static_buffers_take_a_model_whose_nodes_return_their_input(name, fused):
    """Without dropout (``dropout=0``: the layer hands its input on) a node's output is a view of its
    input, which the plan must not ask the device module about as if it were an array: CuPy's
    ``may_share_memory`` given None crashed the process (H200, CuPy 14.2); the counting stand-in
    refuses it. Three steps in static buffers on the stand-in give the gradients of steps without."""
    from cifarnet.counting import counting_backend
    from cifarnet.functional.dispatch import use_fused_kernels

    backend = counting_backend()
    with pytest.raises(TypeError, match="arrays only"):
        backend.xp.may_share_memory(None, backend.xp.zeros(3))
    rng = np.random.default_rng(5)
    x = backend.xp.asarray(rng.standard_normal((8, 32, 32, 3)).astype(np.float32))
    y = backend.xp.asarray(np.arange(8) % 10)
    use_fused_kernels(fused)
    try:
        grads = {}
        for static in (False, True):
            model = build_model(model_description(name, dropout=0.0), seed=0).to(backend)
            for _ in range(3):
                forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, static_buffers=static)
            grads[static] = FlatStore.of(model).grads.view(np.ndarray).copy()
    finally:
        use_fused_kernels(False)
    assert np.array_equal(grads[True], grads[False])

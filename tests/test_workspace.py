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


def test_scratch_slices_are_disjoint_within_an_op_and_handed_out_again_after_a_reset():
    ws = Workspace()
    ws.scratch("warm-up", (1000,), np.float32)                               # an arena large enough
    ws.reset_scratch()
    cols = ws.scratch("cols", (10, 7), np.float32)
    product = ws.scratch("product", (5, 3), np.float64)
    assert not np.shares_memory(cols, product)
    assert product.ctypes.data % 64 == 0                                    # slices start on cache lines
    again = ws.scratch("cols", (6, 7), np.float32)                          # the next chunk: the same slice
    assert again.ctypes.data == cols.ctypes.data
    bigger = ws.scratch("cols", (20, 7), np.float32)                        # does not fit: a new slice
    assert not np.shares_memory(bigger, product) and not np.shares_memory(bigger, cols)
    ws.reset_scratch()                                                      # the next op
    assert ws.scratch("pad", (20, 7), np.float32).ctypes.data == cols.ctypes.data   # the arena's start again
    ws.scratch("huge", (2000,), np.float32)                                  # the arena grows
    ws.reset_scratch()
    start = ws.scratch("x", (2000,), np.float32).ctypes.data
    ws.reset_scratch()
    assert ws.scratch("x", (2000,), np.float32).ctypes.data == start and ws.allocations == 2   # and stays
    assert scratch(None, "x", (3,), np.float32, zeroed=True).tolist() == [0, 0, 0]


def test_pooled_buffers_are_busy_until_released_by_any_view_of_them():
    ws = Workspace()
    a = ws.pooled((4, 6), np.float32)
    b = ws.pooled((24,), np.float32)                                        # a is busy: another buffer
    assert not np.shares_memory(a, b)
    ws.release(a.reshape(2, 12))                                            # a view that starts where a does
    c = ws.pooled((3, 8), np.float32)                                       # same size, any shape: a's memory
    assert c.ctypes.data == a.ctypes.data and c.shape == (3, 8)
    ws.release(np.zeros(24, np.float32))                                    # not the pool's: nothing happens
    assert ws.pooled((24,), np.float64).dtype == np.float64 and ws.allocations == 3
    ws.release_all()
    assert {ws.pooled((24,), np.float32).ctypes.data, ws.pooled((24,), np.float32).ctypes.data} == \
        {a.ctypes.data, b.ctypes.data}
    assert pooled(None, (2,), np.float32).shape == (2,)


def _step(model, x, y, workers):
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers, static_buffers=True)


def _addresses(model) -> list[int]:
    plan = TrainingPlan.of(model)
    return sorted(a.ctypes.data for ws in plan._workspaces.values() for a in ws.arrays())


@pytest.mark.parametrize("name, workers, held_at_least", [("resnet20", 1, 100e6), ("resnet20", 2, 100e6),
                                                         ("simplecnn", 1, 10e6)])
def test_steady_state_steps_allocate_no_activation_or_gradient_buffers(name, workers, held_at_least):
    """After two steps, a step's transient memory (tracemalloc's peak above what was held before it)
    stays under 0.6 MB while the plan's buffers hold over 100 MB (ResNet-20 at batch 64: its
    activations alone are that); the buffers are the same arrays at the same addresses, and none
    was allocated. Before the workspace a ResNet-20 step at batch 64 allocated about 100 MB."""
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
    """The arrays the nodes write (what a CUDA graph would capture) do not move between steps."""
    model = build_model(model_description("resnet20"), seed=0)
    plan, store, loss = TrainingPlan.of(model), FlatStore.of(model), SoftmaxCrossEntropy()
    workspace = plan.workspace(0)
    x = np.random.default_rng(1).standard_normal((8, 32, 32, 3)).astype(np.float32)
    seen = []
    kept = [i for i, node in enumerate(plan.nodes[:-1]) if node.kind != "dropout"]   # dropout allocates its own
    for _ in range(3):
        logits, tape = plan.forward(x, TRAIN, workspace=workspace)
        seen.append([tape.outputs[i].ctypes.data for i in kept])
        _, ctx = loss.forward(logits, np.arange(8) % 10)
        plan.backward(tape, loss.backward(ctx), store.grad_views, workspace=workspace)
    assert seen[1] == seen[2] and seen[0] == seen[1]
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

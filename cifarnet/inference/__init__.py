"""Batched inference: the model's fused inference plan, the batch split across the cores.

In eval mode every image is computed independently (batch norm uses its running statistics), so
a batch can be cut into parts that run side by side (:mod:`cifarnet.parallel`): batch norm's
folded arithmetic, ReLU, padding and im2col copies, which NumPy runs on one core, then use them
all, and the products lose nothing (``docs/performance.md``, "Measurements behind the defaults").
"""
from __future__ import annotations

from functools import partial

from ..backend import array_module
from ..parallel import MIN_IMAGES_PER_PART, part_edges, parts_for, run_parts
from .graph import Graph, Node, fuse, trace
from .plan import InferencePlan


def infer(model, x, workers: int | None = None, min_per_part: int = MIN_IMAGES_PER_PART):
    """The eval-mode output of ``model`` (a layer or an :class:`InferencePlan` of one) for ``x``.

    Args:
        x: ``(N, ...)`` batch.
        workers: parts to split the batch into (:func:`cifarnet.parallel.parts_for`; None: one per
            core). Only NumPy batches large enough are split: ``min_per_part`` images a part at least.
    Returns:
        ``(N, ...)``; nothing is kept for a backward pass.
    """
    plan = model if isinstance(model, InferencePlan) else InferencePlan(model)
    n = x.shape[0]
    parts = parts_for(n, workers, array_module(x), min_per_part)
    if parts < 2:
        return plan(x)
    outputs = run_parts([partial(plan, x[a:b]) for a, b in part_edges(n, parts)])
    return array_module(x).concatenate(outputs)


__all__ = ["Graph", "InferencePlan", "Node", "fuse", "infer", "trace"]

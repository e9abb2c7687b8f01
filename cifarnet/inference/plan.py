"""An inference plan: a model's fused nodes, run on a batch (nothing kept for backward)."""
from __future__ import annotations

from ..layers.base import INFER
from ..layers.kinds import kind_of
from .graph import Node, fuse, trace


def run_node(node: Node, args):
    """One node's output from its inputs: a layer's node as traced, its layer's eval-mode forward
    with nothing kept; an op node or a fused one, its kind's inference rule."""
    if node.layer is not None and not node.attrs:
        return node.layer.forward(args[0], INFER)[0]
    rule = kind_of(node.kind).infer
    if rule is None:
        raise ValueError(f"no inference rule for node kind {node.kind!r}")
    return rule(node, args)


class InferencePlan:
    """``plan(x)``: the eval-mode output of ``model`` for ``x``, equal to ``model.forward(x)`` in
    eval mode up to rounding, computed from fused nodes (:func:`cifarnet.inference.graph.fuse`).

    Batch norms are folded from the model's current weights and statistics on every call, so a
    plan stays right while the model trains. A plan keeps no state between calls; several
    threads may run one at once (:func:`cifarnet.inference.infer`).
    """

    def __init__(self, model, fused: bool = True):
        nodes, self.output = trace(model)
        self.nodes = fuse(nodes, self.output) if fused else nodes
        self._last_use = {}
        for position, node in enumerate(self.nodes):
            for i in node.inputs:
                self._last_use[i] = position

    def __call__(self, x):
        values = {0: x}
        for position, node in enumerate(self.nodes):
            values[node.output] = run_node(node, [values[i] for i in node.inputs])
            for i in node.inputs:                        # free what no later node reads
                if self._last_use[i] == position and i != self.output:
                    values.pop(i, None)
        return values[self.output]

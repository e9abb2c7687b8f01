"""An inference plan: a model's fused nodes, run on a batch (nothing kept for backward)."""
from __future__ import annotations

from ..functional import conv2d, linear, pad_shortcut, relu
from ..layers.base import INFER
from .graph import Node, fuse, trace


def weights_of(node: Node):
    """``(W, b)`` of a conv or linear node, with its batch norm folded in when the fusion pass
    gave it one (``W * scale``, ``shift + b * scale``), from the layers' current arrays; ``b`` may
    be None. The inference plan and the ONNX export both use it."""
    layer = node.layer
    W, b = layer.params["W"], layer.params.get("b")
    if "norm" not in node.attrs:
        return W, b
    scale, shift = node.attrs["norm"].folded()
    return W * scale, (shift + b * scale if b is not None else shift)


def _run_node(node: Node, args):
    layer, a = node.layer, node.attrs
    if "norm" in a:                                     # conv or linear with its batch norm folded in
        W, bias = weights_of(node)
        if node.kind == "conv":
            residual = args[1] if a["residual"] else None
            return conv2d.forward(args[0], W, bias, stride=layer.stride, padding=layer.padding, residual=residual,
                                  relu=a["relu"], keep=False)[0]
        return linear.forward(args[0], W, bias, relu=a["relu"], keep=False)[0]
    if layer is not None:
        return layer.forward(args[0], INFER)[0]
    if node.kind == "relu":
        return relu.forward(args[0], keep=False)[0]
    if node.kind == "add":
        return args[0] + args[1]
    if node.kind == "pad_shortcut":
        return pad_shortcut.forward(args[0], stride=a["stride"], channels=a["channels"], keep=False)[0]
    raise ValueError(f"no inference rule for node kind {node.kind!r}")


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
            values[node.output] = _run_node(node, [values[i] for i in node.inputs])
            for i in node.inputs:                        # free what no later node reads
                if self._last_use[i] == position and i != self.output:
                    values.pop(i, None)
        return values[self.output]

"""A model as a list of nodes, and the passes that fuse them: one for inference, one for training.

:meth:`Layer.trace` turns a model into nodes in execution order: each node names its kind
(``conv``, ``batchnorm``, ``relu``, ``add``, ...), the values it reads and the value it writes,
and, for a layer, the layer. :func:`fuse` then rewrites the list by the kinds' roles
(:mod:`cifarnet.layers.kinds`): a convolution or linear layer (role ``folds_norm``) followed by an
eval-mode batch norm (``norm``) becomes one node with the batch norm folded into its weights and
bias, and that node also takes a following residual addition (``add``, where the kind
``takes_residual``) and activation (``activation``: ReLU, which the convolution applies while
each chunk of its output is still in cache, or GELU). The layers know nothing about fusion; a new
pattern is a new rule here, a new kind only says its role.

The training plan (:mod:`cifarnet.training.plan`) traces the same way (``trace(model,
training=True)``: dropout is a node then, not the identity) and fuses by the same roles with
:func:`fuse_for_training`: a batch norm whose only reader is an activation, or a residual addition
that an activation alone reads, becomes one node (nothing folds: batch norm trains).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..layers.kinds import kind_of


@dataclass
class Node:
    """One step: ``values[output] = kind(values[inputs...])``, with the ``layer`` or ``attrs`` it needs."""

    kind: str
    inputs: list[int]
    output: int
    layer: Any = None
    attrs: dict[str, Any] = field(default_factory=dict)


class Graph:
    """Nodes in execution order; value 0 is the input. ``training``: traced for a training step
    (a layer that is the identity at inference, dropout, still adds its node)."""

    def __init__(self, training: bool = False) -> None:
        self.nodes: list[Node] = []
        self.training = training
        self._next = 1

    def add(self, target, inputs: list[int], **attrs: Any) -> int:
        """Append a node for ``target`` (a layer, or an op's kind such as ``"relu"``) reading
        ``inputs``; returns the value it writes."""
        layer = None if isinstance(target, str) else target
        kind = target if layer is None else getattr(layer, "kind", type(layer).__name__)   # unregistered: its class
        node = Node(kind, list(inputs), self._next, layer, dict(attrs))
        self._next += 1
        self.nodes.append(node)
        return node.output


def trace(model, training: bool = False) -> tuple[list[Node], int]:
    """The nodes of ``model``'s inference (or, ``training``, of its training step) and the value
    that is its output."""
    graph = Graph(training)
    output = model.trace(graph, 0)
    return graph.nodes, output


def _sole_readers(nodes: list[Node], output: int):
    """``sole_reader(value, role)``: the one node that reads ``value``, if it is the only use of
    the value (the graph's ``output`` counts as a use) and its kind has ``role``; else None."""
    uses = Counter(i for node in nodes for i in node.inputs)
    uses[output] += 1
    readers: dict[int, list[Node]] = {}
    for node in nodes:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)

    def sole_reader(value: int, role: str) -> Node | None:
        found = readers.get(value, [])
        if uses[value] == 1 and len(found) == 1 and kind_of(found[0].kind).role == role:
            return found[0]
        return None

    return sole_reader


def fuse_for_training(nodes: list[Node], output: int) -> list[Node]:
    """Give each batch norm (role ``norm``) the activation that alone reads it, or the residual
    addition (``add``) that alone reads it when an activation alone reads the sum. The fused node
    keeps the batch norm's kind and layer, reads ``[x]`` or ``[x, residual]``, writes the
    activation's value and sits where the activation sat; its ``attrs``: ``activation`` (the kind's
    name) and ``residual`` (bool). An activation of another kind than ReLU takes no residual
    (:data:`cifarnet.functional.batch_norm_act`)."""
    sole_reader = _sole_readers(nodes, output)

    replaced: dict[int, Node] = {}
    absorbed: set[int] = set()
    for node in nodes:
        if kind_of(node.kind).role != "norm" or node.layer is None:
            continue
        residual, after = None, sole_reader(node.output, "activation")
        add = sole_reader(node.output, "add") if after is None else None
        if add is not None and add.inputs[0] != add.inputs[1]:
            after = sole_reader(add.output, "activation")
            if after is not None and after.kind == "relu":
                residual = add.inputs[1] if add.inputs[0] == node.output else add.inputs[0]
            else:
                after = None
        if after is None or id(after) in absorbed:     # (the sum's other batch norm took it first)
            continue
        chain = [node, after] if residual is None else [node, add, after]
        absorbed.update(id(n) for n in chain)
        inputs = node.inputs + ([residual] if residual is not None else [])
        replaced[id(after)] = Node(node.kind, inputs, after.output, node.layer,
                                   {"activation": after.kind, "residual": residual is not None})
    return [replaced.get(id(n), n) for n in nodes if id(n) not in absorbed or id(n) in replaced]


def fuse(nodes: list[Node], output: int) -> list[Node]:
    """Fold each batch norm into the ``folds_norm`` node before it (where that node's output feeds
    only the batch norm), then let the node take the residual addition (a kind that
    ``takes_residual``) and the activation that follow when nothing else reads the values in
    between. A fused node's ``attrs``: ``norm`` (the batch norm layer, when one was folded),
    ``residual`` (its second input is added), ``activation`` (the activation kind's name, or None).

    A fused node sits where the last node it absorbed sat, so every value it reads (the residual
    included) is computed before it.
    """
    sole_reader = _sole_readers(nodes, output)

    replaced: dict[int, Node] = {}        # id of the last absorbed node -> the fused node
    absorbed: set[int] = set()
    for node in nodes:
        kind = kind_of(node.kind)
        if kind.role != "folds_norm" or id(node) in absorbed:
            continue
        chain, value, attrs, residual, activation = [node], node.output, {}, None, None
        norm = sole_reader(value, "norm")
        if norm is not None:
            chain.append(norm)
            value, attrs["norm"] = norm.output, norm.layer
        add = sole_reader(value, "add") if kind.takes_residual else None
        if add is not None and id(add) not in absorbed:
            residual = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
            chain.append(add)
            value = add.output
        after = sole_reader(value, "activation")
        if after is not None and id(after) not in absorbed:
            chain.append(after)
            value, activation = after.output, after.kind
        if len(chain) == 1:
            continue
        absorbed.update(id(n) for n in chain)
        attrs.update(residual=residual is not None, activation=activation)
        fused = Node(node.kind, node.inputs + ([residual] if residual is not None else []), value, node.layer, attrs)
        replaced[id(chain[-1])] = fused
    return [replaced.get(id(n), n) for n in nodes if id(n) not in absorbed or id(n) in replaced]

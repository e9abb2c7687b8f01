"""A model's inference as a list of nodes, and the pass that fuses them.

:meth:`Layer.trace` turns a model into nodes in execution order: each node names its kind
(``conv``, ``batchnorm``, ``relu``, ``add``, ...), the values it reads and the value it writes,
and, for a layer, the layer. :func:`fuse` then rewrites the list: a convolution or linear layer
followed by an eval-mode batch norm becomes one node with the batch norm folded into its weights
and bias, and that node also takes a following residual addition and ReLU, which the
convolution applies while each chunk of its output is still in cache. Nothing in the layers
knows about fusion; a new pattern is a new rule here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One step: ``values[output] = kind(values[inputs...])``, with the ``layer`` or ``attrs`` it needs."""

    kind: str
    inputs: list[int]
    output: int
    layer: Any = None
    attrs: dict[str, Any] = field(default_factory=dict)


class Graph:
    """Nodes in execution order; value 0 is the input."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._next = 1

    def add(self, target, inputs: list[int], **attrs: Any) -> int:
        """Append a node for ``target`` (a layer, or an op's kind such as ``"relu"``) reading
        ``inputs``; returns the value it writes."""
        layer = None if isinstance(target, str) else target
        kind = target if layer is None else layer.kind
        node = Node(kind, list(inputs), self._next, layer, dict(attrs))
        self._next += 1
        self.nodes.append(node)
        return node.output


def trace(model) -> tuple[list[Node], int]:
    """The nodes of ``model``'s inference and the value that is its output."""
    graph = Graph()
    output = model.trace(graph, 0)
    return graph.nodes, output


def fuse(nodes: list[Node], output: int) -> list[Node]:
    """Fold each batch norm into the convolution or linear node before it (where that node's
    output feeds only the batch norm), then let the folded node take the residual addition (a
    convolution) and the ReLU that follow when nothing else reads the values in between.

    A fused node sits where the last node it absorbed sat, so every value it reads (the residual
    included) is computed before it.
    """
    uses = Counter(i for node in nodes for i in node.inputs)
    uses[output] += 1
    readers: dict[int, list[Node]] = {}
    for node in nodes:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)

    def sole_reader(value: int, kind: str) -> Node | None:
        found = readers.get(value, [])
        return found[0] if uses[value] == 1 and len(found) == 1 and found[0].kind == kind else None

    replaced: dict[int, Node] = {}        # id of the last absorbed node -> the fused node
    absorbed: set[int] = set()
    for node in nodes:
        if node.kind not in ("conv", "linear") or id(node) in absorbed:
            continue
        norm = sole_reader(node.output, "batchnorm")
        if norm is None:
            continue
        chain, value, residual, relu = [node, norm], norm.output, None, False
        add = sole_reader(value, "add") if node.kind == "conv" else None
        if add is not None and id(add) not in absorbed:
            residual = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
            chain.append(add)
            value = add.output
        after = sole_reader(value, "relu")
        if after is not None and id(after) not in absorbed:
            chain.append(after)
            value, relu = after.output, True
        absorbed.update(id(n) for n in chain)
        fused = Node(node.kind, node.inputs + ([residual] if residual is not None else []), value, node.layer,
                     {"norm": norm.layer, "relu": relu, "residual": residual is not None})
        replaced[id(chain[-1])] = fused
    return [replaced.get(id(n), n) for n in nodes if id(n) not in absorbed or id(n) in replaced]

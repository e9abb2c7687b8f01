"""The training step as a plan: the model traced once into nodes, fused, run forward and backward.

The same trace the inference plan uses (:func:`cifarnet.inference.graph.trace`, here with
``training=True``) gives the nodes of a step; :func:`cifarnet.inference.graph.fuse_for_training`
joins each batch norm with the activation (and residual addition) after it, so that one pass over
memory does what two or three did (:data:`cifarnet.functional.batch_norm_act`). Each node runs by
its kind's training rules (:mod:`cifarnet.layers.kinds`: ``train_forward``, ``train_backward``;
a layer's own ``forward`` and ``backward`` where the kind has none), and writes its parameters'
gradients straight into the destination given (the flat store's gradient views, named by the
layer's dotted name): nothing is copied.

The backward pass knows when a parameter's gradient is final: when its node's backward has run
(each parameter belongs to one node). ``on_ready(names)`` is told then, in the order the
gradients become ready, which is what lets a communicator start reducing them while the rest of
the backward pass runs (:mod:`cifarnet.training.overlap`).

**Work the ops share.** A value read by two nodes (a residual block's input: its first convolution
and the shortcut) gets two gradients; when the second to run is a node whose kind
``adds_input_gradient`` (a convolution), it is given the first as ``dx_add`` and adds onto it in
its own pass (on a GPU, inside col2im) instead of the plan adding the two afterwards. A fused batch
norm whose output only a stride-1 "same" convolution reads (the kinds' ``makes_columns`` and
``column_geometry``) may write that convolution's column matrix with its output, where its op's
variant can (the fused CuPy kernels: one launch fewer for each such pair); the convolution then
takes the matrix instead of gathering it.

A :class:`~cifarnet.layers.Sequential` whose first layers are frozen (``trained_from``) runs them
forward only; their parameters' gradients are set to zero, as the layer's own backward does.

**Buffers allocated once.** Given a workspace (:meth:`TrainingPlan.workspace`, one per thread's
part of a batch), each node's op takes its output, its input gradient and its large temporaries
from the node's scope of it (:mod:`cifarnet.arrays.workspace`): the first step allocates them, every
later step of the same shapes writes into the very same arrays, views of one arena planned from
the first step. The plan gives a node's output back after the node's backward (its readers'
backward passes ran before it) and a gradient once nothing pending shares its memory, so later
gradients reuse the activations' memory, as freed arrays did before. The last node's output (the logits) is left
out, since the caller may keep it past the step. Ops without a workspace-taking variant for the
arrays' module (the references, which CuPy runs unless its fused kernels are on) allocate as before.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

from ..arrays.workspace import Workspace
from ..backend import array_module
from ..inference.graph import Graph, Node, fuse_for_training
from ..layers.base import TRAIN, Mode, within
from ..layers.kinds import kind_of
from ..layers.sequential import Sequential
from ..parallel import offer_work, take_offered_work

_PLANS: WeakKeyDictionary = WeakKeyDictionary()


class TrainingPlan:
    """``forward(x, mode) -> (out, tape)`` and ``backward(tape, dout, into, ...)`` of ``model``,
    equal to ``model.forward`` and ``model.backward`` up to rounding.

    Attributes:
        nodes: the fused nodes in execution order.
        first_trained: the index of the first node that trains (the nodes before it belong to
            frozen layers and run forward only).
        names: for each node, the dotted name of its layer (None for an op node).
        owners: for each node, the name of the model's top-level layer it belongs to (a
            Sequential's child; ``""`` for a model that has none).
        parameters: for each node, the dotted names of the parameters its backward writes.
    """

    def __init__(self, model, fused: bool = True):
        graph = Graph(training=True)
        frozen_layers = _frozen_children(model)
        boundary = 0                                   # the nodes before it belong to frozen layers
        owner_of: dict[int, str] = {}                  # id(node) -> the top-level layer that traced it
        children = model.children if isinstance(model, Sequential) else {}
        if children:
            value = 0
            for index, (child_name, child) in enumerate(children.items()):
                if index == len(frozen_layers):
                    boundary = len(graph.nodes)
                start = len(graph.nodes)
                value = child.trace(graph, value)
                owner_of.update((id(n), child_name) for n in graph.nodes[start:])
        else:
            value = model.trace(graph, 0)
        self.output = value
        frozen, trained = graph.nodes[:boundary], graph.nodes[boundary:]
        if fused:                                      # each part on its own: no node spans the boundary
            frozen, trained = fuse_for_training(frozen, value), fuse_for_training(trained, value)
        self.nodes, self.first_trained = frozen + trained, len(frozen)
        for node in self.nodes:
            kind = kind_of(node.kind)
            if node.layer is None and (kind.train_forward is None or kind.train_backward is None):
                raise ValueError(f"node kind {node.kind!r} has no training rules (train_forward, train_backward "
                                 "in its Kind record, cifarnet.layers.kinds): a model tracing it cannot train")
        names = {id(layer): name for name, layer in model.walk()}
        self.names = [names[id(n.layer)] if n.layer is not None else None for n in self.nodes]
        self.owners = [owner_of.get(id(n), (name or "").split(".")[0])
                       for n, name in zip(self.nodes, self.names, strict=True)]
        self.parameters = [[f"{name}.{key}" if name else key for key, _ in n.layer.named_parameters()]
                           if n.layer is not None else [] for n, name in zip(self.nodes, self.names, strict=True)]
        self.frozen_parameters = [f"{name}.{key}" for name, child in frozen_layers
                                  for key, _ in child.named_parameters()]
        self._last_use: dict[int, int] = {}
        for position, node in enumerate(self.nodes):
            for i in node.inputs:
                self._last_use[i] = position
        self._producer = {node.output: position for position, node in enumerate(self.nodes)}
        self._workspaces: dict[int, Workspace] = {}
        readers: dict[int, int] = {}
        for node in self.nodes:
            for i in node.inputs:
                readers[i] = readers.get(i, 0) + 1
        self._allow_overwriting(readers)
        self._columns_from = self._share_columns(readers)

    def _share_columns(self, readers: dict[int, int]) -> dict[int, int]:
        """Mark each fused node that can write the column matrix of the convolution that alone reads
        its output (``makes_columns``, no residual; that node's ``column_geometry`` not None) with
        ``attrs["columns"]``, the geometry; returns {the convolution's position: the value whose
        matrix it takes}. Whether the matrix is made is up to the op's variant (the fused CuPy
        kernels make it, the NumPy ones gather columns in cache-sized chunks of their own)."""
        consumers: dict[int, int] = {}
        for position, node in enumerate(self.nodes):
            for i in node.inputs:
                consumers[i] = position
        shared = {}
        for node in self.nodes:
            if not (kind_of(node.kind).makes_columns and node.attrs.get("activation") and not node.attrs.get("residual")
                    and readers.get(node.output) == 1 and node.output != self.output):
                continue
            reader = consumers[node.output]
            geometry_of = kind_of(self.nodes[reader].kind).column_geometry
            geometry = geometry_of(self.nodes[reader]) if geometry_of is not None else None
            if geometry is not None:
                node.attrs["columns"] = geometry
                shared[reader] = node.output
        return shared

    def _allow_overwriting(self, readers: dict[int, int]) -> None:
        """Mark the fused nodes that may compute in their input's memory: the input is read by no
        other node, is not the batch, and its producer keeps nothing of it (``output_free``)."""
        for node in self.nodes:
            if not node.attrs.get("activation"):
                continue
            value = node.inputs[0]
            producer = self.nodes[self._producer[value]] if value in self._producer else None
            node.attrs["overwrite_input"] = (producer is not None and readers[value] == 1 and value != self.output
                                             and kind_of(producer.kind).output_free)

    @classmethod
    def of(cls, model) -> TrainingPlan:
        """``model``'s plan, made on first use and kept with the model (made again if its frozen
        layers changed)."""
        key = getattr(model, "trained_from", 0)
        found = _PLANS.get(model)
        if found is None or found[0] != key:
            found = _PLANS[model] = (key, cls(model))
        return found[1]

    def workspace(self, part: int = 0) -> Workspace:
        """The buffers of the ``part``-th thread's share of a batch (made on first use, kept with the
        plan): pass it to :meth:`forward`. Two parts running at once need two workspaces."""
        if part not in self._workspaces:
            self._workspaces[part] = Workspace()
        return self._workspaces[part]

    # -- running ------------------------------------------------------------------------------------
    def forward(self, x, mode: Mode = TRAIN, clock: Callable | None = None,
                workspace: Workspace | None = None) -> tuple[Any, list]:
        """``(output, tape)``: the tape holds each node's context (None when ``mode.keep`` is False).
        ``clock(position, "fwd", started)``, if given, is called as each node returns, with the
        ``time.perf_counter()`` of its start (benchmarks time the nodes with it). With a
        ``workspace`` (:meth:`workspace`) every node but the last computes into its buffers there,
        for the forward and the backward of this tape: the next forward with the same workspace
        overwrites them, so a tape must be run backward (or dropped) before it."""
        values, tape = {0: x}, _Tape()
        matrices: dict[int, Any] = {}                       # value -> its column matrix, made by its producer
        last = len(self.nodes) - 1
        if workspace is not None:
            workspace.release_all()                        # the last step's outputs and gradients are dead
        for position, node in enumerate(self.nodes):
            rule = kind_of(node.kind).train_forward
            args = [values[i] for i in node.inputs]
            start = time.perf_counter() if clock is not None else 0.0
            node_mode = mode
            if workspace is not None and position != last:
                workspace.reset_scratch()                  # the last node's temporaries are dead
                node_mode = mode.within(workspace.scope(position))
            extra: dict[str, Any] = {}
            if "columns" in node.attrs:                    # may write its reader's column matrix
                extra["columns"] = made = {}
            elif position in self._columns_from and self._columns_from[position] in matrices:
                extra["columns"] = matrices.pop(self._columns_from[position])
            out, ctx = rule(node, args, node_mode, **extra) if rule is not None else node.layer.forward(
                args[0], node_mode, **extra)
            if "columns" in node.attrs and "matrix" in made:
                matrices[node.output] = made["matrix"]
            if clock is not None:
                clock(position, "fwd", start)
            values[node.output] = out
            tape.append(ctx)
            tape.outputs.append(out if workspace is not None else None)
            for i in node.inputs:                          # drop what no later node reads
                if self._last_use[i] == position and i != self.output:
                    values.pop(i, None)
        return values[self.output], tape

    def backward(self, tape: list, dout, into: Mapping[str, Any] | None = None, need_dx: bool = False,
                 on_ready: Callable[[list[str]], None] | None = None, clock: Callable | None = None,
                 workspace: Workspace | None = None, defer_weights: bool = False):
        """Run the nodes' backward passes in reverse, writing parameter gradients into ``into``
        (dotted name -> array; None: nowhere, e.g. for the input gradient alone); returns the input
        gradient if ``need_dx`` (else None). ``on_ready(names)`` is called after each node whose
        parameters' gradients are now final, with their names; ``clock`` as in :meth:`forward`. The
        tape is consumed (its contexts are released as the pass goes). ``workspace``: the one the
        tape's forward ran with; it gets each input gradient back once no pending gradient
        shares its memory (a returned input gradient is valid until that workspace's next step).
        ``defer_weights`` (a part of a split batch, without ``on_ready``): a node whose kind
        ``defers_weight_gradient`` hands its weight gradient to the next exchange with the other
        parts (:func:`cifarnet.parallel.offer_work`: batch norm's, in the next node), which runs it
        while the later part arrives; what no exchange ran runs after that next node."""
        grads = {self.output: dout}
        xp = array_module(dout)
        deferring = defer_weights and on_ready is None and into is not None
        try:
            for position in range(len(self.nodes) - 1, self.first_trained - 1, -1):
                node = self.nodes[position]
                d = grads.pop(node.output, None)
                if d is None:                                  # nothing downstream needs this node
                    continue
                needs = [self._needs_gradient(i, need_dx) for i in node.inputs]
                rule = kind_of(node.kind).train_backward
                deferred = None
                target = within(into, self.names[position]) if into is not None and self.names[position] else into
                start = time.perf_counter() if clock is not None else 0.0
                if workspace is not None:
                    workspace.reset_scratch()
                if rule is not None:                           # reuse: no one else holds d (or the context)
                    reuse = not xp.may_share_memory(d, dout) and not any(xp.may_share_memory(d, g)
                                                                         for g in grads.values())
                    input_grads, _ = rule(node, tape[position], d, any(needs), target, reuse)
                else:
                    extra = {}
                    if needs[0] and kind_of(node.kind).adds_input_gradient:
                        pending = self._addable(grads, node.inputs[0], d, dout, xp)
                        if pending is not None:
                            extra["dx_add"] = pending              # the layer adds its input gradient onto it
                    deferred = [] if deferring and kind_of(node.kind).defers_weight_gradient else None
                    if deferred is not None:
                        extra["defer"] = deferred
                    dx, _ = node.layer.backward(tape[position], d, need_dx=any(needs), into=target, **extra)
                    input_grads = [dx]
                if deferring:
                    for task in take_offered_work():          # the node before offered it; no exchange ran it
                        task()
                    if deferred:
                        offer_work(deferred)
                if clock is not None:
                    clock(position, "bwd", start)
                tape[position] = None
                if on_ready is not None and self.parameters[position]:
                    on_ready(self.parameters[position])
                if workspace is not None:
                    produced = [g for g in input_grads if g is not None]
                    for dead in (d, self._own_output(tape, position, xp)):   # what it read, what it wrote
                        if dead is not None and not _shares(dead, produced, xp) \
                                and not _shares(dead, grads.values(), xp):   # (none: a view of its input): if
                            workspace.release(dead)             # nothing pending holds it, its buffer is free
                tape.outputs[position] = None                   # (without a workspace: the allocator's to reuse)
                for i, g, needed in zip(node.inputs, input_grads, needs, strict=True):
                    if needed and g is not None and g is not grads.get(i):     # (not added onto already)
                        grads[i] = g if i not in grads else _accumulate(grads, i, g, dout, xp, workspace)
        except BaseException:                              # a failed pass offers nothing to later exchanges
            if deferring:
                take_offered_work()
            raise
        if deferring:
            for task in take_offered_work():              # the last weight gradient offered
                task()
        if into is not None and self.frozen_parameters:
            for name in self.frozen_parameters:
                into[name][...] = 0
            if on_ready is not None:
                on_ready(list(self.frozen_parameters))
        return grads.get(0) if need_dx else None

    @staticmethod
    def _addable(grads: dict, value: int, d, dout, xp):
        """The pending gradient of ``value`` if a node's backward may add its input gradient onto it
        in place (``dx_add``): nothing else (the node's ``d``, the caller's ``dout``, another
        pending gradient) shares its memory and it is writeable; else None (the plan adds)."""
        acc = grads.get(value)
        if acc is None or not getattr(acc.flags, "writeable", True) or not getattr(acc.flags, "c_contiguous", False):
            return None
        others = [g for key, g in grads.items() if key != value]
        return None if _shares(acc, [d, dout, *others], xp) else acc

    def _own_output(self, tape, position: int, xp):
        """The node's output if it is memory of its own: None for a view of an input (a flatten's
        output is its producer's, which may still need it: only that node's backward frees it)."""
        out = tape.outputs[position]
        inputs = [tape.outputs[self._producer[i]] for i in self.nodes[position].inputs if i in self._producer]
        return None if out is None or _shares(out, [v for v in inputs if v is not None], xp) else out

    def _needs_gradient(self, value: int, need_dx: bool) -> bool:
        if value == 0:
            return need_dx and self.first_trained == 0
        return self._producer[value] >= self.first_trained


class _Tape(list):
    """The contexts of a forward pass, one per node, and (``outputs``) the nodes' outputs."""

    def __init__(self):
        super().__init__()
        self.outputs: list = []


def _shares(a, arrays, xp) -> bool:
    return any(xp.may_share_memory(a, other) for other in arrays)


def _accumulate(grads: dict, value: int, g, dout, xp, workspace: Workspace | None = None):
    """``grads[value] + g``: added in place when no other gradient (nor the caller's ``dout``) shares
    that memory (a value read by several nodes, the input of a residual block); ``g``'s buffer
    is then released to ``workspace`` unless another pending gradient shares it."""
    acc = grads[value]
    others = [other for key, other in grads.items() if key != value]
    shared = xp.may_share_memory(acc, dout) or xp.may_share_memory(acc, g) or _shares(acc, others, xp)
    writeable = getattr(acc.flags, "writeable", True)          # CuPy's flags have no "writeable": always
    if shared or not writeable:
        return acc + g
    acc += g
    if workspace is not None and not _shares(g, others, xp):
        workspace.release(g)
    return acc


def _frozen_children(model) -> list[tuple[str, Any]]:
    """The ``(name, layer)`` of the frozen first layers of a Sequential (``trained_from``)."""
    count = getattr(model, "trained_from", 0)
    return list(model.children.items())[:count] if count else []


__all__ = ["Node", "TrainingPlan"]

"""The one registry of layer kinds: what the rest of cifarnet needs to know about each kind.

A *kind* is what a model description's ``type`` names (``conv``, ``batchnorm``, ``basic_block``)
and what a node of a traced model is (:mod:`cifarnet.inference`): the layer kinds, plus op nodes
that containers emit (``add``, ``pad_shortcut``). Each kind is one :class:`Kind` record,
registered next to the code that implements it (``register_kind`` at the foot of the layer's
module), holding:

* ``layer``: the class a description's ``type`` builds (None for op nodes);
* ``weighted``: it draws initial weights, so a description-wide ``init`` reaches it;
* ``role``: what the fusion pass may do with it: ``"folds_norm"`` (a convolution or linear
  layer: a following eval-mode batch norm folds into its weights), ``"norm"`` (that batch norm),
  ``"add"`` (a residual addition a folded convolution takes), ``"activation"`` (applied by a
  folded node in its output pass);
* ``takes_residual``: a ``folds_norm`` kind whose folded node also adds a residual input;
* ``infer``: the inference rule, ``(node, inputs) -> output`` (None: the layer's eval-mode
  forward with nothing kept);
* ``train_forward``, ``train_backward``: the training rules of a node of the training plan
  (:mod:`cifarnet.training.plan`): ``(node, inputs, mode) -> (output, ctx)`` and ``(node, ctx, dout,
  need_dx, into, reuse) -> (input gradients, one per input, each None where not needed; parameter
  gradients)``, ``reuse`` saying that nothing else reads ``dout`` or the context (the rule may
  write into them); None: the layer's own ``forward`` and ``backward`` (an op node must have them;
  a fused node's layer kind must understand its ``attrs``);
* ``output_free``: a node of this kind keeps nothing of its output for its backward (a convolution
  keeps its input), so the output's only reader may overwrite it (``attrs["overwrite_input"]``);
* ``makes_columns``: a fused node of this kind (a batch norm with its activation) can write, with
  its output, the column matrix of the convolution that alone reads it: its ``train_forward`` then
  takes ``columns``, a dict it puts the matrix in (key ``"matrix"``) when its op's variant made it;
* ``column_geometry``: ``(node) -> (KH, KW, padding)`` of a node that can take its input's column
  matrix made already (its layer's ``forward`` takes ``columns=``), or None where it cannot (a
  convolution: stride 1 and a padding that keeps the size only);
* ``adds_input_gradient``: its layer's ``backward`` takes ``dx_add``, an array holding a gradient of
  the input already (from another reader of it: a residual block's shortcut), adds the input
  gradient onto it and returns it, so the plan launches no separate addition;
* ``defers_weight_gradient``: its layer's ``backward`` takes ``defer``, a list it may append its
  weight gradient's computation to instead of computing it at once (the training plan of a split
  batch runs it during the next exchange with the other parts);
* ``onnx``: the export rule, ``(builder, node, input names, output name, input ranks) -> output
  rank``, writing the node's ONNX nodes through :class:`cifarnet.export`'s builder (``const``,
  ``node``); None: the kind cannot be exported.

The builder, the fusion passes, the inference and training plans and the ONNX export read these
records and name no kind themselves, so a new kind is added in one place.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry

ROLES = (None, "folds_norm", "norm", "add", "activation")


@dataclass(frozen=True)
class Kind:
    """Everything about one kind; see the module docstring."""

    name: str
    layer: type | None = None
    weighted: bool = False
    role: str | None = None
    takes_residual: bool = False
    infer: Callable[..., Any] | None = None
    onnx: Callable[..., int] | None = None
    train_forward: Callable[..., Any] | None = None
    train_backward: Callable[..., Any] | None = None
    output_free: bool = False
    adds_input_gradient: bool = False
    defers_weight_gradient: bool = False
    makes_columns: bool = False
    column_geometry: Callable[..., Any] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"kind {self.name!r}: role must be one of {ROLES}, got {self.role!r}")


KINDS = Registry("layer type")
_NONE = Kind("")


def register_kind(kind: Kind) -> Kind:
    """Add ``kind`` to :data:`KINDS` (a name may be registered once); returns it."""
    KINDS.register(kind.name)(kind)
    return kind


def kind_of(name: str) -> Kind:
    """The record of ``name``, or an empty one (no role, no rules) for a kind nobody registered."""
    return KINDS.get(name) if name in KINDS else _NONE


def folded_weights(node):
    """``(W, b)`` of a ``folds_norm`` node, with its batch norm folded in when the fusion pass gave
    it one (``W * scale``, ``shift + b * scale``), from the layers' current arrays; ``b`` may be
    None. The inference rules and the ONNX rules both use it."""
    layer = node.layer
    W = layer.params["W"] if "W" in layer.params else layer.buffers["W"]     # fixed filters are a buffer
    b = layer.params.get("b")
    if "norm" not in node.attrs:
        return W, b
    scale, shift = node.attrs["norm"].folded()
    return W * scale, (shift + b * scale if b is not None else shift)


def apply_activation(name: str | None, x):
    """``x`` through the activation kind ``name`` (None: unchanged), as a folded node applies it."""
    return x if name is None else KINDS.get(name).infer(None, [x])


def emit_activation(g, name: str | None, value: str, out: str, rank: int) -> None:
    """The ONNX nodes of activation kind ``name`` from ``value`` to ``out`` (an Identity for None)."""
    if name is None:
        g.node("Identity", [value], out)
    else:
        KINDS.get(name).onnx(g, None, [value], out, [rank])

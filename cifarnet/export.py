"""A trained model as an ONNX file (``mode=export``), built from its fused inference plan.

The graph is the one evaluation runs (:mod:`cifarnet.inference`): each batch norm folded into the
convolution or linear layer before it, the residual addition and activation as their own ONNX nodes
after it. Each node kind writes its own ONNX nodes (its ``onnx`` rule,
:mod:`cifarnet.layers.kinds`); this module only walks the plan. It is float32, with a dynamic batch
dimension, and takes **NCHW** input, ``(N, 3, H, W)``: ONNX's ``Conv`` and ``MaxPool`` are defined
on NCHW, and so are the tools that feed such models (PyTorch, torchvision, OpenCV's
``blobFromImage``, most serving stacks); cifarnet's NHWC weights are transposed once here. The input
is normalised RGB images, ``(pixel / 255 - mean) / std`` per channel with the mean and standard
deviation recorded in the model's metadata (``cifarnet.normalization``; ``cifarnet.preprocessing``
spells the formula out), exactly as cifarnet normalises. ``cifarnet.class_names`` names the outputs;
the output is logits ``(N, num_classes)``. Needs the ``onnx`` package (``pip install
'cifarnet[onnx]'``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import CifarnetError
from .inference import fuse, trace
from .layers.kinds import kind_of

OPSET = 17


class ExportError(CifarnetError, RuntimeError):
    """The model cannot be exported (an op without an ONNX rule, or onnx missing)."""


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ExportError("mode=export needs the onnx package: pip install 'cifarnet[onnx]'") from None
    return onnx, helper, numpy_helper


class _Builder:
    """Collects nodes and initialisers; names values ``v<id>`` as the plan numbers them."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, array) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32)
                                                              if np.asarray(array).dtype.kind == "f"
                                                              else np.asarray(array), name=name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self._count += 1
        output = output or f"t{self._count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=f"{op}_{self._count}", **attrs))
        return output


def to_onnx(model, input_shape, class_names: list[str], normalization: dict[str, Any],
            description: dict[str, Any] | None = None):
    """The ONNX ``ModelProto`` of ``model`` for per-example input ``input_shape`` ``(H, W, C)``.

    Raises:
        ExportError: onnx is missing, or the model holds an op without an ONNX rule.
    """
    onnx, helper, numpy_helper = _onnx()
    nodes, output = trace(model)
    plan = fuse(nodes, output)
    g = _Builder(helper, numpy_helper)
    h, w, c = (int(v) for v in input_shape)
    names, rank = {0: "images"}, {0: 4}
    for node in plan:
        rule = kind_of(node.kind).onnx
        if rule is None:
            raise ExportError(f"no ONNX rule for the op {node.kind!r}")
        out = "logits" if node.output == output else f"v{node.output}"
        rank[node.output] = rule(g, node, [names[i] for i in node.inputs], out, [rank[i] for i in node.inputs])
        names[node.output] = out
    k = int(model.output_shape((h, w, c))[-1])
    graph = helper.make_graph(
        g.nodes, "cifarnet",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", k])],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cifarnet", producer_version=__version__)
    proto.ir_version = min(proto.ir_version, 9)             # readable by onnxruntime releases of the last years
    meta = {"cifarnet.input_layout": "NCHW", "cifarnet.class_names": json.dumps(class_names),
            "cifarnet.preprocessing": "RGB, x = (pixel / 255 - mean) / std per channel, NCHW float32",
            "cifarnet.normalization": json.dumps(normalization),
            "cifarnet.model": json.dumps(description or {})}
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def export_checkpoint(checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint``'s model (on either backend's checkpoint) as an ONNX file at ``path``."""
    from .backend import NUMPY
    from .models import restore_model

    onnx, _, _ = _onnx()
    model = restore_model(checkpoint, NUMPY, np.float32)
    meta = checkpoint.meta
    proto = to_onnx(model, meta["input_shape"], meta.get("class_names") or [], meta["normalization"],
                    meta.get("model"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path

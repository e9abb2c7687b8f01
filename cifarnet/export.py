"""A trained model as an ONNX file (``mode=export``), built from its fused inference plan.

The graph is the one evaluation runs (:mod:`cifarnet.inference`): each batch norm folded into the
convolution or linear layer before it, the residual addition and ReLU as their own ONNX nodes
after it. It is float32, with a dynamic batch dimension, and takes **NCHW** input, ``(N, 3, H,
W)``: ONNX's ``Conv`` and ``MaxPool`` are defined on NCHW, and so are the tools that feed such
models (PyTorch, torchvision, OpenCV's ``blobFromImage``, most serving stacks); cifarnet's NHWC
weights are transposed once here. The input is normalised RGB images, ``(pixel / 255 - mean) /
std`` per channel with the mean and standard deviation recorded in the model's metadata
(``cifarnet.normalization``; ``cifarnet.preprocessing`` spells the formula out), exactly as
cifarnet normalises. ``cifarnet.class_names`` names the outputs; the output is logits
``(N, num_classes)``. Needs the ``onnx`` package (``pip install 'cifarnet[onnx]'``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import to_numpy
from .inference import fuse, trace
from .inference.plan import weights_of

OPSET = 17


class ExportError(RuntimeError):
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


def _emit(g: _Builder, node, args: list[str], out: str, rank: dict[str, int]) -> None:
    """Add the ONNX nodes for one plan node; ``rank`` tracks each value's number of axes."""
    kind, layer, key = node.kind, node.layer, f"n{node.output}"
    if kind == "conv":
        W, b = (None if v is None else to_numpy(v) for v in weights_of(node))
        kh, kw = layer.kernel_size
        p = layer.padding
        inputs = [args[0], g.const(f"{key}_W", W.transpose(3, 2, 0, 1))]          # HWIO -> OIHW
        if b is not None:
            inputs.append(g.const(f"{key}_b", b))
        value = g.node("Conv", inputs, kernel_shape=[kh, kw], strides=[layer.stride] * 2, pads=[p, p, p, p])
        if node.attrs.get("residual"):
            value = g.node("Add", [value, args[1]])
        g.node("Relu", [value], out) if node.attrs.get("relu") else g.node("Identity", [value], out)
        rank[out] = 4
    elif kind == "linear":
        W, b = (None if v is None else to_numpy(v) for v in weights_of(node))
        inputs = [args[0], g.const(f"{key}_W", W)] + ([g.const(f"{key}_b", b)] if b is not None else [])
        value = g.node("Gemm", inputs)
        g.node("Relu", [value], out) if node.attrs.get("relu") else g.node("Identity", [value], out)
        rank[out] = 2
    elif kind == "batchnorm":                                    # a batch norm with nothing to fold into
        scale, shift = (to_numpy(v) for v in layer.folded())
        shape = (1, -1, 1, 1) if rank[args[0]] == 4 else (1, -1)
        scaled = g.node("Mul", [args[0], g.const(f"{key}_scale", scale.reshape(shape))])
        g.node("Add", [scaled, g.const(f"{key}_shift", shift.reshape(shape))], out)
        rank[out] = rank[args[0]]
    elif kind == "relu":
        g.node("Relu", [args[0]], out)
        rank[out] = rank[args[0]]
    elif kind == "add":
        g.node("Add", args, out)
        rank[out] = rank[args[0]]
    elif kind == "maxpool":
        g.node("MaxPool", [args[0]], out, kernel_shape=[layer.kernel_size] * 2, strides=[layer.stride] * 2)
        rank[out] = 4
    elif kind == "global_avg_pool":
        g.node("Flatten", [g.node("GlobalAveragePool", [args[0]])], out, axis=1)
        rank[out] = 2
    elif kind == "flatten":                                      # cifarnet flattens in (H, W, C) order
        g.node("Flatten", [g.node("Transpose", [args[0]], perm=[0, 2, 3, 1])], out, axis=1)
        rank[out] = 2
    elif kind == "pad_shortcut":                                 # x[:, :, ::s, ::s], zero channels around
        s, channels = node.attrs["stride"], node.attrs["channels"]
        c = node.attrs["in_channels"]
        before = (channels - c) // 2
        sub = g.node("Slice", [args[0], g.const(f"{key}_starts", np.array([0, 0], np.int64)),
                               g.const(f"{key}_ends", np.array([2**62, 2**62], np.int64)),
                               g.const(f"{key}_axes", np.array([2, 3], np.int64)),
                               g.const(f"{key}_steps", np.array([s, s], np.int64))])
        pads = np.array([0, before, 0, 0, 0, channels - c - before, 0, 0], np.int64)
        g.node("Pad", [sub, g.const(f"{key}_pads", pads)], out, mode="constant")
        rank[out] = 4
    else:
        raise ExportError(f"no ONNX rule for the op {kind!r}")


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
    names, rank = {0: "images"}, {"images": 4}
    for node in plan:
        out = "logits" if node.output == output else f"v{node.output}"
        _emit(g, node, [names[i] for i in node.inputs], out, rank)
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

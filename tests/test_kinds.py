"""The one registry of layer kinds: a kind registered in one place builds, fuses, runs in the
inference plan and exports, with nothing else edited."""
import numpy as np
import pytest

from cifarnet.inference import InferencePlan, fuse, trace
from cifarnet.layers import EVAL, KINDS, Kind, Layer
from cifarnet.layers.base import Mode
from cifarnet.models import ModelSpecError, build_model

from .model_helpers import randomise_batch_norms


class Softsign(Layer):
    """``x / (1 + |x|)``: a kind no part of cifarnet knows about."""

    kind = "softsign"

    def forward(self, x, mode: Mode = EVAL):
        return x / (1 + np.abs(x)), (x if mode.keep else None)

    def backward(self, ctx, dout, need_dx=True, into=None):
        return dout / (1 + np.abs(ctx)) ** 2, {}


def onnx_softsign(g, node, args, out, ranks):
    g.node("Softsign", [args[0]], out)
    return ranks[0]


SOFTSIGN = Kind("softsign", Softsign, role="activation",
                infer=lambda node, args: args[0] / (1 + np.abs(args[0])), onnx=onnx_softsign)
DESCRIPTION = {"layers": [{"type": "conv", "out_channels": 4, "kernel_size": 3, "padding": 1},
                          {"type": "batchnorm"}, {"type": "softsign"}, {"type": "flatten"},
                          {"type": "linear", "out_features": 3}, {"type": "softsign"}]}


def test_a_kind_registered_in_one_place_builds_fuses_and_runs_in_the_plan(rng):
    with KINDS.replaced("softsign", SOFTSIGN):
        model = randomise_batch_norms(build_model(DESCRIPTION, (5, 5, 2), seed=0, dtype=np.float64), rng)
        nodes, output = trace(model)
        fused = fuse(nodes, output)
        assert [(n.kind, n.attrs.get("activation")) for n in fused] == [
            ("conv", "softsign"), ("flatten", None), ("linear", "softsign")]
        x = rng.standard_normal((3, 5, 5, 2))
        np.testing.assert_allclose(InferencePlan(model)(x), model.forward(x, EVAL)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ModelSpecError, match="unknown layer type 'softsign'"):
        build_model(DESCRIPTION, (5, 5, 2))


def test_a_kind_registered_in_one_place_exports(rng):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cifarnet.export import to_onnx

    with KINDS.replaced("softsign", SOFTSIGN):
        model = randomise_batch_norms(build_model(DESCRIPTION, (5, 5, 2), seed=0), rng)
        proto = to_onnx(model, (5, 5, 2), ["a", "b", "c"], {"mean": [0, 0], "std": [1, 1]})
        x = rng.standard_normal((4, 5, 5, 2)).astype(np.float32)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x.transpose(0, 3, 1, 2)})[0]
        np.testing.assert_allclose(got, model.forward(x, EVAL)[0], rtol=1e-4, atol=1e-5)


def test_every_leaf_kind_can_be_exported_and_every_layer_kind_builds():
    """A kind with a layer has a class that builds; every kind that becomes a node has an ONNX rule
    (containers and dropout never become nodes: they trace into other kinds or into nothing)."""
    never_nodes = {"basic_block", "dropout"}
    for name in KINDS:
        kind = KINDS.get(name)
        assert kind.name == name
        if kind.layer is not None:
            assert hasattr(kind.layer, "build") and hasattr(kind.layer, "forward")
        if name not in never_nodes:
            assert kind.onnx is not None, f"{name} has no ONNX rule"
        if kind.layer is None:
            assert kind.infer is not None, f"op node {name} has no inference rule"


def test_an_op_node_kind_is_not_a_layer_type():
    with pytest.raises(ModelSpecError, match="'add' is an op that containers emit, not a layer type"):
        build_model({"layers": [{"type": "add"}]}, (4, 4, 1))


def test_a_role_must_be_known():
    with pytest.raises(ValueError, match="role must be one of"):
        Kind("odd", role="sometimes")

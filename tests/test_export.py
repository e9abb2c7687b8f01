"""ONNX export: the graph passes onnx's checker and onnxruntime computes what cifarnet's inference does."""
import json

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet import pretrained
from cifarnet.backend import NUMPY
from cifarnet.data import Normalization, load_dataset
from cifarnet.experiment import restore_model
from cifarnet.inference import infer
from cifarnet.models import build_model, model_description

from .model_helpers import randomise_batch_norms

onnx = pytest.importorskip("onnx", reason="export needs the onnx package (the [onnx] extra)")
ort = pytest.importorskip("onnxruntime", reason="comparing outputs needs onnxruntime (a test extra)")

from cifarnet.export import export_checkpoint, to_onnx  # noqa: E402  (after the skips)

MODELS = {
    "simplecnn": model_description("simplecnn"),
    "resnet20": model_description("resnet20"),
    "resnet8_zero_pad": {"arch": "resnet", "name": "resnet8", "depth": 8, "shortcut": "zero_pad", "dropout": 0.3},
}
NORM = {"mean": [0.491, 0.482, 0.447], "std": [0.247, 0.244, 0.262]}


def run_onnx(proto, x_nhwc):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))})[0]


def assert_same_logits(got, want):
    """Within 1e-4 of the largest logit (float32 rounding, folded in another order)."""
    scale = max(1.0, float(np.abs(want).max()))
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-4 * scale


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 37])
def test_onnxruntime_computes_what_cifarnet_infers(rng, name, batch):
    model = randomise_batch_norms(build_model(MODELS[name], seed=0), rng)
    proto = to_onnx(model, (32, 32, 3), [f"c{i}" for i in range(10)], NORM)
    onnx.checker.check_model(proto, full_check=True)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    assert_same_logits(run_onnx(proto, x), infer(model, x))


def test_the_batch_dimension_is_dynamic_and_the_metadata_says_how_to_feed_it(rng):
    model = build_model(MODELS["simplecnn"], seed=0)
    proto = to_onnx(model, (32, 32, 3), ["cat", "dog"] + [f"c{i}" for i in range(8)], NORM, MODELS["simplecnn"])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cifarnet.input_layout"] == "NCHW"
    assert json.loads(meta["cifarnet.class_names"])[:2] == ["cat", "dog"]
    assert json.loads(meta["cifarnet.normalization"]) == NORM
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]      # folded


def test_real_looking_images_normalised_as_the_metadata_says(rng):
    data = load_dataset("synthetic", train_size=40, test_size=12)
    norm = Normalization.from_images(data.train.images)
    model = randomise_batch_norms(build_model(MODELS["resnet20"], seed=0), rng)
    proto = to_onnx(model, (32, 32, 3), data.class_names, norm.to_dict())
    stats = json.loads({p.key: p.value for p in proto.metadata_props}["cifarnet.normalization"])
    pixels = data.test.images                                                    # uint8 NHWC
    by_hand = (pixels / np.float32(255) - np.float32(stats["mean"])) / np.float32(stats["std"])
    assert_same_logits(run_onnx(proto, by_hand.astype(np.float32)), infer(model, norm(pixels)))


@pytest.mark.parametrize("written_on", ["numpy", "cupy"])
def test_a_checkpoint_written_on_either_backend_exports(tmp_path, rng, written_on):
    model = randomise_batch_norms(build_model(MODELS["resnet8_zero_pad"], seed=1), rng)
    meta = {"model": MODELS["resnet8_zero_pad"], "input_shape": [32, 32, 3], "normalization": NORM,
            "class_names": [f"c{i}" for i in range(10)], "backend": written_on, "state": {"epoch": 3}}
    path = ckpt.save(tmp_path / f"best_{written_on}.npz", model.state_dict(), None, meta)
    out = export_checkpoint(ckpt.load(path), tmp_path / "model.onnx")
    proto = onnx.load(str(out))
    x = rng.standard_normal((5, 32, 32, 3)).astype(np.float32)
    assert_same_logits(run_onnx(proto, x), infer(model, x))


@pytest.mark.slow
def test_mode_export_writes_model_onnx_into_its_run_directory(tmp_path):
    from .cli_helpers import cifarnet, train_tiny

    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1")
    done = cifarnet(tmp_path, "mode=export", "ckpt=outputs/run", "hydra.run.dir=outputs/export")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "input 'images' (batch, 3, 32, 32) NCHW" in done.stdout
    proto = onnx.load(str(tmp_path / "outputs" / "export" / "model.onnx"))
    onnx.checker.check_model(proto)
    again = cifarnet(tmp_path, "mode=export", "ckpt=outputs/run", "hydra.run.dir=outputs/export")
    assert again.returncode == 1 and "already holds an earlier run's model.onnx" in again.stdout + again.stderr


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_each_shipped_checkpoint_exports_and_onnxruntime_agrees(tmp_path, rng, name):
    found = ckpt.resolve(f"pretrained:{name}")
    proto = onnx.load(str(export_checkpoint(found, tmp_path / "model.onnx")))
    onnx.checker.check_model(proto, full_check=True)
    x = rng.standard_normal((7, *found.meta["input_shape"])).astype(np.float32)
    assert_same_logits(run_onnx(proto, x), infer(restore_model(found, NUMPY), x))

"""Model building from plain data, parameter counts, summary, seeding, state dicts."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import KINDS, BasicBlock
from cifarnet.models import MODELS, ModelSpecError, build_model, model_description, summary


def test_simplecnn_parameter_count_and_shapes():
    model = build_model(model_description("simplecnn"))
    # conv 3*3*3*8+8, bn 2*8, linear 1800*128+128, bn 2*128, linear 128*10+10
    assert model.num_parameters() == 224 + 16 + 230_528 + 256 + 1_290 == 232_314
    assert model["linear1"].in_features == 1800          # inferred, never written by hand
    assert model.output_shape((32, 32, 3)) == (10,)


def test_resnet32_parameter_count_and_layout():
    model = build_model(model_description("resnet32"))
    assert model.num_parameters() == 466_906
    blocks = [layer for layer in model.children.values() if isinstance(layer, BasicBlock)]
    assert len(blocks) == 15
    assert [b.stride for b in blocks].count(2) == 2 and sum(b.shortcut == "projection" for b in blocks) == 2
    assert model.output_shape((32, 32, 3)) == (10,)


@pytest.mark.parametrize("depth, count", [(20, 272_474), (44, 661_338), (56, 855_770), (110, 1_730_714)])
def test_resnet_family(depth, count):
    model = build_model(model_description(f"resnet{depth}"))
    assert model.num_parameters() == count
    assert sum(isinstance(layer, BasicBlock) for layer in model.children.values()) == 3 * (depth - 2) // 6


def test_summary_prints_shapes_and_totals():
    text = summary(build_model(model_description("simplecnn")), (32, 32, 3))
    assert "(N, 15, 15, 8)" in text and "(N, 1800)" in text and "230,528" in text
    assert "trainable parameters: 232,314" in text
    text = summary(build_model(model_description("resnet32")), (32, 32, 3))
    assert "(N, 8, 8, 64)" in text and "trainable parameters: 466,906" in text


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (build_model(model_description("resnet20"), seed=s).state_dict() for s in (3, 3, 4))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if k.endswith(".W"))


def test_new_network_from_plain_data_alone():
    desc = {"layers": [
        {"type": "conv", "out_channels": 6, "kernel_size": 5, "stride": 1, "padding": 2, "name": "c1"},
        {"type": "relu"}, {"type": "maxpool", "kernel_size": 2},
        {"type": "conv", "out_channels": 12, "kernel_size": 3},
        {"type": "batchnorm"}, {"type": "relu"}, {"type": "global_avg_pool"},
        {"type": "linear", "out_features": 7}]}
    model = build_model(desc, input_shape=(16, 12, 3))
    assert list(model.children)[:3] == ["c1", "relu1", "maxpool1"]
    assert model["linear1"].in_features == 12
    assert model.forward_eval(np.zeros((2, 16, 12, 3), np.float32)).shape == (2, 7)


def test_bad_descriptions_fail_clearly():
    with pytest.raises(ModelSpecError, match="unknown layer type 'convv'; known: .*conv"):
        build_model({"layers": [{"type": "convv", "out_channels": 3}]})
    with pytest.raises(ModelSpecError, match=r"layer 0 \(conv1, type conv\).*kernal_size"):
        build_model({"layers": [{"type": "conv", "out_channels": 3, "kernal_size": 3}]})
    with pytest.raises(ModelSpecError, match="flatten or global_avg_pool"):
        build_model({"layers": [{"type": "linear", "out_features": 3}]})
    with pytest.raises(ModelSpecError, match="6n\\+2"):
        build_model({"arch": "resnet", "depth": 30})
    with pytest.raises(ModelSpecError, match="does not fit"):
        build_model({"layers": [{"type": "conv", "out_channels": 3, "kernel_size": 5}]}, input_shape=(3, 3, 1))
    with pytest.raises(ModelSpecError, match="known: airbench, resnet, sequential"):
        build_model({"arch": "vgg"})
    with pytest.raises(KeyError, match="known: airbench94, resnet110, resnet20"):
        model_description("resnet18")


def test_registries_reject_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        KINDS.register("conv")(object)
    assert "simplecnn" in MODELS and "resnet32" in MODELS


def test_state_dict_round_trip_and_mismatch_errors(backend):
    src = build_model(model_description("simplecnn"), seed=1).to(backend)
    dst = build_model(model_description("simplecnn"), seed=2).to(backend)
    state = src.state_dict()
    assert "batchnorm1.running_mean" in state and "conv1.W" in state
    dst.load_state_dict(state)
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32))
    np.testing.assert_array_equal(to_numpy(src.forward_eval(x)), to_numpy(dst.forward_eval(x)))
    assert type(dst["conv1"].params["W"]) is type(x)            # stayed on its backend

    other = build_model(model_description("simplecnn", num_classes=5))
    with pytest.raises(ValueError, match=r"'linear2.W'.*\(128, 5\).*\(128, 10\)"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="stem_conv.W"):
        build_model(model_description("resnet20")).load_state_dict(state)


def test_one_walk_names_every_layer_and_array():
    model = build_model({"arch": "resnet", "depth": 8, "widths": [2, 2, 2]}, input_shape=(8, 8, 3))
    names = [name for name, _ in model.walk()]
    assert names[:4] == ["", "stem_conv", "stem_bn", "stem_relu"]
    assert "stage2_block1.shortcut_conv" in names and "stage2_block1.conv1" in names
    assert {f"{layer}.{key}" for layer, sub in model.walk() if layer for key in sub.params} == \
        {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("shortcut, count", [("projection", 466_906), ("zero_pad", 464_154)])
def test_resnet32_with_either_shortcut(shortcut, count):
    """The paper's option A (zero-padding identity shortcuts) has 0.46M parameters."""
    model = build_model(model_description("resnet32", shortcut=shortcut))
    assert model.num_parameters() == count
    blocks = [layer for layer in model.children.values() if isinstance(layer, BasicBlock)]
    assert [b.shortcut for b in blocks].count(shortcut) == 2


def test_description_wide_dropout_and_num_classes_reach_the_layers():
    from cifarnet.layers import Dropout

    model = build_model(model_description("simplecnn", dropout=0.2, num_classes=3))
    assert [layer.rate for layer in model.children.values() if isinstance(layer, Dropout)] == [0.2]
    assert model.output_shape((32, 32, 3)) == (3,)
    resnet = build_model({"arch": "resnet", "depth": 8, "widths": [2, 2, 2], "dropout": 0.4, "num_classes": 4})
    assert resnet["dropout"].rate == 0.4 and resnet.output_shape((32, 32, 3)) == (4,)

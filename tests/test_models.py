import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.models import build_lenet, build_model, split_encoder_head
from kerascnn.summary import format_parameter_table, layer_table, parameter_counts

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backends.py)


def test_lenet_textbook_shapes_and_names():
    model = build_lenet()
    names = [layer.name for layer in model.layers]
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "logits"]
    shapes = {n: model.get_layer(n).output.shape[1:] for n in names[1:]}
    assert shapes["conv1"] == (28, 28, 6)
    assert shapes["pool1"] == (14, 14, 6)
    assert shapes["conv2"] == (10, 10, 16)
    assert shapes["pool2"] == (5, 5, 16)
    assert shapes["fc1"] == (120,) and shapes["fc2"] == (84,) and shapes["logits"] == (10,)
    assert model.count_params() == 61706  # d2l's LeNet


@pytest.mark.parametrize("kwargs, encoder_weights", [
    ({}, 2550),
    ({"kernel": 7}, 4998),
    ({"channels": (16, 32)}, 13200),
])
def test_encoder_conv_weights_match_seed_report(kwargs, encoder_weights):
    counts = parameter_counts(build_lenet(**kwargs))
    assert counts["encoder"]["weights"] == encoder_weights
    assert counts["encoder"]["biases"] == sum(build_lenet(**kwargs).get_layer(n).filters for n in ("conv1", "conv2"))
    assert counts["total"]["total"] == build_lenet(**kwargs).count_params()


def test_parameter_table_lists_both_parts():
    table = format_parameter_table(parameter_counts(build_lenet()))
    assert "encoder" in table and "head" in table and "2,550" in table


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 1), (28, 28, 3), (32, 32, 3)])
@pytest.mark.parametrize("kernel", [5, 7, 11])
def test_lenet_inputs_and_kernels(input_shape, kernel):
    model = build_lenet("relu", "max", kernel, input_shape=input_shape, num_classes=7)
    x = np.random.default_rng(0).normal(size=(2,) + input_shape).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 7)
    assert model.get_layer("conv1").output.shape[1:3] == input_shape[:2]


def test_batchnorm_follows_each_hidden_activation():
    model = build_lenet(batchnorm=True)
    names = [layer.name for layer in model.layers]
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert names[names.index(layer) + 1] == f"{layer}_bn"
        # f(x) = BN(sigmoid(x)): the activation stays inside the layer, before BN
        assert model.get_layer(layer).activation.__name__ == "sigmoid"
    assert "logits_bn" not in names


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
def test_activations(activation):
    model = build_lenet(activation)
    assert model.get_layer("conv1").activation.__name__ == activation


def test_encoder_head_split():
    encoder, head = split_encoder_head(build_lenet())
    assert [layer.name for layer in head] == ["flatten", "fc1", "fc2", "logits"]
    assert "conv2" in [layer.name for layer in encoder]
    parts = {row[0]: row[4] for row in layer_table(build_lenet())}
    assert parts["conv1"] == "encoder" and parts["fc1"] == "head"


def test_include_top_false_is_the_encoder():
    model = build_lenet(include_top=False)
    assert model.layers[-1].name == "pool2"


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": 4}, "odd"),
    ({"kernel": 15}, "does not fit"),
    ({"pool": "median"}, "pool must be one of"),
    ({"channels": (6,)}, "two positive widths"),
    ({"input_shape": (28, 28, 2)}, "1- or 3-channel"),
    ({"num_classes": 1}, "at least 2"),
])
def test_bad_options_raise_clear_errors(kwargs, message):
    with pytest.raises(KerasCNNError, match=message):
        build_lenet(**kwargs)


def test_registry_rejects_unknown_arch_and_options():
    with pytest.raises(KerasCNNError, match="unknown architecture"):
        build_model("lenet6", input_shape=(28, 28, 1), num_classes=10)
    with pytest.raises(KerasCNNError, match="does not take width"):
        build_model("lenet", input_shape=(28, 28, 1), num_classes=10, width=2)

"""The model zoo: LeNet's textbook shapes and knobs, and every family on tiny
inputs and widths: it builds, trains a step, saves and loads, exposes every
layer by name, and splits into encoder and head."""

import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from kerascnn.models import ARCHS, build_lenet, build_model, get_arch, split_encoder_head
from kerascnn.models.summary import layer_table, parameter_counts
from kerascnn.training.plan import compile_model
from kerascnn.analysis.visualization import layer_activations, spatial_layers

# @pytest.mark.core tests also run under jax and torch (tests/test_backend.py)

ZOO = [name for name in ARCHS if name != "lenet"]
TINY = {"width": 0.125}
TINY_DENSE = {"alexnet": {"dense_units": 32}, "vgg11": {"dense_units": 32}, "vgg16": {"dense_units": 32}}


def tiny(arch, size=None, channels=1, classes=3, **extra):
    spec = get_arch(arch)
    size = size or spec.min_size
    options = {**({} if arch == "lenet" else TINY), **TINY_DENSE.get(arch, {}), **extra}
    return build_model(arch, input_shape=(size, size, channels), num_classes=classes, **options)


@pytest.mark.core
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


@pytest.mark.core
def test_lenet5_valid_conv1_on_32x32_is_the_papers():
    model = build_lenet("relu", "max", padding="valid", input_shape=(32, 32, 1))
    names = [layer.name for layer in model.layers]
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "logits"]
    shapes = {n: model.get_layer(n).output.shape[1:] for n in names[1:5]}
    assert shapes == {"conv1": (28, 28, 6), "pool1": (14, 14, 6), "conv2": (10, 10, 16), "pool2": (5, 5, 16)}
    assert model.get_layer("flatten").output.shape[1:] == (400,)
    # conv1 (5*5*1+1)*6, conv2 (5*5*6+1)*16, fc1 (400+1)*120, fc2 (120+1)*84, logits (84+1)*10
    assert [model.get_layer(n).count_params() for n in ("conv1", "conv2", "fc1", "fc2", "logits")] == \
        [156, 2416, 48120, 10164, 850]
    assert model.count_params() == 61706
    counts = parameter_counts(model)
    assert (counts["encoder"]["total"], counts["head"]["total"]) == (2572, 59134)


@pytest.mark.core
@pytest.mark.parametrize("padding, size, ok", [("same", 12, True), ("valid", 16, True), ("valid", 15, False),
                                               ("valid", 28, True)])
def test_kernel_fit_check_counts_a_valid_conv1(padding, size, ok):
    if ok:
        model = build_lenet(padding=padding, input_shape=(size, size, 1))
        assert model.get_layer("conv2").output.shape[1] >= 2
    else:
        with pytest.raises(KerasCNNError, match="kernel 5 does not fit a 15x15 input in LeNet with padding valid: "
                                                "conv2 would leave 1x1; .* at least 16x16"):
            build_lenet(padding=padding, input_shape=(size, size, 1))


@pytest.mark.core
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 1), (28, 28, 3), (32, 32, 3)])
@pytest.mark.parametrize("kernel", [5, 7, 11])
def test_lenet_inputs_and_kernels(input_shape, kernel):
    model = build_lenet("relu", "max", kernel, input_shape=input_shape, num_classes=7)
    x = np.random.default_rng(0).normal(size=(2,) + input_shape).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 7)
    assert model.get_layer("conv1").output.shape[1:3] == input_shape[:2]


@pytest.mark.core
def test_batchnorm_follows_each_hidden_activation():
    model = build_lenet(batchnorm=True)
    names = [layer.name for layer in model.layers]
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert names[names.index(layer) + 1] == f"{layer}_bn"
        # f(x) = BN(sigmoid(x)): the activation stays inside the layer, before BN
        assert model.get_layer(layer).activation.__name__ == "sigmoid"
    assert "logits_bn" not in names


@pytest.mark.core
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
def test_activations(activation):
    model = build_lenet(activation)
    assert model.get_layer("conv1").activation.__name__ == activation


@pytest.mark.core
def test_lenet_split_and_layer_table():
    encoder, head = split_encoder_head(build_lenet())
    assert [layer.name for layer in head] == ["flatten", "fc1", "fc2", "logits"]
    assert "conv2" in [layer.name for layer in encoder]
    parts = {row[0]: row[4] for row in layer_table(build_lenet())}
    assert parts["conv1"] == "encoder" and parts["fc1"] == "head"


@pytest.mark.core
def test_include_top_false_is_the_encoder():
    model = build_lenet(include_top=False)
    assert model.layers[-1].name == "pool2"


@pytest.mark.core
@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": 4}, "odd"),
    ({"kernel": 15}, "does not fit"),
    ({"pool": "median"}, "pool must be one of"),
    ({"padding": "full"}, "padding must be one of same, valid, got 'full'"),
    ({"channels": (6,)}, "two positive widths"),
    ({"input_shape": (28, 28, 2)}, "1- or 3-channel"),
    ({"num_classes": 1}, "at least 2"),
])
def test_bad_options_raise_clear_errors(kwargs, message):
    with pytest.raises(KerasCNNError, match=message):
        build_lenet(**kwargs)


@pytest.mark.core
def test_registry_rejects_unknown_arch_and_options():
    with pytest.raises(KerasCNNError, match="unknown architecture"):
        build_model("lenet6", input_shape=(28, 28, 1), num_classes=10)
    with pytest.raises(KerasCNNError, match="does not take width"):
        build_model("lenet", input_shape=(28, 28, 1), num_classes=10, width=2)


@pytest.mark.parametrize("arch, shape, classes, trainable, total", [
    ("vgg16", (224, 224, 3), 1000, 138_357_544, 138_357_544),
    ("resnet18", (224, 224, 3), 1000, 11_689_512, 11_699_112),
    ("mobilenet", (224, 224, 3), 1000, 4_231_976, 4_253_864),
    ("alexnet", (224, 224, 1), 10, 57_029_322, 57_029_322),
    ("nin", (224, 224, 1), 10, 1_992_166, 1_992_166),
])
def test_reference_parameter_counts(arch, shape, classes, trainable, total):
    textbook = {"batchnorm": False} if arch == "nin" else {}  # d2l's NiN; kerascnn's default adds batch norm
    model = build_model(arch, input_shape=shape, num_classes=classes, **textbook)
    counts = parameter_counts(model)["total"]
    assert counts["trainable"] == trainable
    assert counts["total"] == total == model.count_params()


@pytest.mark.core
@pytest.mark.parametrize("arch", ZOO)
@pytest.mark.parametrize("channels", [1, 3])
def test_builds_at_min_size_any_channels_and_classes(arch, channels):
    model = tiny(arch, channels=channels, classes=7)
    x = np.random.default_rng(0).normal(size=(2,) + model.input_shape[1:]).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 7)


@pytest.mark.parametrize("arch", ZOO)
def test_builds_at_default_size(arch):
    spec = get_arch(arch)
    model = tiny(arch, size=spec.default_size, channels=3, classes=4)
    assert model.output_shape == (None, 4)


@pytest.mark.parametrize("arch", ZOO)
def test_below_min_size_names_the_minimum(arch):
    spec = get_arch(arch)
    with pytest.raises(KerasCNNError, match=f"at least {spec.min_size}x{spec.min_size}"):
        tiny(arch, size=spec.min_size - 1)


@pytest.mark.core
@pytest.mark.parametrize("arch", ZOO)
def test_one_step_lowers_the_loss_and_save_load_is_exact(arch, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    # no dropout here, so that the loss before and after the step is measured
    # on the same network (dropout draws differ between backends' RNGs)
    no_dropout = {"dropout": 0.0} if get_arch(arch).takes("dropout") else {}
    wider = {"width": 0.5} if arch == "nin" else {}  # narrower, NiN's ReLU logits can all start at 0
    model = tiny(arch, classes=3, **no_dropout, **wider)
    compile_model(model, keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8,) + model.input_shape[1:]).astype("float32")
    y = np.arange(8) % 3
    def training_loss():  # batch statistics, as the step sees them
        logits = model(x, training=True)
        return float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))

    before = training_loss()
    for _ in range(5):
        model.train_on_batch(x, y)
    after = training_loss()
    assert after < before, (before, after)
    path = storage.save_model(model, tmp_path / f"{arch}.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), storage.load_model(path).predict(x, verbose=0))


@pytest.mark.core
@pytest.mark.parametrize("arch", ZOO)
def test_every_spatial_layer_resolves(arch):
    model = tiny(arch)
    names = spatial_layers(model)
    assert len(names) == len(set(names)) > 3
    x = np.zeros((1,) + model.input_shape[1:], "float32")
    outputs = layer_activations(model, names, x)
    assert all(o.ndim == 4 for o in outputs)


@pytest.mark.parametrize("arch, first_head", [
    ("lenet", "flatten"), ("alexnet", "flatten"), ("vgg11", "flatten"), ("vgg16", "flatten"),
    ("nin", "classifier_dropout"), ("googlenet", "avg_pool"), ("resnet18", "avg_pool"), ("mobilenet", "global_pool"),
])
def test_encoder_head_split(arch, first_head):
    from kerascnn.models import split_encoder_head

    model = tiny(arch)
    encoder, head = split_encoder_head(model)
    assert head[0].name == first_head and encoder
    counts = parameter_counts(model)
    assert counts["encoder"]["total"] + counts["head"]["total"] == model.count_params()


@pytest.mark.parametrize("arch", ARCHS)
def test_head_starts_where_the_encoder_ends_also_after_loading(arch, tmp_path):
    from kerascnn.models import head_start, split_encoder_head

    model = tiny(arch)
    encoder = tiny(arch, include_top=False)
    start = head_start(model)
    assert [layer.name for layer in model.layers[:start]] == [layer.name for layer in encoder.layers]
    assert head_start(encoder) == len(encoder.layers)
    # the split is found by layer names, the only part of it a .keras file keeps
    loaded = storage.load_model(storage.save_model(model, tmp_path / f"{arch}.keras"))
    assert head_start(loaded) == start
    assert [[layer.name for layer in part] for part in split_encoder_head(loaded)] == \
        [[layer.name for layer in part] for part in split_encoder_head(model)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batchnorm", [False, True])
def test_batchnorm_settings(arch, batchnorm):
    import keras

    bns = [layer for layer in tiny(arch, batchnorm=batchnorm).layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bool(bns) == batchnorm
    epsilon = 1e-5 if arch == "resnet18" else 1e-3  # ResNet: torchvision's
    assert all(bn.momentum == 0.9 and bn.epsilon == epsilon for bn in bns)


def test_hierarchical_names():
    names = {layer.name for layer in tiny("resnet18").layers}
    assert {"conv2_block1_1_conv", "conv3_block1_0_conv", "conv5_block2_out"} <= names
    names = {layer.name for layer in tiny("mobilenet").layers}
    assert {"conv_dw_3", "conv_pw_13_relu6", "conv_dw_1_bn"} <= names
    names = {layer.name for layer in tiny("googlenet").layers}
    assert {"inception3a_1x1", "inception4e_5x5", "inception5b_concat"} <= names
    names = {layer.name for layer in tiny("vgg16").layers}
    assert {"block1_conv1", "block5_conv3", "block5_pool"} <= names


@pytest.mark.core
@pytest.mark.parametrize("arch", ["mobilenet", "lenet"])
def test_l2_on_every_conv_and_dense_kernel_including_depthwise(arch, tmp_path):
    """--l2 (docs/training.md): a penalty l2 * sum(w**2) on every conv and dense kernel, MobileNet's 13
    depthwise convolutions included; saved with the model."""
    import keras

    from kerascnn.models.common import apply_l2

    model = apply_l2(tiny(arch), 0.01)
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    kernels = [layer for layer in model.layers if isinstance(layer, kinds)]
    depthwise = [layer for layer in kernels if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == (13 if arch == "mobilenet" else 0)
    assert len(model.losses) == len(kernels)
    for layer in kernels:
        (loss,) = layer.losses
        w = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
        assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(0.01 * np.sum(w ** 2), rel=1e-5), layer.name
    loaded = storage.load_model(storage.save_model(model, tmp_path / "m.keras"))
    assert len(loaded.losses) == len(kernels)
    if depthwise:
        assert loaded.get_layer(depthwise[0].name).depthwise_regularizer.get_config() == {"l2": pytest.approx(0.01)}


def test_width_scales_channels():
    assert tiny("vgg11", width=0.25).get_layer("block1_conv1").filters == 16
    assert tiny("mobilenet", width=0.5).get_layer("conv_pw_13").filters == 512


def test_fit_feeds_gray_data_to_any_size(tmp_path):
    from kerascnn.training.fit import fit

    result = fit("resnet18", "digits", epochs=1, train_size=64, width=0.125, image_size=40, output=tmp_path,
                 verbose=0)
    assert result.config["input_shape"] == [40, 40, 1]
    assert result.model.input_shape == (None, 40, 40, 1)


@pytest.mark.core
@pytest.mark.parametrize("arch", ARCHS)
def test_init_he_is_torchvisions_fan_out_normal(arch):
    """--init he: conv kernels ~ N(0, 2 / fan_out), as torchvision's kaiming_normal_(mode="fan_out");
    glorot: Keras' uniform within sqrt(6 / (fan_in + fan_out))."""
    import keras

    keras.utils.set_random_seed(0)
    he, glorot = tiny(arch, init="he"), tiny(arch, init="glorot")
    checked = 0
    for layer in he.layers:
        if type(layer).__name__ != "Conv2D" or np.prod(layer.kernel.shape) < 2000:
            continue
        kh, kw, c_in, c_out = layer.kernel.shape
        w = keras.ops.convert_to_numpy(layer.kernel)
        assert abs(w.std() / np.sqrt(2 / (kh * kw * c_out)) - 1) < 0.1, layer.name
        g = keras.ops.convert_to_numpy(glorot.get_layer(layer.name).kernel)
        assert np.abs(g).max() <= np.sqrt(6 / (kh * kw * (c_in + c_out))) + 1e-6
        checked += 1
    assert checked

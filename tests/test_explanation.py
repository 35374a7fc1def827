"""kerascnn.analysis.explanation and `kerascnn explain`: Grad-CAM, Grad-CAM++,
saliency and SmoothGrad maps, the layer a CAM weighs, the files written, the
command's errors, and the same maps under TensorFlow, JAX and torch."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.cli.commands import cli
from kerascnn.config.spelling import OptionError
from kerascnn.errors import KerasCNNError
from kerascnn.analysis.explanation import (METHODS, cam_layer, default_cam_layer, explain, explanation_maps,
                                  gradient_function, probed_model, upsample)
from kerascnn.models import build_lenet, build_model

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)

PNG = b"\x89PNG\r\n\x1a\n"


def tiny(arch, **options):
    """A small model of `arch` at its smallest size (LeNet at 28)."""
    import keras

    keras.utils.set_random_seed(0)
    if arch == "lenet":
        return build_lenet(activation="relu", pool="max")
    width = {"googlenet": 0.125, "resnet18": 0.125, "mobilenet": 0.25}[arch]
    return build_model(arch, input_shape=(32, 32, 1), num_classes=3, width=width, **options)


def images(model, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype("float32")


@pytest.mark.parametrize("arch", ["lenet", "resnet18", "mobilenet"])
def test_every_method_gives_finite_maps_of_the_input_size(arch):
    model = tiny(arch)
    x = images(model)
    for method in METHODS:
        maps, layer = explanation_maps(model, x, [0, 1], method, samples=3)
        assert maps.shape == (2, *x.shape[1:3]), method
        assert np.isfinite(maps).all() and (maps >= 0).all(), method
        assert (layer is None) == (method in ("saliency", "smoothgrad")), method
    assert maps.max() > 0  # SmoothGrad of a random network: some pixel matters


def two_patch_model():
    """16x16 images of two channels -> 2x2 average pool -> `conv` (1x1,
    identity) -> global average -> `logits` (identity): class c's logit is
    the mean of channel c, so its evidence is wherever channel c is bright."""
    import keras

    inputs = keras.Input((16, 16, 2), name="input")
    x = keras.layers.AveragePooling2D(2, name="pool")(inputs)
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="logits")(x))
    model.get_layer("conv").set_weights([np.eye(2, dtype="float32").reshape(1, 1, 2, 2)])
    model.get_layer("logits").set_weights([np.eye(2, dtype="float32")])
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_a_cam_peaks_where_the_class_evidence_is(method):
    """Channel 0 (class 0) is bright in the top-left quadrant, channel 1
    (class 1) in the bottom-right: each class's map lies in its own quadrant,
    though the layer's activations are bright in both."""
    model = two_patch_model()
    x = np.zeros((1, 16, 16, 2), "float32")
    x[0, 2:6, 2:6, 0] = 1.0
    x[0, 10:14, 10:14, 1] = 0.8
    for cls, (rows, cols) in ((0, (slice(0, 8), slice(0, 8))), (1, (slice(8, 16), slice(8, 16)))):
        (cam,), layer = explanation_maps(model, x, [cls], method)
        assert layer == "conv" and cam.shape == (16, 16)
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop, (cls, peak)
        assert cam[rows, cols].sum() > 0.95 * cam.sum(), cls


@pytest.mark.parametrize("arch, layer", [("resnet18", "conv3_block1_1_conv"), ("googlenet", "inception3a_3x3")])
def test_the_probe_gradient_is_the_activation_gradient(arch, layer):
    """Inside a residual and an inception block: along the probe's gradient
    the score changes at the rate of the gradient's squared norm. (A smooth
    activation: ReLU's zeros tie in max pooling, where a difference is no
    derivative.)"""
    import keras

    model = tiny(arch, activation="tanh")
    gradients_of = gradient_function(probed_model(model, layer))
    x, classes = images(model, 2, seed=1), np.array([0, 2])
    zeros = np.zeros((2, *model.get_layer(layer).output.shape[1:]), "float32")
    (logits, activations), (_, grad) = gradients_of([x, zeros], classes)
    plain = keras.Model(model.input, [model.output, model.get_layer(layer).output]).predict(x, verbose=0)
    np.testing.assert_allclose(logits, plain[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(activations, plain[1], atol=1e-5)  # the probe adds zero
    norm = np.linalg.norm(grad)
    step = 1e-3 / norm  # a central difference: the score's curvature cancels
    (up, _), _ = gradients_of([x, zeros + step * grad], classes)
    (down, _), _ = gradients_of([x, zeros - step * grad], classes)
    gain = (up[[0, 1], classes] - down[[0, 1], classes]).sum() / (2 * step)
    assert gain == pytest.approx(norm ** 2, rel=2e-3)


def test_the_default_layer_is_the_last_convolution_of_at_least_4x4():
    assert default_cam_layer(tiny("lenet")) == "conv2"  # 10x10
    resnet, mobilenet = tiny("resnet18"), tiny("mobilenet")
    assert default_cam_layer(resnet) == "conv3_block2_2_conv"  # 4x4; conv4 is 2x2, conv5 1x1
    assert default_cam_layer(mobilenet) == "conv_pw_5"  # 4x4; conv_dw_6 is 2x2
    assert tuple(resnet.get_layer("conv5_block2_2_conv").output.shape[1:3]) == (1, 1)
    assert cam_layer(resnet, "conv1_conv") == "conv1_conv"  # any convolution on request
    assert cam_layer(mobilenet, "conv_dw_13") == "conv_dw_13"


def test_a_layer_that_is_no_convolution_lists_the_candidates():
    model = tiny("lenet")
    x = images(model, 1)
    with pytest.raises(KerasCNNError, match=r"layer 'pool1' is not a convolution of lenet; Grad-CAM takes one "
                                            r"of: conv1, conv2$"):
        explanation_maps(model, x, [0], "gradcam", layer="pool1")
    with pytest.raises(KerasCNNError, match=r"layer 'conv9' is no layer of lenet; .*: conv1, conv2$"):
        explanation_maps(model, x, [0], "gradcam++", layer="conv9")
    with pytest.raises(OptionError, match="layer is for gradcam and gradcam"):
        explanation_maps(model, x, [0], "saliency", layer="conv1")
    with pytest.raises(OptionError, match="unknown method 'cam'"):
        explanation_maps(model, x, [0], "cam")


def test_upsampling_keeps_a_constant_and_centres_pixels():
    maps = np.arange(4.0).reshape(1, 2, 2)
    up = upsample(maps, (4, 4))
    np.testing.assert_allclose(up[0, 0], [0.0, 0.25, 0.75, 1.0])  # as tf.image.resize, half-pixel centres
    np.testing.assert_allclose(upsample(np.full((1, 3, 3), 2.0), (7, 5)), 2.0)


def test_smoothgrad_is_seeded():
    model = tiny("lenet")
    x = images(model)
    a, _ = explanation_maps(model, x, [1, 2], "smoothgrad", samples=4, seed=3)
    b, _ = explanation_maps(model, x, [1, 2], "smoothgrad", samples=4, seed=3)
    c, _ = explanation_maps(model, x, [1, 2], "smoothgrad", samples=4, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_explain_a_saved_run_writes_the_figure_and_the_maps(trained_run, tmp_path):
    r = explain(trained_run.model_path, output=tmp_path)
    assert r.layer == "conv2" and r.indices == list(range(8))
    assert r.paths == [tmp_path / "lenet.gradcam.png", tmp_path / "lenet.gradcam.npz"]
    assert r.figure.read_bytes()[:8] == PNG
    assert r.maps.shape == r.normalized.shape == (8, 28, 28)
    assert r.normalized.min() == 0 and r.normalized.max() == 1
    np.testing.assert_array_equal(r.explained, r.predicted)
    np.testing.assert_allclose(r.probabilities.sum(axis=1), 1.0, atol=1e-6)
    with np.load(r.arrays) as saved:
        np.testing.assert_array_equal(saved["maps"], r.maps)
        assert str(saved["layer"]) == "conv2" and list(saved["indices"]) == r.indices
        np.testing.assert_array_equal(saved["true"], r.true)


def test_explain_misclassified_images_and_a_named_class(trained_run, tmp_path):
    r = explain(trained_run.model_path, "saliency", misclassified=3, output=tmp_path)
    assert 1 <= len(r.indices) <= 3 and (r.predicted != r.true).all()
    r = explain(trained_run.model_path, "gradcam++", indices=[5, 0], class_index="7", output=tmp_path / "seven.png")
    assert r.indices == [5, 0] and list(r.explained) == [7, 7]
    assert r.paths == [tmp_path / "seven.png", tmp_path / "seven.npz"] and r.figure.exists()


@pytest.mark.parametrize("options, error, message", [
    ({"indices": [360]}, KerasCNNError, "indices must be between 0 and 359, got 360"),
    ({"class_index": "eleven"}, KerasCNNError, "class_index eleven: no such class; give an index from 0 to 9 or one of"),
    ({"class_index": 10}, KerasCNNError, "class_index 10: no such class"),
    ({"indices": [0], "misclassified": 2}, OptionError, "give indices or misclassified, not both"),
    ({"layer": "fc1"}, KerasCNNError, "layer 'fc1' is not a convolution of lenet"),
    ({"output": "missing/x.png"}, KerasCNNError, "the folder missing does not exist"),
])
def test_bad_requests_are_one_error_and_write_nothing(trained_run, tmp_path, monkeypatch, options, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        explain(trained_run.model_path, **{"output": tmp_path / "out", **options})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_command_writes_the_png(trained_run, tmp_path):
    out = tmp_path / "maps.png"
    result = CliRunner().invoke(cli, ["explain", str(trained_run.model_path), "--method", "smoothgrad",
                                      "--index", "3", "--index", "4", "--class", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG and (tmp_path / "maps.npz").exists()
    lines = result.stdout.splitlines()
    assert lines[0] == f"model: {trained_run.model_path}  method: smoothgrad"
    assert lines[1].startswith("  test #3: predicted ") and lines[2].startswith("  test #4: ")
    assert lines[-2:] == [f"wrote {out}", f"wrote {tmp_path / 'maps.npz'}"]


@pytest.mark.parametrize("args, code, message", [
    (["--layer", "pool2"], 1, "error: --layer 'pool2' is not a convolution of lenet; Grad-CAM takes one of: conv1"),
    (["--class", "cat"], 1, "error: --class cat: no such class; give an index from 0 to 9"),
    (["--index", "5000"], 1, "error: --index must be between 0 and 359, got 5000"),
    (["--index", "-1"], 2, "expects test-image numbers from 0"),
    (["--method", "cam"], 2, "'cam' is not one of 'gradcam', 'gradcam++', 'saliency', 'smoothgrad'"),
    (["--method", "saliency", "--layer", "conv1"], 2, "error: --layer is for gradcam and gradcam++"),
])
def test_the_command_answers_bad_input_with_one_line(trained_run, tmp_path, args, code, message):
    result = CliRunner().invoke(cli, ["explain", str(trained_run.model_path), "--output", str(tmp_path), *args])
    assert result.exit_code == code
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


COMPARE = """
import sys
from kerascnn.analysis.explanation import METHODS, explain

for method in METHODS:
    explain(sys.argv[1], method, indices=[0, 1, 2, 3, 4, 5], output=sys.argv[2])
"""


def test_the_same_maps_under_every_backend(trained_run, tmp_path):
    """The model saved once, explained in a process per backend (what
    `kerascnn --backend B explain` runs): the same classes and maps."""
    from tests.test_backend import BACKENDS, installed, run_under

    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("spawns every backend itself: run once, from the TensorFlow run")
    available = [b for b in BACKENDS if installed(b)]
    if len(available) < 2:
        pytest.skip("only one Keras backend is installed (pip install -e .[jax,torch])")
    for backend in available:
        proc = run_under(backend, ["-c", COMPARE, str(trained_run.model_path), str(tmp_path / backend)])
        assert proc.returncode == 0, f"explain under {backend}: {proc.stderr[-3000:]}"
    worst = {}
    for method in METHODS:
        runs = {b: np.load(tmp_path / b / f"lenet.{method}.npz") for b in available}
        reference = runs["tensorflow"]
        for backend, arrays in runs.items():
            np.testing.assert_array_equal(arrays["predicted"], reference["predicted"])
            np.testing.assert_allclose(arrays["probabilities"], reference["probabilities"], atol=1e-5)
            difference = np.abs(arrays["normalized"] - reference["normalized"]).max()
            scale = np.abs(reference["maps"]).max()
            raw = np.abs(arrays["maps"] - reference["maps"]).max() / scale
            assert difference < 1e-3 and raw < 1e-3, (method, backend, difference, raw)
            worst[method] = [max(a, float(b)) for a, b in zip(worst.get(method, (0.0, 0.0)), (difference, raw))]
    print("largest cross-backend difference per method, [normalized maps, raw maps / their largest value]:",
          json.dumps(worst))

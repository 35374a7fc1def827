"""kerascnn.training.plan: the settings a run resolves before it trains (image size, jit, steps per call) and
how a model is compiled."""

import pytest

from kerascnn.config.options import FitConfig

from kerascnn.config.spelling import OptionError
from kerascnn.runtime.distribution import accelerator_available
from kerascnn.errors import KerasCNNError
from kerascnn.models import get_arch
from kerascnn.training.plan import resolve_image_size
from tests.test_backend import needs, run_under

# What kerascnn does without a GPU or TPU; with one visible it does otherwise, on purpose.
cpu_only = pytest.mark.skipif(accelerator_available(), reason="checks the behaviour without a GPU or TPU; one is "
                                                               "visible here")


TORCH_COMPILE = """
import keras, torch._dynamo
from kerascnn.training.plan import compile_model
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
before = torch._dynamo.config.automatic_dynamic_shapes
compile_model(model, "adam", jit_compile=True)
print(before, torch._dynamo.config.automatic_dynamic_shapes)
"""


@needs("torch")
def test_jit_under_torch_compiles_one_graph_per_batch_shape():
    """A symbolic batch size makes Inductor fail on ResNet-18 (`benchmarks/performance.py --only backends`
    trains it with --jit on under torch); fit turns torch.compile's automatic dynamic shapes off."""
    proc = run_under("torch", ["-c", TORCH_COMPILE], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["True", "False"]


@cpu_only
def test_jit_auto_is_off_on_a_cpu():
    from kerascnn.training.plan import resolve_jit

    assert resolve_jit("auto") is False  # TensorFlow on a CPU: see benchmarks/jit.py


def test_steps_per_execution_rules():
    from kerascnn.training.plan import has_batch_hooks, resolve_steps_per_execution

    for backend in ("tensorflow", "jax"):
        auto = [resolve_steps_per_execution(None, steps, backend) for steps in (240, 235, 211, 5, 1)]
        assert auto == [16, 5, 1, 5, 1]  # the largest divisor up to 16 (211 is prime)
    assert resolve_steps_per_execution(None, 240, "tensorflow", batch_hooks=True) == 1
    assert resolve_steps_per_execution(None, 240, "tensorflow", distribute="mirrored") == 1
    assert resolve_steps_per_execution(None, 240, "jax", distribute="data-parallel") == 1
    assert resolve_steps_per_execution(None, 240, "torch") == 1
    assert resolve_steps_per_execution(40, 240, "tensorflow") == resolve_steps_per_execution(40, 240, "jax") == 40
    with pytest.raises(OptionError, match="7 does not divide the 211 steps .* choose 1, or another batch_size"):
        resolve_steps_per_execution(7, 211, "tensorflow")
    for backend, distribute in (("torch", None), ("jax", "data-parallel"), ("tensorflow", "mirrored")):
        with pytest.raises(OptionError, match="steps_per_execution must be 1"):
            resolve_steps_per_execution(2, 240, backend, distribute)
    # a row every N steps (--log-every): the calls end on its steps, so they divide N too
    auto = [resolve_steps_per_execution(None, 216, "tensorflow", log_every=n) for n in (0, 100, 1, 36)]
    assert auto == [12, 4, 1, 12]
    assert resolve_steps_per_execution(None, 216, "jax", log_every=100) == 4
    assert resolve_steps_per_execution(6, 216, "tensorflow", log_every=36) == 6
    with pytest.raises(OptionError, match="steps_per_execution 8 does not divide log_every 100: Keras reports once a "
                                          "call, so a row every 100 steps needs calls of one of 1, 2, 4 steps"):
        resolve_steps_per_execution(8, 216, "tensorflow", log_every=100)

    import keras

    class PerBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert has_batch_hooks([keras.callbacks.Callback(), PerBatch()])
    assert not has_batch_hooks([keras.callbacks.Callback(), keras.callbacks.History()])


def test_image_size_defaults(monkeypatch):
    import kerascnn.training.plan as preparation

    said = []
    monkeypatch.setattr(preparation, "accelerator_available", lambda: False)
    assert resolve_image_size(get_arch("vgg16"), None, 28, echo=said.append) == 32
    assert "no GPU" in said[0] and "224" in said[0]
    assert resolve_image_size(get_arch("lenet"), None, 28) == 28
    assert resolve_image_size(get_arch("lenet"), None, 32) == 32
    monkeypatch.setattr(preparation, "accelerator_available", lambda: True)
    assert resolve_image_size(get_arch("resnet18"), None, 28) == 96
    assert resolve_image_size(get_arch("alexnet"), 100, 28) == 100
    with pytest.raises(KerasCNNError, match="at least 67x67"):  # checked once, where the options are read
        FitConfig(arch="nin", image_size=64)


@pytest.mark.core
@pytest.mark.parametrize("mode, channels", [("auto", 1), ("rgb", 3), ("grayscale", 1)])
def test_color_mode_sets_the_channels_the_network_takes(mode, channels):
    import numpy as np

    from kerascnn.training.plan import make_plan

    plan = make_plan("lenet", "digits", {"train_size": 64, "val_size": 0, "batch_size": 16, "epochs": 1,
                                         "color_mode": mode})
    assert plan.data.image_shape[2] == 1 and plan.input_shape[2] == channels
    images, _ = plan.loader("train").first_batch()
    assert images.shape[-1] == channels
    if channels == 3:  # gray brought to RGB: three equal channels
        np.testing.assert_allclose(images[..., 0] * plan.data.stats()[1][0], images[..., 2] * plan.data.stats()[1][0],
                                   atol=1e-5)
    with pytest.raises(OptionError, match="unknown color mode .cmyk.; choose one of: auto, grayscale, rgb"):
        make_plan("lenet", "digits", {"color_mode": "cmyk"})


@pytest.mark.core
def test_normalize_half_puts_the_pixels_in_minus_one_to_one(tmp_path):
    from kerascnn.analysis.evaluation import evaluate
    from kerascnn.training.fit import fit
    from kerascnn.training.plan import make_plan

    plan = make_plan("lenet", "digits", {"train_size": 64, "val_size": 0, "batch_size": 64, "epochs": 1,
                                         "normalize": "half"})
    images, _ = plan.loader("train").first_batch()
    assert plan.data.stats() == ([0.5], [0.5]) and images.min() == pytest.approx(-1) and images.max() <= 1
    result = fit("lenet", "digits", train_size=128, batch_size=32, epochs=1, normalize="half",
                 output=str(tmp_path), verbose=0)
    assert result.record["mean"] == [0.5] and result.record["std"] == [0.5]
    assert evaluate(result.run).accuracy == pytest.approx(result.test_accuracy)
    assert make_plan("lenet", "digits", {"train_size": 64}).data.stats()[0][0] < 0.2  # the default: its own mean

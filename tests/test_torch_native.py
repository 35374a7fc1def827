"""kerascnn.training.torch_native: the torch training step without Keras' per-layer
Python trains as Keras' own torch step does (every optimizer, soft labels),
copies nothing from the host inside the step, falls back saying so, and
saves what it trained. Runs under torch (tests/test_backend.py runs the
core tests there)."""

import itertools

import numpy as np
import pytest

import keras

from kerascnn.data import host, torch_feed
from kerascnn.training import trainer

from kerascnn.training import torch_native
from kerascnn.models import build_model
from kerascnn.training.plan import compile_model
from kerascnn.data.device_transforms import InputTransform
from kerascnn.config.tricks import Tricks
from tests.test_torch_graph import assert_close, batch, training_model

pytestmark = [pytest.mark.core,
              pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's step")]

def train_three_steps(native, optimizer, monkeypatch, schedule=False, tricks=Tricks(), **options):
    """LeNet's weights and logs after four training steps and a test step, natively or through Keras."""
    from kerascnn.optim.schedules import OneCycle

    monkeypatch.setenv(torch_native.ENV, "1" if native else "0")
    rate = OneCycle(0.01, 8) if schedule else None
    model = training_model("lenet", 28, 1, {"activation": "relu", "batchnorm": True}, optimizer=optimizer,
                           tricks=tricks, lr=rate, **options)
    model.net.get_layer("conv1").kernel.regularizer = keras.regularizers.L2(1e-3)  # what --l2 sets
    soft = tricks.soft_labels
    logs = [model.train_on_batch(*batch(28, 1, n=8, seed=s, soft=soft), return_dict=True) for s in range(4)]
    logs.append(model.test_on_batch(*batch(28, 1, n=8, seed=9, soft=soft), return_dict=True))
    assert isinstance(getattr(model, "_native", (None, None))[1], torch_native.NativeStep) == native
    return [v.value.detach().clone() for v in model.variables], logs, int(model.optimizer.iterations.numpy())


@pytest.mark.parametrize("optimizer, options", [
    ("sgd", {}), ("momentum", {}), ("nesterov", {"weight_decay": 0.01}), ("adagrad", {}), ("rmsprop", {}),
    ("adam", {}), ("adamw", {}), ("adamw", {"schedule": True})])
def test_training_steps_match_keras_for_every_optimizer(optimizer, options, monkeypatch):
    ours = train_three_steps(True, optimizer, monkeypatch, **options)
    theirs = train_three_steps(False, optimizer, monkeypatch, **options)
    assert ours[2] == theirs[2] == 4
    for a, b in zip(ours[0], theirs[0]):
        assert_close(a, b, 1e-5, "weights")
    assert [sorted(log) for log in ours[1]] == [sorted(log) for log in theirs[1]]
    for a, b in zip(ours[1], theirs[1]):
        for name in a:
            assert_close(np.float32(a[name]), np.float32(b[name]), 1e-5, name)


def test_soft_labels_and_label_smoothing_match_keras(monkeypatch):
    tricks = Tricks(label_smoothing=0.1)
    ours, theirs = (train_three_steps(native, "adamw", monkeypatch, tricks=tricks) for native in (True, False))
    for a, b in zip(ours[0], theirs[0]):
        assert_close(a, b, 1e-5, "weights")
    for a, b in zip(ours[1], theirs[1]):
        assert sorted(a) == sorted(b) and all(abs(a[k] - b[k]) <= 1e-5 for k in a)


class HostTraffic:
    """A CPU stand-in for torch's CUDA sync debug mode: counts, as torch
    functions are called, what on a GPU would copy from the host to the
    device (a tensor made from Python or NumPy data on the compute device)
    or wait for the device (a tensor's value read on the host). Work that
    Keras' device scope sends to "cpu" explicitly is host work, not counted."""

    MAKERS = ("tensor", "as_tensor", "from_numpy", "asarray", "scalar_tensor")
    READS = ("item", "tolist", "numpy", "__array__", "cpu", "__bool__", "__float__", "__int__", "__index__")

    def __enter__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        from keras.src.backend.common.global_state import get_global_attribute

        counts = self.counts = []

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if get_global_attribute("torch_device") != "cpu" and (
                        name in HostTraffic.MAKERS and func in [getattr(torch, n, None) for n in HostTraffic.MAKERS]
                        or name in HostTraffic.READS and func is getattr(torch.Tensor, name, None)):
                    counts.append(name)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("native", [True, False])
def test_no_host_to_device_copy_or_wait_inside_the_native_step(native, monkeypatch):
    """Augmentation, mixup, a per-step schedule, batch norm, the metrics:
    the native step neither sends constants from the host nor reads a value
    back; Keras' own step does both (the count can fail)."""
    import torch

    from kerascnn.optim.schedules import OneCycle
    from kerascnn.data.device_transforms import draw_params, param_columns
    from kerascnn.data.tricks import mix_rows

    monkeypatch.setenv(torch_native.ENV, "1" if native else "0")
    tricks, augment = Tricks(mixup=0.2, label_smoothing=0.1), ("crop", "flip")
    keras.utils.set_random_seed(0)
    net = build_model("lenet", input_shape=(28, 28, 1), num_classes=10, activation="relu", batchnorm=True)
    model = trainer.TrainingModel(net, InputTransform((28, 28, 1), [0.5], [0.25], augment=augment, tricks=tricks))
    from kerascnn.optim.optimizers import make_optimizer

    compile_model(model, make_optimizer("adamw", OneCycle(0.01, 20)), jit_compile=False, tricks=tricks)
    rng = np.random.default_rng(0)

    def data(step):
        images = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
        rows, labels = mix_rows(tricks, rng.integers(0, 10, 8), 10, 28, 0, 0, step)
        params = np.concatenate([draw_params(augment, 8, 28, 0, 0, step), rows], axis=1)
        assert params.shape[1] == len(param_columns(augment)) + len(tricks.columns())
        return (torch.from_numpy(images), torch.from_numpy(params)), torch.from_numpy(labels)

    model.train_on_batch(*data(0))  # the native step's first builds the metrics, reads the step count once
    batches = [data(step) for step in range(1, 4)]
    model.make_train_function()
    with HostTraffic() as traffic:
        for b in batches:
            model.train_function([b])
    assert isinstance(getattr(model, "_native", (None, None))[1], torch_native.NativeStep) == native
    if native:
        assert traffic.counts == []
    else:
        assert len(traffic.counts) >= 3


def test_a_layer_outside_the_set_trains_through_keras_saying_so_once(capfd):
    keras.utils.set_random_seed(0)
    x = keras.Input((28, 28, 1))
    y = keras.layers.Conv2D(4, 3, name="conv1")(x)
    y = keras.layers.LayerNormalization(name="norm")(y)
    y = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(y))
    net = keras.Model(x, y, name="custom")
    model = trainer.TrainingModel(net, InputTransform((28, 28, 1), [0.5], [0.25]))
    compile_model(model, keras.optimizers.Adam(), jit_compile=False)
    torch_native._said.clear()
    losses = [model.train_on_batch(*batch(28, 1, n=8, seed=s)) for s in range(3)]
    assert model._native[1] is None and np.all(np.isfinite(losses))
    err = capfd.readouterr().err
    assert err.count("layer norm (LayerNormalization)") == 1 and "Keras' own torch step" in err, err


def test_a_natively_trained_fit_saves_what_it_trained(tmp_path, capfd):
    """kerascnn fit under torch trains natively; the .keras file holds the
    weights it trained: loaded under torch, tensorflow and jax, it predicts
    what the model in memory does."""
    import json
    import os
    import subprocess
    import sys

    from kerascnn.runs import storage

    from kerascnn.training import fit

    result = fit.fit(arch="lenet", dataset="digits", epochs=2, batch_size=32, activation="relu", batchnorm=True,
                       output=str(tmp_path), verbose=0)
    assert result.test_accuracy > 0.5
    assert "Keras' own torch step" not in capfd.readouterr().err  # nothing fell back
    x = np.random.default_rng(0).normal(size=(4, *result.model.input_shape[1:])).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = keras.ops.convert_to_numpy(trainer.network(result.model)(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(storage.load_model(result.model_path)(x)), expected, atol=1e-6)
    code = ("import json, sys, numpy as np, keras\nfrom kerascnn.runs import storage\n"
            "m = storage.load_model(sys.argv[1])\n"
            "print(json.dumps(keras.ops.convert_to_numpy(m(np.load(sys.argv[2]))).tolist()))")
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                   TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-c", code, str(result.model_path), str(tmp_path / "x.npy")],
                              capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode and "No module named" in proc.stderr:
            continue  # that backend is not installed here (CI's TensorFlow-free environment)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))
        assert_close(got, expected, 1e-5, f"logits under {backend}")


def test_the_feed_hands_over_the_batches_in_order_replaying_what_a_first_look_took():
    """torch_feed.feed: the training stream as torch tensors, every batch once and in order, also when Keras
    takes a first batch to build the model and then starts again (its generator adapter replays it too)."""
    x, y = batch(8, 1, n=40)
    batches = host.TrainingBatches(x[0].numpy(), y.numpy(), batch_size=8, epochs=2, seed=3)
    expected = [b for b in batches]
    loader = torch_feed.feed(batches, device="cpu")
    first = next(iter(loader))  # Keras' symbolic build
    got = list(itertools.islice(iter(loader), len(expected)))
    assert len(got) == len(expected) == 10
    for ((images, params), labels), ((e_images, e_params), e_labels) in zip(got, expected):
        np.testing.assert_array_equal(images.numpy(), e_images)
        np.testing.assert_array_equal(params.numpy(), e_params)
        np.testing.assert_array_equal(labels.numpy(), e_labels)
    np.testing.assert_array_equal(first[0][0].numpy(), expected[0][0][0])
    with pytest.raises(RuntimeError, match="restarted"):
        iter(loader)


def test_jit_on_compiles_the_native_forward_pass_and_trains_the_same(monkeypatch):
    """--jit on: torch.compile of the native forward pass and loss (not Keras' whole step), the same weights."""
    runs = []
    for jit in (False, True):
        model = training_model("lenet", 28, 1, {"activation": "relu", "pool": "max"})
        compile_model(model, model.optimizer, jit_compile=jit)
        for s in range(3):
            model.train_on_batch(*batch(28, 1, n=8, seed=s))
        step = model._native[1]
        assert isinstance(step, torch_native.NativeStep) and (step._forward_loss != step.forward_loss) == jit
        runs.append([v.value.detach().clone() for v in model.trainable_variables])
    for a, b in zip(*runs):
        assert_close(a, b, 1e-5, "weights")

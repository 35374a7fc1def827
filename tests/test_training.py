"""Training options: schedules, L2, augmentation, sampling, early stopping,
the activation recorder, TensorBoard and distribution."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn.callbacks import SCHEDULES, schedule_function
from kerascnn.data import epoch_indices, load_dataset, make_pipeline, make_training_pipeline
from kerascnn.errors import KerasCNNError
from kerascnn.train import fit

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_trains_and_logs_its_rate(tmp_path, name):
    r = fit("lenet", epochs=3, schedule=name, decay_after=1, output=tmp_path, **SMALL)
    rates = [row["lr"] for row in r.history]
    expected = schedule_function(name, 1e-3, 3, decay_after=1)
    if name != "plateau":
        assert rates == pytest.approx([expected(e) for e in range(3)], rel=1e-6)
    assert r.config["schedule"] == name


def test_bad_schedule_and_sampling_names_are_clear_errors(tmp_path):
    with pytest.raises(KerasCNNError, match="unknown schedule 'linear'"):
        fit("lenet", epochs=1, schedule="linear", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match="unknown sampling 'random'"):
        fit("lenet", epochs=1, sampling="random", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match="unknown augmentation 'zoom'"):
        fit("lenet", epochs=1, augment="flip,zoom", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match=r"decay_rate must be in \(0, 1\]"):
        fit("lenet", epochs=1, schedule="step", decay_rate=1.5, output=tmp_path, **SMALL)


def test_step_schedule_is_the_seed_reports_rule(tmp_path):
    """x0.7 every epoch after epoch 10: epochs 1-10 at lr, 11 at 0.7 lr, 12 at 0.49 lr."""
    fn = schedule_function("step", 0.1, 12)
    assert [fn(e) for e in range(12)] == pytest.approx([0.1] * 10 + [0.07, 0.049])
    r = fit("lenet", epochs=4, optimizer="momentum", lr=0.1, schedule="step", decay_after=2, output=tmp_path,
            **SMALL)
    assert [row["lr"] for row in r.history] == pytest.approx([0.1, 0.1, 0.07, 0.049])


def test_cosine_reaches_zero_and_plateau_reduces(tmp_path):
    fn = schedule_function("cosine", 1.0, 10)
    assert fn(0) == 1.0 and fn(5) == pytest.approx(0.5) and fn(10) == pytest.approx(0.0)
    # plateau: at a negligible rate the validation loss cannot improve, so the
    # rate is halved after every epoch without improvement (patience 1)
    r = fit("lenet", epochs=4, optimizer="sgd", lr=1e-9, schedule="plateau", decay_after=1, output=tmp_path,
            **SMALL)
    assert [row["lr"] for row in r.history] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10], rel=1e-6)


def test_l2_adds_a_penalty_that_is_saved(tmp_path):
    import keras

    plain = fit("lenet", epochs=1, output=tmp_path / "a", **SMALL)
    l2 = fit("lenet", epochs=1, l2=0.01, output=tmp_path / "b", **SMALL)
    assert l2.history[0]["loss"] > plain.history[0]["loss"] + 0.01  # the penalty shows in the loss
    assert len(l2.model.losses) == 5  # conv1, conv2, fc1, fc2, logits
    loaded = keras.saving.load_model(l2.model_path)
    assert loaded.get_layer("conv1").kernel_regularizer.get_config()["l2"] == pytest.approx(0.01)


def _first_batch(ds):
    x, y = next(iter(ds))
    return np.asarray(x), np.asarray(y)


def test_augmentation_changes_training_batches_only():
    data = load_dataset("digits", val_size=0)
    mean, std = data.stats()
    common = dict(input_shape=(28, 28, 1), mean=mean, std=std, batch_size=32, epochs=1, seed=0)
    plain, _ = make_training_pipeline(data.x_train, data.y_train, **common)
    from kerascnn.augment import Augmenter

    for name in ("crop", "flip", "rotate", "translate"):
        augmented, _ = make_training_pipeline(data.x_train, data.y_train, augment=Augmenter(name, 28), **common)
        xa, ya = _first_batch(augmented)
        xp, yp = _first_batch(plain)
        np.testing.assert_array_equal(ya, yp)  # same samples, same order
        assert not np.allclose(xa, xp), name
        assert xa.shape == xp.shape
        again, _ = make_training_pipeline(data.x_train, data.y_train, augment=Augmenter(name, 28), **common)
        np.testing.assert_array_equal(_first_batch(again)[0], xa)  # seeded: reproducible
    # evaluation batches are never augmented: fit's test pipeline is the plain one
    test = _first_batch(make_pipeline(data.x_test, data.y_test, input_shape=(28, 28, 1), mean=mean, std=std,
                                      batch_size=32))[0]
    expected = (data.x_test[:32].astype(np.float32) / 255.0 - mean[0]) / std[0]
    np.testing.assert_allclose(test[..., 0], expected[..., 0], atol=1e-5)


def test_augmented_fit_evaluates_on_untouched_test_data(tmp_path, monkeypatch):
    """The test accuracy of an augmented run is that of its model on plain test images."""
    import keras

    r = fit("lenet", epochs=1, augment="crop,flip,rotate,translate", output=tmp_path, **SMALL)
    data = load_dataset("digits")
    x = make_pipeline(data.x_test, data.y_test, input_shape=(28, 28, 1), mean=r.config["mean"],
                      std=r.config["std"], batch_size=64)
    loaded = keras.saving.load_model(r.model_path)
    assert loaded.evaluate(x, verbose=0, return_dict=True)["accuracy"] == pytest.approx(r.test_accuracy, abs=1e-6)


def test_sampling_orders():
    seq = np.asarray(epoch_indices(100, 3, sampling="sequential"))
    np.testing.assert_array_equal(seq, np.arange(100))
    shuffled = [np.asarray(epoch_indices(100, e, seed=1)) for e in (0, 1)]
    for order in shuffled:
        np.testing.assert_array_equal(np.sort(order), np.arange(100))  # a permutation
    assert not np.array_equal(shuffled[0], shuffled[1])  # a fresh order every epoch
    np.testing.assert_array_equal(np.asarray(epoch_indices(100, 1, seed=1)), shuffled[1])  # a function of the epoch
    boot = np.asarray(epoch_indices(1000, 0, seed=1, sampling="bootstrap"))
    assert len(boot) == 1000 and boot.min() >= 0 and boot.max() < 1000
    unique = len(np.unique(boot))
    assert unique < 1000  # drawn with replacement: repeats
    assert abs(unique / 1000 - (1 - 1 / math.e)) < 0.05  # about 63.2% distinct, as bootstrap gives


def test_sequential_and_bootstrap_pipelines_feed_fit(tmp_path):
    data = load_dataset("digits", val_size=0, train_size=100)
    ds, steps = make_training_pipeline(data.x_train, data.y_train, input_shape=(28, 28, 1), mean=[0.0], std=[1.0],
                                       batch_size=30, epochs=2, sampling="sequential")
    labels = np.concatenate([np.asarray(y) for _, y in ds])
    assert steps == 4 and len(labels) == 200
    np.testing.assert_array_equal(labels[:100], data.y_train)
    r = fit("lenet", epochs=2, sampling="bootstrap", output=tmp_path, **SMALL)
    assert r.config["sampling"] == "bootstrap" and len(r.history) == 2


def test_early_stopping(tmp_path):
    # a learning rate of 0 never improves the validation loss
    r = fit("lenet", epochs=10, optimizer="sgd", lr=1e-12, patience=2, output=tmp_path, **SMALL)
    assert len(r.history) < 10
    assert r.config["epochs_run"] == len(r.history)


def test_activation_recorder_files_and_pictures(tmp_path):
    from kerascnn.visualization import visualize_epochs

    r = fit("lenet", epochs=3, record_layers=["conv1", "pool2"], probe_size=3, output=tmp_path, **SMALL)
    npz = tmp_path / "lenet.activations.npz"
    assert npz in r.paths
    with np.load(npz) as f:
        np.testing.assert_array_equal(f["epochs"], [0, 1, 2, 3])
        assert f["conv1/maps"].shape == (4, 3, 28, 28, 6) and f["conv1/maps"].dtype == np.float16
        assert f["conv1/kernel"].shape == (4, 5, 5, 1, 6)
        assert f["pool2/maps"].shape == (4, 3, 5, 5, 16) and "pool2/kernel" not in f.files
        np.testing.assert_array_equal(f["probe_index"], [0, 1, 2])
        # the last record is the trained model's own kernel
        np.testing.assert_allclose(f["conv1/kernel"][-1], r.model.get_layer("conv1").kernel.numpy(), atol=1e-3)
        assert not np.allclose(f["conv1/kernel"][0], f["conv1/kernel"][-1])
    v = visualize_epochs(r.model_path, "conv1", index=2)
    assert [p.name for p in v.paths] == ["lenet.conv1.maps_by_epoch.2.png", "lenet.conv1.kernels_by_epoch.png"]
    assert all(p.stat().st_size > 5000 for p in v.paths)
    with pytest.raises(KerasCNNError, match="recorded: conv1, pool2"):
        visualize_epochs(r.model_path, "conv2")
    with pytest.raises(KerasCNNError, match="has no spatial output"):
        fit("lenet", epochs=1, record_layers=["fc1"], output=tmp_path / "x", **SMALL)


def test_tensorboard_logs(tmp_path):
    fit("lenet", epochs=1, tensorboard=tmp_path / "tb", output=tmp_path, **SMALL)
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and any("train" in str(p) for p in events)


def test_jit_and_distribute_choices(tmp_path):
    from kerascnn.train import distribution_scope, resolve_jit

    assert resolve_jit("off") is False and resolve_jit("on") is True
    assert resolve_jit("auto") is False  # TensorFlow on a CPU: see benchmarks/jit.py
    with pytest.raises(KerasCNNError, match="needs the jax backend"):
        distribution_scope("data-parallel")
    r = fit("lenet", epochs=1, jit="on", output=tmp_path, **SMALL)
    assert r.config["jit_compile"] is True


def test_mixed_precision_on_cpu_warns_and_trains_in_float32(tmp_path, capsys):
    r = fit("lenet", epochs=1, mixed_precision=True, output=tmp_path, **{**SMALL, "verbose": 1})
    assert "needs a GPU" in capsys.readouterr().out
    assert r.config["mixed_precision"] is False
    assert r.model.get_layer("conv1").compute_dtype == "float32"


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerascnn.train import fit
    r = fit("lenet", "digits", epochs=2, batch_size=64, train_size=256, activation="relu", pool="max",
            distribute="mirrored", output=sys.argv[1], verbose=0)
    print(json.dumps({"replicas": r.config["replicas"], "loss": [row["loss"] for row in r.history],
                      "acc": r.test_accuracy}))
""")


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["loss"][1] < result["loss"][0]
    assert (tmp_path / "lenet.keras").exists()

"""kerascnn.training.callbacks: early stopping, the activation recorder, the divergence stop, checkpoints."""

import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from kerascnn.training.fit import fit

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)

RUN = dict(arch="lenet", dataset="digits", epochs=4, batch_size=128, activation="relu", pool="max",
           augment="crop,flip", train_size=600, seed=3, verbose=0)


def weights(path):
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping(tmp_path, patience):
    """SGD at 1e-12 leaves the weights, so the validation loss, exactly as they were: the first epoch sets the
    best loss and the run stops right after `patience` more epochs, not one later."""
    r = fit("lenet", epochs=10, optimizer="sgd", lr=1e-12, patience=patience, output=tmp_path, **SMALL)
    assert len({row["val_loss"] for row in r.history}) == 1  # no epoch improved
    assert len(r.history) == patience + 1
    assert r.config["epochs_run"] == patience + 1


def test_early_stop_counts_epochs_without_improvement():
    from kerascnn.training.callbacks import EarlyStop

    def stopped(losses, patience):
        stop = EarlyStop("val_loss", patience)
        stop.set_model(_Model())
        for epoch, loss in enumerate(losses):
            stop.on_epoch_end(epoch, {"val_loss": loss})
            if stop.model.stop_training:
                break
        return stop.stopped_epoch

    # best 0.8 at epoch 2; 0.7 at epoch 4 resets the count; epochs 5 and 6 do not improve on it
    assert stopped([1.0, 0.8, 0.9, 0.7, 0.75, 0.71, 0.6], patience=2) == 6
    assert stopped([1.0, 1.0, 1.0, 1.0], patience=2) == 3  # an equal loss is no improvement
    assert stopped([1.0, 0.9, 0.8, 0.7], patience=1) is None


def test_activation_recorder_files_and_pictures(tmp_path):
    from kerascnn.analysis.visualization import visualize_epochs

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


class _Model:
    stop_training = False


def run_guard(epochs, *, batch_size=10, samples=None, **kwargs):
    """Feed DivergenceGuard the running means Keras would log for these
    per-batch losses (one list per epoch); returns the guard."""
    from kerascnn.training.callbacks import DivergenceGuard

    guard = DivergenceGuard(batch_size, samples, **kwargs)
    guard.set_model(_Model())
    for e, losses in enumerate(epochs):
        guard.params = {"steps": len(losses)}
        guard.on_epoch_begin(e)
        sizes = [batch_size] * len(losses)
        if samples:
            sizes[-1] = samples - batch_size * (len(losses) - 1)
        for b, loss in enumerate(losses):
            mean = float(np.dot(losses[:b + 1], sizes[:b + 1]) / sum(sizes[:b + 1]))
            guard.on_train_batch_end(b, {"loss": mean})
            if guard.model.stop_training:
                return guard
    return guard


def test_divergence_guard_rule():
    # bounded oscillation, as a sigmoid LeNet under SGD at lr 0.1: never a stop
    wobble = [2.3 + 0.8 * np.sin(i) for i in range(400)]
    assert run_guard([wobble[:200], wobble[200:]]).diverged_epoch is None
    # 49 batches above ten times the first loss, then back: no stop; 50 in a row: a stop at the 50th
    assert run_guard([[1.0] + [10.5] * 49 + [9.0] * 100]).diverged_epoch is None
    g = run_guard([[1.0] + [5.0] * 20 + [10.5] * 60])
    assert g.diverged_epoch == 1 and "for 50 batches" in g.reason and "(1)" in g.reason
    # exactly ten times is not above it
    assert run_guard([[1.0] + [10.0] * 80]).diverged_epoch is None
    # epochs shorter than 50 batches: a whole epoch's worth in a row, across the epoch boundary
    g = run_guard([[2.0, 3.0, 30.0, 30.0], [30.0, 30.0, 1.0, 1.0]], samples=35)
    assert (g.diverged_epoch, g._run) == (2, 4)
    # a short last batch is weighed by its size: its own loss is recovered exactly
    g = run_guard([[1.0, 2.0, 50.0]], samples=21, patience=1)
    assert g.diverged_epoch == 1 and "reaching 50" in g.reason
    # not finite: at once
    assert "NaN" in run_guard([[1.0, float("nan")]]).reason
    assert "infinite" in run_guard([[1.0, 2.0, float("inf")]]).reason
    # the reference survives a resume
    g = run_guard([[4.0, 5.0]])
    assert g.get_state() == {"first_loss": pytest.approx(4.0)}


def test_diverging_run_fails_and_loses_nothing(tmp_path):
    from kerascnn.cli.commands import main

    fit("lenet", epochs=1, output=tmp_path, **SMALL)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(KerasCNNError, match=r"diverged in epoch \d: the loss .*; lower the learning rate \(lr 1e\+12"):
        fit("lenet", epochs=2, optimizer="sgd", lr=1e12, output=tmp_path, **SMALL)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    last = tmp_path / "lenet.partial" / "last.keras"
    assert not last.exists() or storage.read_state(last)["status"] == "diverged"
    # on the command line: one line, exit 1
    with pytest.raises(SystemExit) as e:
        main(["fit", "--dataset", "digits", "--optimizer", "sgd", "--lr", "1e12", "--epochs", "2",
              "--output", str(tmp_path / "cli")])
    assert e.value.code == 1
    assert not list((tmp_path / "cli").glob("*.keras"))
    # a diverged run does not block starting over
    fit("lenet", epochs=1, output=tmp_path, **SMALL)
    assert (tmp_path / "lenet.keras").read_bytes() != before["lenet.keras"]


def test_bounded_oscillation_trains_to_the_end(tmp_path):
    r = fit("lenet", "digits", epochs=3, batch_size=32, activation="sigmoid", pool="avg", optimizer="sgd", lr=0.1,
            output=tmp_path, verbose=0)
    assert len(r.history) == 3 and (tmp_path / "lenet.keras").exists()


def test_seed_generator_states_round_trip():
    import keras

    from kerascnn.training.callbacks import seed_generator_states, set_seed_generator_states

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dropout(0.5, name="drop")(inputs))
    x = np.ones((2, 4), "float32")
    saved = seed_generator_states(model)
    first = np.asarray(model(x, training=True))
    set_seed_generator_states(model, saved)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), first)
    assert seed_generator_states(model) != saved


def test_checkpoints_best_last_every_n(tmp_path):
    from kerascnn.training.fit import fit

    r = fit(**{**RUN, "epochs": 3, "augment": None}, save_every=2, output=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "lenet.partial" not in names
    assert {"lenet.best.keras", "lenet.last.keras", "lenet.epoch-002.keras", "lenet.keras"} <= set(names)
    assert "lenet.epoch-001.keras" not in names and "lenet.epoch-003.keras" not in names
    assert not [n for n in names if n.startswith(".")]
    best = storage.read_state(tmp_path / "lenet.best.keras")
    val = [row["val_accuracy"] for row in r.history]
    assert best["epoch"] == int(np.argmax(val)) + 1  # first epoch with the best val accuracy
    assert storage.read_state(tmp_path / "lenet.last.keras")["epoch"] == 3
    # a checkpoint is a plain Keras model too
    np.testing.assert_array_equal(weights(tmp_path / "lenet.last.keras")[0], r.model.get_weights()[0])


@pytest.mark.slow
def test_sigmoid_lenet_sgd_on_fashion_mnist_is_not_divergence(tmp_path, real_data_dir):
    r = fit("lenet", "fashion_mnist", data_dir=real_data_dir, epochs=2, batch_size=256, activation="sigmoid",
            pool="avg", optimizer="sgd", lr=0.1, output=tmp_path, verbose=0)
    assert len(r.history) == 2 and (tmp_path / "lenet.keras").exists()

import json
import os

import numpy as np
import pytest

from kerascnn import io
from kerascnn.data import load_dataset, make_pipeline
from kerascnn.errors import KerasCNNError
from kerascnn.train import fit


def test_fit_lowers_the_loss_and_writes_the_run(trained_run):
    rows = trained_run.history
    assert len(rows) == 3
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        assert key in rows[0]
    assert rows[0]["lr"] == pytest.approx(1e-3)
    for path in trained_run.paths:
        assert path.exists() and not path.name.startswith(".")
    csv_lines = io.sidecar(trained_run.model_path, "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,") and len(csv_lines) == 4
    config = json.loads(io.sidecar(trained_run.model_path, "run.json").read_text())
    assert config["arch"] == "lenet" and config["dataset"] == "digits"
    assert config["model_options"] == {"activation": "relu", "pool": "max"}
    assert config["test_accuracy"] == pytest.approx(trained_run.test_accuracy)
    assert not [p for p in trained_run.model_path.parent.iterdir() if ".tmp" in p.name]


def test_saved_model_predicts_exactly_as_before(trained_run):
    data = load_dataset("digits")
    cfg = trained_run.config
    x, _ = next(iter(make_pipeline(data.x_test, data.y_test, input_shape=cfg["input_shape"],
                                   mean=cfg["mean"], std=cfg["std"], batch_size=64)))
    before = trained_run.model.predict(x, verbose=0)
    after = io.load_model(trained_run.model_path).predict(x, verbose=0)
    np.testing.assert_array_equal(before, after)


def test_failed_run_leaves_saved_model_untouched(trained_run, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(trained_run.model_path.parent, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import keras

    calls = []
    evaluate = keras.Model.evaluate

    def boom(self, *args, **kwargs):  # validation passes; the final test evaluation fails
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted during evaluation")
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "evaluate", boom)
    with pytest.raises(RuntimeError):
        fit("lenet", "digits", epochs=1, train_size=64, output=out, verbose=0)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # the failed run's checkpoints stay in lenet.partial/
    assert (out / "lenet.partial" / "last.keras").exists()


def test_interrupted_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.keras"
    target.write_bytes(b"old model")

    class Failing:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        io.save_model(Failing(), target)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.keras"]


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "lenet9"}, "unknown architecture"),
    ({"optimizer": "adamax"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs must be"),
    ({"name": "../x"}, "plain file name"),
    ({"kernel": 6}, "odd"),
    ({"val_size": 2000}, "leaves no training images"),
])
def test_bad_settings_fail_before_writing(tmp_path, kwargs, message):
    kwargs = {"arch": "lenet", "dataset": "digits", "epochs": 1, "output": tmp_path / "o", "verbose": 0, **kwargs}
    with pytest.raises(KerasCNNError, match=message):
        fit(kwargs.pop("arch"), kwargs.pop("dataset"), **kwargs)
    assert not list((tmp_path / "o").glob("*.keras")) if (tmp_path / "o").exists() else True


def test_nan_loss_stops_with_a_message(tmp_path):
    with pytest.raises(KerasCNNError, match="NaN"):
        fit("lenet", "digits", epochs=1, optimizer="sgd", lr=1e6, activation="relu", output=tmp_path, verbose=0)
    assert not list(tmp_path.glob("*.keras"))
    # a diverged run does not block starting over
    fit("lenet", "digits", epochs=1, train_size=64, output=tmp_path, verbose=0)
    assert (tmp_path / "lenet.keras").exists()


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_optimizers_by_name(name):
    from kerascnn.optimizers import make_optimizer

    opt = make_optimizer(name, 0.01, weight_decay=1e-4)
    assert float(opt.learning_rate) == pytest.approx(0.01)


@pytest.mark.slow
def test_real_fashion_mnist_lenet_learns(real_data_dir, tmp_path):
    result = fit("lenet", "fashion_mnist", data_dir=real_data_dir, epochs=3, train_size=30000,
                 activation="relu", pool="max", output=tmp_path, verbose=0)
    assert result.test_accuracy > 0.80

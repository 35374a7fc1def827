import json

import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.evaluation import evaluate, most_confused

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backend.py)


def test_most_confused_pairs_count_both_directions():
    cm = np.array([[50, 2, 0], [9, 40, 1], [0, 3, 47]])
    pairs = most_confused(cm, ["a", "b", "c"])
    assert pairs[0] == ("a", "b", 11, 2, 9)
    assert pairs[1] == ("b", "c", 4, 1, 3)
    assert len(pairs) == 2  # a and c are never confused


def test_evaluate_reports_and_writes(trained_run, tmp_path):
    r = evaluate(trained_run.model_path, output=tmp_path)
    assert r.accuracy == pytest.approx(trained_run.test_accuracy, abs=1e-6)
    assert r.loss == pytest.approx(trained_run.test_loss, rel=1e-3)
    assert r.confusion.shape == (10, 10) and r.confusion.sum() == 360
    assert np.trace(r.confusion) / 360 == pytest.approx(r.accuracy)
    assert "precision" in r.report and "recall" in r.report
    off_diagonal = r.confusion.sum() - np.trace(r.confusion)
    if off_diagonal:
        assert r.confused_pairs[0][2] == max(r.confusion[i, j] + r.confusion[j, i]
                                             for i in range(10) for j in range(i + 1, 10))
    png, metrics = r.paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(metrics.read_text())
    assert saved["accuracy"] == pytest.approx(r.accuracy) and saved["dataset"] == "digits"
    assert np.array_equal(np.array(saved["confusion_matrix"]), r.confusion)


def test_evaluate_mismatched_dataset(trained_run, npz_dir):
    r = evaluate(trained_run.model_path, "cifar10", data_dir=npz_dir, output=npz_dir)
    assert r.confusion.sum() == 40  # RGB 32x32 fed to a gray 28x28 model


def test_evaluate_missing_model(tmp_path):
    with pytest.raises(KerasCNNError, match="no model file"):
        evaluate(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(KerasCNNError, match="cannot load"):
        evaluate(bad)


def test_checkpoints_from_another_folder_and_other_data(trained_run, npz_dir, tmp_path, monkeypatch):
    """Must show: evaluate works on lenet.best/last/epoch-NNN.keras from another folder, and
    `--dataset X` writes lenet.X.* beside the model's own files, which stay as they were."""
    import shutil

    folder = tmp_path / "runs"
    shutil.copytree(trained_run.model_path.parent, folder)
    shutil.copy(folder / "lenet.last.keras", folder / "lenet.epoch-003.keras")
    own = evaluate(folder / "lenet.keras")
    before = {p.name: p.read_bytes() for p in own.paths}
    assert sorted(before) == ["lenet.confusion.png", "lenet.metrics.json"]
    monkeypatch.chdir(tmp_path / "..")
    for kind in ("best", "last", "epoch-003"):
        r = evaluate(folder / f"lenet.{kind}.keras")
        assert [p.name for p in r.paths] == [f"lenet.{kind}.confusion.png", f"lenet.{kind}.metrics.json"]
        assert json.loads(r.paths[1].read_text())["dataset"] == "digits" and r.confusion.sum() == 360
    assert evaluate(folder / "lenet.last.keras").accuracy == pytest.approx(own.accuracy)  # last = final weights
    other = evaluate(folder / "lenet.keras", "cifar10", data_dir=npz_dir)
    assert [p.parent for p in other.paths] == [folder, folder]
    assert [p.name for p in other.paths] == ["lenet.cifar10.confusion.png", "lenet.cifar10.metrics.json"]
    assert {p.name: p.read_bytes() for p in own.paths} == before

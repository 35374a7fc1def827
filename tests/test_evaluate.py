import json

import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.evaluate import evaluate, most_confused

pytestmark = pytest.mark.core  # also run under jax and torch (tests/test_backends.py)


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

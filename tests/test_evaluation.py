import json
import re
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.cli.commands import cli
from kerascnn.data.datasets import load_dataset
from kerascnn.errors import KerasCNNError
from kerascnn.analysis.evaluation import evaluate, most_confused
from tests.conftest import make_images

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
    png, gallery, metrics = r.paths
    assert png.read_bytes()[:8] == gallery.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(metrics.read_text())
    assert saved["accuracy"] == pytest.approx(r.accuracy) and saved["dataset"] == "digits"
    assert np.array_equal(np.array(saved["confusion_matrix"]), r.confusion)

    # the images are normalized with the run's own mean and std, not with the data's: given other
    # numbers in run.json, evaluate scores what the model predicts for images normalized with those
    folder = tmp_path / "edited"
    folder.mkdir()
    shutil.copy(trained_run.model_path, folder / "lenet.keras")
    record = json.loads(trained_run.model_path.with_name("lenet.run.json").read_text())
    record.update(mean=[0.3], std=[0.2])
    (folder / "lenet.run.json").write_text(json.dumps(record))
    edited = evaluate(folder / "lenet.keras")
    data = load_dataset("digits")
    assert data.stats()[0][0] != pytest.approx(0.3, abs=0.05)  # the data alone would say otherwise
    model = keras.saving.load_model(folder / "lenet.keras")
    logits = model.predict((data.x_test.astype(np.float32) / 255 - 0.3) / 0.2, verbose=0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert edited.loss == pytest.approx(float(np.mean(-np.log(probs[np.arange(360), data.y_test]))), rel=1e-4)
    assert edited.accuracy == pytest.approx(float(np.mean(logits.argmax(axis=1) == data.y_test)))


def test_evaluate_mismatched_dataset(trained_run, npz_dir, capsys):
    r = evaluate(trained_run.model_path, "cifar10", data_dir=npz_dir, output=npz_dir)
    assert r.confusion.sum() == 40  # RGB 32x32 fed to a gray 28x28 model
    assert capsys.readouterr().err == "warning: this model was trained on digits; evaluating it on cifar10\n"
    evaluate(trained_run.model_path, output=npz_dir)
    assert capsys.readouterr().err == ""  # its own dataset: no warning


def _three_classes(tmp_path):
    """A data dir whose cifar10/ has three classes of its own."""
    x, y = make_images(30, size=32, channels=3, classes=3)
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "three.npz", x_train=x, y_train=y, x_test=x, y_test=y,
             class_names=np.array(["cat", "dog", "bird"]))
    return tmp_path


def test_evaluate_refuses_a_dataset_of_another_class_count(trained_run, tmp_path):
    data_dir = _three_classes(tmp_path)
    message = (f"the model {trained_run.model_path} has 10 classes but dataset cifar10 has 3; it was trained on "
               f"digits: evaluate it there (leave out dataset) or on a dataset with 10 classes")
    with pytest.raises(KerasCNNError, match=f"^{re.escape(message)}$"):
        evaluate(trained_run.model_path, "cifar10", data_dir=data_dir, output=tmp_path)
    assert not list(tmp_path.glob("*.png"))


def test_evaluate_dataset_checks_through_the_cli(trained_run, tmp_path, idx_dir):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(trained_run.model_path), "--dataset", "cifar10",
                                 "--data-dir", str(_three_classes(tmp_path)), "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (f"error: the model {trained_run.model_path} has 10 classes but dataset cifar10 has 3; "
                             f"it was trained on digits: evaluate it there (leave out --dataset) or on a dataset "
                             f"with 10 classes\n")
    # another dataset of ten classes: evaluated (28x28 gray either way), with one warning line
    result = runner.invoke(cli, ["evaluate", str(trained_run.model_path), "--dataset", "mnist",
                                 "--data-dir", str(idx_dir), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: this model was trained on digits; evaluating it on mnist\n"
    assert "(50 images)" in result.stdout and (tmp_path / "lenet.mnist.metrics.json").exists()


def test_evaluate_missing_model(tmp_path):
    with pytest.raises(KerasCNNError, match="no model file"):
        evaluate(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(KerasCNNError, match="bad.keras is not a Keras model file: a .keras file is a zip archive"):
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
    assert sorted(before) == ["lenet.confusion.png", "lenet.metrics.json", "lenet.top_losses.png"]
    monkeypatch.chdir(tmp_path / "..")
    for kind in ("best", "last", "epoch-003"):
        r = evaluate(folder / f"lenet.{kind}.keras")
        assert [p.name for p in r.paths] == [f"lenet.{kind}.confusion.png", f"lenet.{kind}.top_losses.png",
                                             f"lenet.{kind}.metrics.json"]
        assert json.loads(r.paths[-1].read_text())["dataset"] == "digits" and r.confusion.sum() == 360
    assert evaluate(folder / "lenet.last.keras").accuracy == pytest.approx(own.accuracy)  # last = final weights
    other = evaluate(folder / "lenet.keras", "cifar10", data_dir=npz_dir)
    assert [p.parent for p in other.paths] == [folder] * 3
    assert [p.name for p in other.paths] == ["lenet.cifar10.confusion.png", "lenet.cifar10.top_losses.png",
                                             "lenet.cifar10.metrics.json"]
    assert {p.name: p.read_bytes() for p in own.paths} == before


def _losses_recomputed(model_path):
    """Per-image cross-entropy of the digits test set, computed here without kerascnn's pipeline."""
    from kerascnn.runs.saved import Run

    mean, std = Run.load(model_path).normalization()
    data = load_dataset("digits")
    logits = keras.saving.load_model(model_path).predict((data.x_test / 255 - mean[0]) / std[0], verbose=0)
    logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(data.y_test)), data.y_test], np.exp(log_probs), data


def test_top_losses_are_the_highest_loss_test_images(trained_run, tmp_path):
    r = evaluate(trained_run.model_path, output=tmp_path, top_losses=7)
    losses, probs, data = _losses_recomputed(trained_run.model_path)
    listed = [w["index"] for w in r.top_losses]
    assert len(listed) == len(set(listed)) == 7
    listed_losses = [w["loss"] for w in r.top_losses]
    assert listed_losses == sorted(listed_losses, reverse=True)
    assert listed_losses == pytest.approx(losses[listed], rel=1e-4, abs=1e-5)
    others = np.delete(losses, listed)
    assert min(listed_losses) >= others.max() - 1e-4  # no image left out has a higher loss
    for w in r.top_losses:
        i = w["index"]
        assert w["true"] == data.class_names[data.y_test[i]]
        assert w["predicted"] == data.class_names[probs[i].argmax()]
        assert w["probability"] == pytest.approx(probs[i].max(), abs=1e-4)
    gallery = tmp_path / "lenet.top_losses.png"
    assert r.paths == [tmp_path / "lenet.confusion.png", gallery, tmp_path / "lenet.metrics.json"]
    assert (r.confusion_path, r.top_losses_path) == (tmp_path / "lenet.confusion.png", gallery)
    import matplotlib.image

    assert matplotlib.image.imread(gallery)[..., :3].std() > 0.05  # drawn, not blank
    assert json.loads(r.paths[-1].read_text())["top_losses"] == r.top_losses


def test_top_losses_zero_draws_no_gallery(trained_run, tmp_path):
    r = evaluate(trained_run.model_path, output=tmp_path, top_losses=0)
    assert [p.name for p in r.paths] == ["lenet.confusion.png", "lenet.metrics.json"]
    assert r.top_losses_path is None and r.confusion_path == r.paths[0]
    assert r.top_losses == [] and json.loads(r.paths[-1].read_text())["top_losses"] == []
    with pytest.raises(KerasCNNError, match="top_losses must be 0 \\(none\\) or more, got -1"):
        evaluate(trained_run.model_path, output=tmp_path, top_losses=-1)


def test_evaluate_top_losses_through_the_cli(trained_run, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(trained_run.model_path), "--output", str(tmp_path),
                                      "--top-losses", "3"])
    assert result.exit_code == 0, result.output
    assert "highest losses (3 of the 3 listed):" in result.stdout
    assert f"wrote {tmp_path / 'lenet.top_losses.png'}" in result.stdout
    assert len(json.loads((tmp_path / "lenet.metrics.json").read_text())["top_losses"]) == 3
    result = CliRunner().invoke(cli, ["evaluate", str(trained_run.model_path), "--top-losses", "-2"])
    assert result.exit_code == 2 and "--top-losses" in result.stderr


def test_a_long_top_loss_list_draws_the_first_hundred(trained_run, tmp_path, monkeypatch):
    import kerascnn.analysis.evaluation as evaluation

    drawn = []
    plot = evaluation.plot_gallery
    monkeypatch.setattr(evaluation, "plot_gallery", lambda images, captions, title: drawn.append(title) or plot(
        images[:2], captions[:2], title=title))
    r = evaluate(trained_run.model_path, output=tmp_path, top_losses=1000)
    assert len(r.top_losses) == 360  # every test image, listed in the JSON
    assert len(json.loads(r.paths[-1].read_text())["top_losses"]) == 360
    assert drawn == ["lenet.keras: the 100 of the 360 digits test images of highest loss"]

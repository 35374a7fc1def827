import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kerascnn.cli import cli
from tests.conftest import REPO


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_is_fast_and_lists_commands():
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for command in ("fit", "evaluate", "visualize", "summary", "layers"):
        assert command in result.stdout
    code = "import kerascnn.cli, sys; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_summary_prints_both_parts_and_seed_figures():
    for args, figure in ((), "2,550"), (("--kernel", 7), "4,998"), (("--channels", "16,32"), "13,200"):
        result = run("summary", "--arch", "lenet", *args)
        assert result.exit_code == 0, result.output
        encoder = next(line for line in result.output.splitlines() if line.startswith("encoder"))
        assert figure in encoder
        assert "conv1" in result.output and "head" in result.output


def test_layers_lists_names_and_shapes():
    result = run("layers", "--arch", "lenet", "--batchnorm")
    assert result.exit_code == 0
    assert "conv1_bn" in result.output and "(None, 28, 28, 6)" in result.output


def test_fit_evaluate_visualize(tmp_path):
    out = tmp_path / "models"
    result = run("fit", "--arch", "lenet", "--dataset", "digits", "--epochs", 2, "-b", 128,
                 "--activation", "relu", "--pool", "max", "--kernel", 7, "--channels", "8,16",
                 "--optimizer", "adam", "--lr", "2e-3", "--output", out, "--name", "small")
    assert result.exit_code == 0, result.output
    assert "test accuracy:" in result.output and f"wrote {out / 'small.keras'}" in result.output

    result = run("evaluate", out / "small.keras")
    assert result.exit_code == 0, result.output
    assert "test accuracy:" in result.output and "most confused pairs:" in result.output
    assert "cases (" in result.output and (out / "small.confusion.png").exists()

    result = run("visualize", "--layer", "conv2", "--model", out / "small.keras", "--index", 5)
    assert result.exit_code == 0, result.output
    written = [line.split(" ", 1)[1] for line in result.output.splitlines() if line.startswith("wrote ")]
    assert [p.rsplit("/", 1)[1] for p in written] == ["small.conv2.kernels.png", "small.conv2.maps.5.png",
                                                      "small.curves.png"]


def test_fit_at_chance_says_why(tmp_path):
    """The textbook sigmoid LeNet cannot learn in 6 steps; fit says so rather than leave a bare 10%."""
    result = run("fit", "--arch", "lenet", "--dataset", "digits", "--epochs", 1, "--output", tmp_path)
    assert result.exit_code == 0, result.output
    note = next(line for line in result.output.splitlines() if line.startswith("note:"))
    assert "near chance (10%) after 6 training steps (1 epoch x 6 batches of 256)" in note
    assert "--activation relu" in note
    assert (tmp_path / "lenet.keras").exists()


@pytest.mark.parametrize("args, message, code", [
    (("fit", "--arch", "resnet999"), "unknown architecture", 2),
    (("fit", "--channels", "6"), "--channels expects 2 values", 2),
    (("fit", "--dataset", "svhn"), "unknown dataset 'svhn'", 2),
    (("fit", "--dataset", "digits", "--kernel", "4"), "odd", 2),
    (("evaluate", "nowhere.keras"), "no model file at nowhere.keras", 1),
    (("visualize", "--model", "nowhere.keras"), "no model file", 1),
    (("fit", "--dataset", "mnist", "--data-dir", "/nonexistent"), "does not exist", 1),
    (("fit", "--dataset", "digits", "--augment", "zoom"), "unknown augmentation 'zoom'", 2),
    (("fit", "--dataset", "digits", "--schedule", "linear"), "unknown schedule 'linear'", 2),
    (("fit", "--dataset", "digits", "--resume"), "no checkpoint to continue from", 1),
    (("fit", "--dataset", "digits", "--distribute", "data-parallel"), "needs the jax backend", 1),
    (("visualize", "--by-epoch", "--model", "nowhere.keras"), "no model file at nowhere.keras", 1),
    (("fit", "--optimizer", "adamx"), "unknown optimizer 'adamx'; choose one of: sgd, momentum", 2),
    (("--backend", "theano", "fit"), "'theano' is not one of 'tensorflow', 'jax', 'torch'", 2),
    (("fit", "--epochs", "0"), "--epochs must be at least 1, got 0", 2),
    (("fit", "--epochs", "-3"), "--epochs must be at least 1, got -3", 2),
    (("fit", "--batch-size", "0"), "--batch-size must be at least 1, got 0", 2),
    (("fit", "--lr", "-0.1"), "--lr must be positive", 2),
    (("fit", "--dataset", "digits", "--kernel", "31"), "kernel 31 does not fit a 28x28 input in LeNet", 1),
    (("fit", "--arch", "vgg11", "--image-size", "16"), "vgg11 needs images of at least 32x32", 2),
    (("fit", "--dataset", "digits", "--output", "a_file"), "output folder a_file is a file", 1),
    (("fit", "--dataset", "digits", "--output", "a_file/sub"), "cannot create output folder a_file/sub", 1),
    (("fit", "--dataset", "digits", "--output", "/proc/kerascnn"), "cannot create output folder /proc/kerascnn", 1),
])
def test_bad_input_gets_one_line_and_nonzero_exit(args, message, code, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == code
    assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no folder, no model, nothing


def test_unknown_keras_backend_in_the_environment(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--dataset", "digits"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": "thano"})
    assert result.returncode == 2
    assert result.stderr == ("error: KERAS_BACKEND=thano is not a Keras backend kerascnn runs on; "
                             "choose one of: tensorflow, jax, torch\n")


def test_unknown_layer_via_cli(trained_run):
    result = run("visualize", "--model", trained_run.model_path, "--layer", "fc9")
    assert result.exit_code == 1
    assert "valid layers: conv1, pool1, conv2, pool2" in result.output
    result = run("visualize", "--by-epoch", "--model", trained_run.model_path)
    assert result.exit_code == 1 and "no recorded activations" in result.output


def test_fit_with_training_options_then_visualize_by_epoch(tmp_path):
    out = tmp_path / "models"
    result = run("fit", "--dataset", "digits", "--epochs", 3, "-b", 128, "--train-size", 400,
                 "--optimizer", "momentum", "--lr", "0.05", "--schedule", "step", "--decay-after", 1,
                 "--augment", "crop", "--augment", "flip,translate", "--sampling", "bootstrap", "--l2", "1e-4",
                 "--save-every", 2, "--record-layer", "conv1", "--output", out)
    assert result.exit_code == 0, result.output
    for name in ("lenet.keras", "lenet.best.keras", "lenet.last.keras", "lenet.activations.npz"):
        assert f"wrote {out / name}" in result.output
    assert (out / "lenet.epoch-002.keras").exists()
    import json

    config = json.loads((out / "lenet.run.json").read_text())
    assert config["augment"] == ["crop", "flip", "translate"] and config["sampling"] == "bootstrap"
    assert [row["lr"] for row in json.loads((out / "lenet.history.json").read_text())] == \
        pytest.approx([0.05, 0.035, 0.0245])

    result = run("visualize", "--by-epoch", "--layer", "conv1", "--model", out / "lenet.keras", "--index", 1)
    assert result.exit_code == 0, result.output
    assert "lenet.conv1.maps_by_epoch.1.png" in result.output and "lenet.conv1.kernels_by_epoch.png" in result.output

    # a finished run continues for more epochs with --resume
    result = run("fit", "--dataset", "digits", "--epochs", 4, "-b", 128, "--train-size", 400,
                 "--optimizer", "momentum", "--lr", "0.05", "--schedule", "step", "--decay-after", 1,
                 "--augment", "crop,flip,translate", "--sampling", "bootstrap", "--l2", "1e-4",
                 "--record-layer", "conv1", "--output", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    history = json.loads((out / "lenet.history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


def test_output_is_clean_in_a_pipe(tmp_path):
    """No TensorFlow start-up lines on stderr, and one plain line per epoch (no escape codes) in a pipe."""
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--dataset", "digits", "--epochs", "2",
                          "-b", "64", "--activation", "relu", "--output", tmp_path], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    epochs = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "val_accuracy" in epochs[0] and "lr 0.001" in epochs[0]
    summary = subprocess.run([sys.executable, str(REPO / "cli.py"), "summary", "--arch", "resnet18"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert summary.returncode == 0 and summary.stderr == ""


def test_debug_shows_the_traceback_and_still_ends_with_the_error_line(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "--debug", "evaluate", "no/such.keras"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and out.stderr.strip().splitlines()[-1] == "error: no model file at no/such.keras"

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.cli.commands import cli
from tests.conftest import REPO


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_is_fast_and_lists_commands():
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for command in ("fit", "evaluate", "visualize", "summary", "layers"):
        assert command in result.stdout
    code = "import kerascnn.cli.commands, sys; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_version_is_the_packages_from_a_checkout_too():
    import kerascnn

    expected = f"kerascnn, version {kerascnn.__version__}\n"
    assert run("--version").output == expected
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == expected


@pytest.mark.parametrize("shell, start", [("bash", "_kerascnn_completion() {"), ("zsh", "#compdef kerascnn"),
                                          ("fish", "function _kerascnn_completion")])
def test_shell_completion_prints_each_shells_script(shell, start):
    """What docs/cli.md's *Shell completion* runs."""
    source = CliRunner().invoke(cli, [], prog_name="kerascnn", env={"_KERASCNN_COMPLETE": f"{shell}_source"})
    assert source.exit_code == 0 and source.output.startswith(start)


def test_shell_completion_offers_the_choices_fitconfig_checks():
    for words, expected in (("fit --arch res", ["resnet18"]),
                            ("study --preset opt", ["optimizers", "optimizer-sweep"])):
        env = {"COMP_WORDS": f"kerascnn {words}", "COMP_CWORD": "3", "_KERASCNN_COMPLETE": "bash_complete"}
        output = CliRunner().invoke(cli, [], prog_name="kerascnn", env=env).output
        assert output.split() == [f"plain,{name}" for name in expected]


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
    # every option reached the run: its record, the model's layers, its optimizer and the rate it trained at
    from kerascnn.runs.saved import Run

    saved = Run.load(out / "small.keras")
    settings = saved.settings
    assert (settings.kernel, settings.channels, settings.optimizer, settings.lr) == (7, (8, 16), "adam", 2e-3)
    assert (settings.epochs, settings.batch_size, settings.activation, settings.pool) == (2, 128, "relu", "max")
    model = saved.model()
    assert tuple(model.get_layer("conv1").kernel.shape) == (7, 7, 1, 8)
    assert tuple(model.get_layer("conv2").kernel.shape) == (7, 7, 8, 16)
    assert model.get_layer("conv1").activation.__name__ == "relu"
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    assert [row["lr"] for row in saved.history] == pytest.approx([2e-3, 2e-3])

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


def test_fit_log_every_prints_the_lectures_lines_and_writes_the_steps(tmp_path):
    """Not a terminal (click's runner): every 2 steps the lecture's `loss: ...  [seen/total]` line; 256 digits in
    batches of 64 are 4 steps an epoch."""
    import re

    result = run("fit", "--dataset", "digits", "--epochs", 2, "-b", 64, "--train-size", 256, "--activation", "relu",
                 "--log-every", 2, "--output", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("loss:", "epoch "))]
    assert [re.sub(r"\d\.\d{6}", "L", line) if line.startswith("loss") else line.split(":")[0] for line in lines] == [
        "loss: L  [  128/  256]", "loss: L  [  256/  256]", "epoch 1/2",
        "loss: L  [  128/  256]", "loss: L  [  256/  256]", "epoch 2/2"]
    assert f"wrote {tmp_path / 'lenet.steps.csv'}" in result.output
    from kerascnn.runs.files import read_steps

    rows = read_steps(tmp_path / "lenet.steps.csv")
    assert [row["step"] for row in rows] == [2, 4, 6, 8]
    assert [float(line.split()[1]) for line in lines if line.startswith("loss")] == \
        pytest.approx([row["loss"] for row in rows], abs=1e-6)


def test_debug_shows_the_traceback_and_still_ends_with_the_error_line(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "--debug", "evaluate", "no/such.keras"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and out.stderr.strip().splitlines()[-1] == "error: no model file at no/such.keras"


def cli_in(folder, *args):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=folder, timeout=120, check=False)


def test_compare_prints_the_table_and_writes_the_png(trained_run, tmp_path):
    from tests.test_visualization import PNG, ROWS, saved_run

    saved_run(tmp_path / "runs", "sgd_run", trained_run, ROWS, optimizer="sgd", lr=0.05, test_accuracy=0.61,
              train_seconds=12.5)
    out = cli_in(tmp_path, "compare", trained_run.model_path, "runs/sgd_run.keras", "--output", "cmp.png")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "| run | optimizer | lr | epochs | final train accuracy | best val accuracy | test accuracy " \
                       "| seconds |"
    lenet = [cell.strip() for cell in lines[2].strip("|").split("|")]
    history = trained_run.history
    config = trained_run.config
    assert (lenet[0], lenet[1], float(lenet[2]), int(lenet[3])) == ("lenet", config["optimizer"], config["lr"],
                                                                     len(history))
    assert float(lenet[4]) == pytest.approx(history[-1]["accuracy"], abs=5e-5)
    assert float(lenet[5]) == pytest.approx(max(r["val_accuracy"] for r in history), abs=5e-5)
    assert float(lenet[6]) == pytest.approx(trained_run.test_accuracy, abs=5e-5)
    assert lines[3] == "| sgd_run | sgd | 0.05 | 3 | 0.7000 | 0.6000 | 0.6100 | 12.5 |"
    assert lines[4:] == ["wrote cmp.png"]
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG


HINT = "; leave that run out, or train it again"


@pytest.mark.parametrize("history, remove, output, message, code", [
    ("", None, "cmp.png", "cannot use the training history runs/bad.history.json: the file is empty" + HINT, 1),
    ("not json", None, "cmp.png", "cannot use the training history runs/bad.history.json: not JSON (Expecting "
                                  "value: line 1 column 1 (char 0))" + HINT, 1),
    ('[{"epoch": 1, "accuracy": 0.5}]', None, "cmp.png",
     "cannot use the training history runs/bad.history.json: epoch 1 has no number for 'loss'" + HINT, 1),
    ("[]", None, "cmp.png", "runs/bad.keras has no training history (runs/bad.history.json holds no epochs)" + HINT,
     1),
    (None, "bad.history.json", "cmp.png",
     "runs/bad.keras has no training history (runs/bad.history.json is missing)" + HINT, 1),
    (None, "bad.run.json", "cmp.png",
     "runs/bad.keras has no run.json beside it; compare needs runs saved by `kerascnn fit`", 1),
    (None, "bad.keras", "cmp.png", "no model file at runs/bad.keras", 1),
    (None, None, "cmp.txt", "--output cmp.txt: a PNG image is written there; give a file name ending in .png", 2),
    (None, None, "runs", "--output runs: a PNG image is written there; give a file name ending in .png", 2),
    (None, None, "new/sub/cmp.png",
     "--output new/sub/cmp.png: the folder new/sub does not exist; create it first or write elsewhere", 1),
    (None, None, "runs/good.keras/cmp.png", "--output runs/good.keras/cmp.png: the folder runs/good.keras is a file, "
                                           "not a folder; create it first or write elsewhere", 1),
], ids=["empty", "not-json", "no-loss", "no-epochs", "no-history", "no-record", "no-model", "txt", "folder",
        "missing-folder", "file-as-folder"])
def test_compare_errors_name_the_file_and_write_nothing(trained_run, tmp_path, history, remove, output, message,
                                                        code):
    from tests.test_visualization import ROWS, saved_run

    saved_run(tmp_path / "runs", "good", trained_run, ROWS)
    saved_run(tmp_path / "runs", "bad", trained_run, ROWS if history is None else history)
    if remove:
        (tmp_path / "runs" / remove).unlink()
    before = sorted(tmp_path.rglob("*"))
    out = cli_in(tmp_path, "compare", "runs/good.keras", "runs/bad.keras", "--output", output)
    assert (out.returncode, out.stderr, out.stdout) == (code, f"error: {message}\n", "")
    assert sorted(tmp_path.rglob("*")) == before  # no picture, no folder


# --- bad model files: every command that takes a model answers each with one line and exit 1

MODEL_COMMANDS = {"evaluate": ("evaluate", "{path}"), "visualize": ("visualize", "--model", "{path}"),
                  "summary": ("summary", "--model", "{path}"), "layers": ("layers", "--model", "{path}"),
                  "compare": ("compare", "{path}", "--output", "{out}"), "explain": ("explain", "{path}"),
                  "predict": ("predict", "{path}", "{image}")}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    from tests.test_storage import make_bad_models

    return make_bad_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def an_image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


BAD_MODEL_KINDS = ["missing", "folder", "not a zip", "empty", "truncated", "bad crc", "no weights", "config not json",
                   "weights not hdf5", "lambda", "unregistered"]


# compare reads a run's records, never its model: code in a model cannot concern it; predict needs the run's
# record before the model, and these bare models have none (its own test: tests/test_prediction.py)
@pytest.mark.parametrize("command, kind", [(c, k) for c in MODEL_COMMANDS for k in BAD_MODEL_KINDS
                                           if not (c in ("compare", "predict") and k in ("lambda", "unregistered"))])
def test_every_command_answers_a_bad_model_file_with_one_line(bad_models, an_image, command, kind, tmp_path):
    from tests.test_storage import BAD_MODEL_MESSAGES

    path = bad_models[kind]
    args = [a.format(path=path, out=tmp_path / "cmp.png", image=an_image) for a in MODEL_COMMANDS[command]]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: " + BAD_MODEL_MESSAGES[kind].format(path=path, unsafe="--unsafe"))
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_unsafe_warns_and_is_the_one_way_to_load_a_lambda(bad_models):
    for command in ("summary", "layers"):
        result = CliRunner().invoke(cli, [command, "--model", str(bad_models["lambda"]), "--unsafe"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ("warning: --unsafe: code a model file holds will run as it loads; use it only for "
                                 "files you trust\n")
        assert "double" in result.stdout
    result = CliRunner().invoke(cli, ["layers", "--model", str(bad_models["unregistered"]), "--unsafe"])
    assert result.exit_code == 1 and "needs the class 'Unregistered'" in result.stderr


def test_a_lambda_model_gets_one_clean_line_from_a_real_process(bad_models):
    out = cli_in(bad_models["lambda"].parent, "summary", "--model", "lambda.keras")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == ("error: lambda.keras holds Python code (Lambda layer 'double'), which safe loading never "
                          "runs; if you trust the file, load it with --unsafe\n")
    out = cli_in(bad_models["lambda"].parent, "layers", "--model", "lambda.keras", "--unsafe")
    assert out.returncode == 0 and "double" in out.stdout
    assert out.stderr == "warning: --unsafe: code a model file holds will run as it loads; use it only for files " \
                         "you trust\n"


def test_errors_name_the_keyword_in_python_and_the_flag_in_the_shell(trained_run, tmp_path, monkeypatch):
    from kerascnn.config.spelling import OptionError
    from kerascnn.errors import KerasCNNError
    from kerascnn.analysis.explanation import explain
    from kerascnn.analysis.preview import show_batch
    from kerascnn.training.fit import fit
    from kerascnn.analysis.visualization import visualize

    model = str(trained_run.model_path)
    monkeypatch.chdir(tmp_path)  # nothing should be written; whatever would be lands in tmp_path
    cases = [  # (Python call, its message; the same mistake typed in the shell, its message)
        (lambda: explain(model, indices=[5000]), "indices must be between 0 and 359, got 5000",
         ["explain", model, "--index", "5000"], "--index must be between 0 and 359, got 5000"),
        (lambda: explain(model, indices=[1], misclassified=2), "give indices or misclassified, not both",
         ["explain", model, "--index", "1", "--misclassified", "2"], "give --index or --misclassified, not both"),
        (lambda: explain(model, class_index="cat"), "class_index cat: no such class",
         ["explain", model, "--class", "cat"], "--class cat: no such class"),
        (lambda: visualize(model, "conv1", index=999), "index must be between 0 and 359, got 999",
         ["visualize", "--model", model, "--layer", "conv1", "--index", "999"], "--index must be between 0 and 359"),
        (lambda: explain(model, layer="pool2"), "layer 'pool2' is not a convolution of lenet",
         ["explain", model, "--layer", "pool2"], "--layer 'pool2' is not a convolution of lenet"),
        (lambda: show_batch("lenet", "digits", image_size=8), "image_size 8 is too small",
         ["show-batch", "--dataset", "digits", "--image-size", "8"], "--image-size 8 is too small"),
        (lambda: fit("lenet", "digits", image_size=8, verbose=0), "image_size 8 is too small",
         ["fit", "--dataset", "digits", "--image-size", "8"], "--image-size 8 is too small"),
    ]
    for call, said, args, typed in cases:
        with pytest.raises((OptionError, KerasCNNError)) as caught:
            call()
        assert said in str(caught.value) and "--" not in str(caught.value)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (1, 2) and typed in result.stderr, result.stderr

"""FitConfig: every option once, checked before Keras loads, named as the
user typed it; run records old and new; replaying a saved run."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.runs import storage
from kerascnn.runtime.distribution import accelerator_available
from kerascnn.config.options import FIELDS, RUN_FORMAT, FitConfig, upgrade
from kerascnn.config.spelling import OptionError, cli_spelling
from kerascnn.config.defaults import resolve
from kerascnn.runs.files import mismatches
from kerascnn.errors import KerasCNNError
from tests.conftest import REPO


def strip(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_defaults_and_types():
    c = FitConfig(channels="16,32", augment=["crop", "flip,crop"], val_size="0.2", train_size=500.0, lr="1e-3")
    assert c.channels == (16, 32) and c.augment == ("crop", "flip") and c.val_size == 0.2
    assert c.train_size == 500 and isinstance(c.train_size, int) and c.lr == 0.001
    assert FitConfig().dataset == "fashion_mnist" and FitConfig().epochs == 10
    assert FitConfig(arch="alexnet", dense_units=512).builder_options() == {"dense_units": 512}
    assert FitConfig(activation="relu", channels=(8, 16)).model_options() == {"activation": "relu",
                                                                               "channels": [8, 16]}
    # steps per call: "auto" (as --steps-per-execution auto) is the default rule, a number is that number
    assert FitConfig(steps_per_execution="auto").steps_per_execution is None
    assert FitConfig(steps_per_execution=" Auto ").steps_per_execution is None
    assert FitConfig(steps_per_execution="4").steps_per_execution == 4


@pytest.mark.parametrize("options, message", [
    ({"lr": -1}, "lr must be positive, got -1"),
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"arch": "resnet999"}, "arch: unknown architecture 'resnet999'; choose one of: lenet, alexnet"),
    ({"optimizer": "adamax"}, "optimizer: unknown optimizer 'adamax'"),
    ({"dataset": "svhn"}, "dataset: unknown dataset 'svhn'"),
    ({"augment": "flip,zoom"}, "augment: unknown augmentation 'zoom'"),
    ({"kernel": 4}, "kernel must be a positive odd size"),
    ({"channels": "6"}, "channels expects 2 values"),
    ({"epochs": "ten"}, "epochs expects a whole number, got 'ten'"),
    ({"val_size": 1.5}, "val_size expects a fraction below 1 or a whole count"),
    ({"decay_rate": 0}, r"decay_rate must be in \(0, 1\]"),
    ({"dropout": 1, "arch": "vgg11"}, r"dropout must be in \[0, 1\)"),
    ({"arch": "vgg11", "kernel": 5}, "vgg11 does not take kernel; its options are: activation, pool"),
    ({"arch": "vgg11", "padding": "valid"}, "vgg11 does not take padding; its options are: activation, pool"),
    ({"padding": "full"}, "padding: unknown padding 'full'; choose one of: same, valid"),
    ({"resize": "crop"}, "resize: unknown resize mode 'crop'; choose one of: resize, pad"),
    ({"arch": "lenet", "dense_units": 100}, "lenet has 2 dense layers, got 1 widths"),
    ({"arch": "nin", "image_size": 64}, "nin needs images of at least 67x67; image_size 64 is too small"),
    ({"name": "../x"}, "name must be a plain file name"),
    ({"resume": True, "overwrite": True}, "resume and overwrite contradict"),
    ({"log_every": -1}, "log_every must be at least 0, got -1"),
    ({"log_every": 2.5}, "log_every expects a whole number, got 2.5"),
    ({"log_every": "ten"}, "log_every expects a whole number, got 'ten'"),
    ({"steps_per_execution": "many"}, "steps_per_execution expects a whole number or auto, got 'many'"),
    ({"epochs": "auto"}, "epochs expects a whole number, got 'auto'"),
])
def test_bad_values_name_the_keyword(options, message):
    with pytest.raises(OptionError, match=message):
        FitConfig(**options)


def test_cli_spelling_names_the_flag():
    with cli_spelling(), pytest.raises(OptionError, match="^--batch-size must be at least 1"):
        FitConfig(batch_size=0)
    with cli_spelling(), pytest.raises(OptionError, match="vgg11 does not take --kernel, --channels; its options "
                                                          "are: --activation, --pool, --batchnorm"):
        FitConfig(arch="vgg11", kernel=3, channels=(1, 2))
    with cli_spelling(), pytest.raises(OptionError, match="--record-layer"):
        FitConfig(record_layers=5)


def test_replace_checks_and_rejects_unknown_options():
    c = FitConfig(arch="resnet18")
    assert c.replace(epochs=3).epochs == 3 and c.epochs == 10
    with pytest.raises(OptionError, match="unknown option 'epoch'"):
        c.replace(epoch=3)
    with pytest.raises(OptionError, match="resnet18 does not take pool"):
        c.replace(pool="avg")


def test_resolve_fills_family_and_optimizer_defaults():
    lenet = resolve(FitConfig(), image_size=28, accelerator=False)
    assert (lenet.name, lenet.batch_size, lenet.optimizer, lenet.lr, lenet.weight_decay) == \
        ("lenet", 256, "adamw", 1e-3, 0.004)
    assert (lenet.activation, lenet.pool, lenet.kernel, lenet.channels) == ("sigmoid", "avg", 5, (6, 16))
    sgd = resolve(FitConfig(arch="mobilenet", optimizer="sgd", mixed_precision=True), image_size=32,
                  accelerator=False)
    assert (sgd.batch_size, sgd.lr, sgd.weight_decay, sgd.mixed_precision) == (32, 0.1, None, False)
    assert sgd.activation == "relu6" and sgd.pool is None and sgd.kernel is None


def test_every_option_is_a_fit_flag_and_a_record_key(trained_run):
    from kerascnn.cli.commands import cli

    params = {p.name for p in cli.commands["fit"].params}
    assert params == set(FIELDS) | {"config_file", "backend"}
    record = json.loads(storage.sidecar(trained_run.model_path, "run.json").read_text())
    assert record["format"] == RUN_FORMAT
    assert set(FIELDS) <= set(record) and set(record["given"]) == set(FIELDS)
    assert record["given"]["batch_size"] == 64 and record["given"]["optimizer"] is None
    assert record["optimizer"] == "adamw" and record["weight_decay"] == 0.004 and record["lr"] == 1e-3
    assert record["image_size"] == 28 and record["input_shape"] == [28, 28, 1]


def test_config_files_toml_yaml_json(tmp_path):
    expected = FitConfig(arch="lenet", dataset="digits", epochs=3, batch_size=64, channels=(8, 16),
                         augment=("crop", "flip"), lr=0.002)
    files = {
        "run.toml": 'arch = "lenet"\ndataset = "digits"\nepochs = 3\nbatch-size = 64\nchannels = [8, 16]\n'
                    'augment = ["crop", "flip"]\nlr = 2e-3\n',
        "run.yaml": "arch: lenet\ndataset: digits\nepochs: 3\nbatch_size: 64\nchannels: 8,16\n"
                    "augment: crop,flip\nlr: 0.002\n",
        "run.json": json.dumps({"arch": "lenet", "dataset": "digits", "epochs": 3, "batch_size": 64,
                                "channels": [8, 16], "augment": "crop,flip", "lr": 0.002}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        assert FitConfig.from_file(tmp_path / name) == expected, name
    (tmp_path / "bad.toml").write_text("epochs = 3\nepoch = 4\n")
    with pytest.raises(OptionError, match="bad.toml: unknown option 'epoch'"):
        FitConfig.from_file(tmp_path / "bad.toml")
    (tmp_path / "broken.yaml").write_text("epochs: [3\n")
    with pytest.raises(OptionError, match="cannot read the configuration"):
        FitConfig.from_file(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 3\n")
    with pytest.raises(OptionError, match="holds no mapping"):
        FitConfig.from_file(tmp_path / "list.yaml")


def test_a_run_record_replays_what_was_given(trained_run):
    config = FitConfig.from_file(storage.sidecar(trained_run.model_path, "run.json"))
    assert config == FitConfig(arch="lenet", dataset="digits", epochs=3, batch_size=64, activation="relu",
                               pool="max", output=str(trained_run.model_path.parent))
    assert config.optimizer is None  # given as the family's default, so it stays the family's


@pytest.mark.skipif(accelerator_available(),
                    reason="bit-equal repeats need deterministic kernels; GPU convolution gradients are not")
def test_replay_on_the_command_line_gives_the_same_history(trained_run, tmp_path):
    """Must show: `kerascnn fit --config <run.json> --output OTHER` repeats a seeded run."""
    from kerascnn.cli.commands import cli

    run_json = storage.sidecar(trained_run.model_path, "run.json")
    result = CliRunner().invoke(cli, ["fit", "--config", str(run_json), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "lenet on digits at 28x28: adamw lr 0.001, weight decay 0.004, batch 64, 3 epochs" in result.output
    again = json.loads((tmp_path / "lenet.history.json").read_text())
    assert strip(again) == strip(trained_run.history)
    assert set(again[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    replayed = json.loads((tmp_path / "lenet.run.json").read_text())
    assert replayed["test_accuracy"] == trained_run.test_accuracy
    assert replayed["given"] == {**trained_run.config["given"], "output": str(tmp_path)}


def test_replay_overrides_and_never_overwrites_silently(trained_run, tmp_path):
    from kerascnn.cli.commands import cli

    folder = tmp_path / "runs"
    shutil.copytree(trained_run.model_path.parent, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    run_json = folder / "lenet.run.json"
    result = CliRunner().invoke(cli, ["fit", "--config", str(run_json), "--output", str(folder)])
    assert result.exit_code == 1 and "already holds a run" in result.output and "--overwrite" in result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # options typed on the command line override the file; the others come from it
    result = CliRunner().invoke(cli, ["fit", "--config", str(run_json), "--epochs", "1", "--name", "short",
                                      "-b", "32", "--output", str(folder)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "short.run.json").read_text())
    assert (record["epochs"], record["batch_size"], record["activation"], record["dataset"]) == \
        (1, 32, "relu", "digits")
    with pytest.raises(KerasCNNError, match="already holds a run; .* add overwrite"):
        from kerascnn.training.fit import fit

        fit(run_json, output=folder, verbose=0)


def test_fit_takes_a_config_object(tmp_path):
    from kerascnn.training.fit import fit

    config = FitConfig(dataset="digits", epochs=1, train_size=64, activation="relu", output=str(tmp_path))
    result = fit(config, verbose=0)
    assert result.settings.batch_size == 256 and result.config["given"]["batch_size"] is None
    with pytest.raises(OptionError, match="the architecture is given twice"):
        fit("lenet", arch="vgg11")


def to_format_1(record):
    """A run record as kerascnn wrote it before FitConfig: flat options,
    the weight decay as given, the learning rate as Keras stored it."""
    old = {k: v for k, v in record.items() if k not in ("format", "given", "image_size", "resume", "overwrite",
                                                         "output", "record_layers", "probe_size", "tensorboard",
                                                         "save_every", "jit")}
    for k in ("activation", "pool", "kernel", "channels", "batchnorm", "width", "dense_units", "dropout",
              "depth_multiplier"):
        old.pop(k)
    for k in ("padding", "resize", "log_every"):  # came later still
        old.pop(k, None)
    old["weight_decay"] = record["given"]["weight_decay"]
    old["lr"] = float(np.float32(record["lr"]))
    return old


def test_runs_saved_before_fitconfig_evaluate_replay_and_resume(trained_run, tmp_path):
    from kerascnn.analysis.evaluation import evaluate
    from kerascnn.training.fit import fit

    folder = tmp_path / "old"
    shutil.copytree(trained_run.model_path.parent, folder)
    record = json.loads((folder / "lenet.run.json").read_text())
    old = to_format_1(record)
    storage.write_json(folder / "lenet.run.json", old)
    state = storage.read_state(folder / "lenet.last.keras")
    storage.update_state(folder / "lenet.last.keras", config=to_format_1(state["config"]))

    assert upgrade(old)["weight_decay"] == 0.004 and upgrade(old)["activation"] == "relu"
    assert (upgrade(old)["padding"], upgrade(old)["resize"]) == ("same", "resize")
    assert mismatches(old, record) == []
    assert evaluate(folder / "lenet.keras", output=tmp_path / "eval").accuracy == \
        pytest.approx(trained_run.test_accuracy, abs=1e-6)
    replayed = FitConfig.from_file(folder / "lenet.run.json")
    assert (replayed.arch, replayed.epochs, replayed.activation, replayed.image_size) == ("lenet", 3, "relu", 28)
    resumed = fit("lenet", "digits", epochs=4, batch_size=64, activation="relu", pool="max", output=folder,
                  resume=True, verbose=0)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4] and resumed.config["resumed_from"] == 3

    storage.write_json(folder / "lenet.run.json", {**record, "format": RUN_FORMAT + 1})
    with pytest.raises(KerasCNNError, match="saved by a newer kerascnn"):
        FitConfig.from_file(folder / "lenet.run.json")


def test_runs_saved_before_padding_and_resize_resume_as_same_and_resize():
    """A format-2 record from before --padding and --resize: its run had LeNet's same padding and resized."""
    saved = {"arch": "lenet", "format": RUN_FORMAT, "given": {}, "input_shape": [28, 28, 1]}
    current = {**saved, "padding": "same", "resize": "resize"}
    assert (upgrade(saved)["padding"], upgrade(saved)["resize"]) == ("same", "resize")
    assert "padding" not in upgrade({**saved, "arch": "vgg11"})  # vgg11 has no such option
    assert mismatches(saved, current) == []
    with cli_spelling():
        assert mismatches(saved, {**current, "padding": "valid", "resize": "pad"}) == ["--padding", "--resize"]


def test_runs_saved_before_log_every_logged_nothing_and_resume_so():
    """A record from before --log-every: its run logged no steps, and a resume must not start to."""
    saved = {"arch": "lenet", "format": RUN_FORMAT, "given": {}, "input_shape": [28, 28, 1]}
    assert upgrade(saved)["log_every"] == 0 and FitConfig().log_every == 0
    assert mismatches(saved, {**saved, "log_every": 0}) == []
    with cli_spelling():
        assert mismatches(saved, {**saved, "log_every": 100}) == ["--log-every"]


ERRORS = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from kerascnn.cli.commands import main
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    loaded = sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)
    print(json.dumps({"code": code, "loaded": loaded, "seconds": time.perf_counter() - start}))
""")


@pytest.mark.parametrize("args, code, message", [
    (("fit", "--lr", "-1"), 2, "error: --lr must be positive, got -1.0"),
    (("fit", "--epochs", "0"), 2, "error: --epochs must be at least 1, got 0"),
    (("fit", "--arch", "lenet9"), 2, "error: --arch: unknown architecture 'lenet9'; choose one of: lenet, alexnet"),
    (("fit", "--arch", "resnet18", "--pool", "avg"), 2, "error: resnet18 does not take --pool"),
    (("fit", "--config", "no/such.run.json"), 2, "error: --config: no configuration file at no/such.run.json"),
    (("evaluate", "no/such.keras"), 1, "error: no model file at no/such.keras"),
    (("summary", "--arch", "vgg11", "--kernel", "3"), 2, "error: vgg11 does not take --kernel"),
    (("fit", "--arch", "vgg11", "--padding", "valid"), 2, "error: vgg11 does not take --padding; its options are: "
                                                          "--activation, --pool, --batchnorm, --init, --width, "
                                                          "--dense-units, --dropout"),
    (("fit", "--padding", "full"), 2, "error: --padding: unknown padding 'full'; choose one of: same, valid"),
    (("fit", "--resize", "crop"), 2, "error: --resize: unknown resize mode 'crop'; choose one of: resize, pad"),
    (("fit", "--log-every", "-1"), 2, "error: --log-every must be at least 0, got -1"),
    (("fit", "--log-every", "2.5"), 2, "error: --log-every expects a whole number, got '2.5'"),
])
def test_option_errors_answer_without_tensorflow(args, code, message, tmp_path):
    """Must show: one line, the right exit code, and TensorFlow never imported."""
    result = subprocess.run([sys.executable, "-c", ERRORS, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["code"] == code and outcome["loaded"] == [], outcome
    assert result.stderr.strip().splitlines() == [message] or result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

"""kerascnn.training.fit: fit end to end: the saved run, bad settings, training options, kill -9 and --resume, seeds."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.data.datasets import load_dataset
from kerascnn.data.loader import make_pipeline
from kerascnn.config.spelling import OptionError
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import read_steps
from kerascnn.training.fit import fit
from kerascnn.runtime.distribution import accelerator_available
from tests.test_schedules import Interrupt

# What kerascnn does without a GPU or TPU; with one visible it does otherwise, on purpose.
cpu_only = pytest.mark.skipif(accelerator_available(), reason="checks the behaviour without a GPU or TPU; one is "
                                                               "visible here")

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)

RUN = dict(arch="lenet", dataset="digits", epochs=4, batch_size=128, activation="relu", pool="max",
           augment="crop,flip", train_size=600, seed=3, verbose=0)


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
    csv_lines = storage.sidecar(trained_run.model_path, "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,") and len(csv_lines) == 4
    config = json.loads(storage.sidecar(trained_run.model_path, "run.json").read_text())
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
    after = storage.load_model(trained_run.model_path).predict(x, verbose=0)
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


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "lenet9"}, "unknown architecture"),
    ({"optimizer": "adamax"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs must be"),
    ({"name": "../x"}, "plain file name"),
    ({"kernel": 6}, "odd"),
    ({"val_size": 2000}, "leaves no training images"),
    ({"resize": "pad", "image_size": 24}, "resize='pad' needs image_size at least the data's 28x28, got 24"),
])
def test_bad_settings_fail_before_writing(tmp_path, kwargs, message):
    kwargs = {"arch": "lenet", "dataset": "digits", "epochs": 1, "output": tmp_path / "o", "verbose": 0, **kwargs}
    with pytest.raises(KerasCNNError, match=message):
        fit(kwargs.pop("arch"), kwargs.pop("dataset"), **kwargs)
    assert not list((tmp_path / "o").glob("*.keras")) if (tmp_path / "o").exists() else True


def test_bad_schedule_and_sampling_names_are_clear_errors(tmp_path):
    with pytest.raises(KerasCNNError, match="unknown schedule 'linear'"):
        fit("lenet", epochs=1, schedule="linear", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match="unknown sampling 'random'"):
        fit("lenet", epochs=1, sampling="random", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match="unknown augmentation 'zoom'"):
        fit("lenet", epochs=1, augment="flip,zoom", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match=r"decay_rate must be in \(0, 1\]"):
        fit("lenet", epochs=1, schedule="step", decay_rate=1.5, output=tmp_path, **SMALL)


def test_l2_adds_a_penalty_that_is_saved(tmp_path):
    import keras

    plain = fit("lenet", epochs=1, output=tmp_path / "a", **SMALL)
    l2 = fit("lenet", epochs=1, l2=0.01, output=tmp_path / "b", **SMALL)
    assert l2.history[0]["loss"] > plain.history[0]["loss"] + 0.01  # the penalty shows in the loss
    assert len(l2.model.losses) == 5  # conv1, conv2, fc1, fc2, logits
    loaded = keras.saving.load_model(l2.model_path)
    assert loaded.get_layer("conv1").kernel_regularizer.get_config()["l2"] == pytest.approx(0.01)


def test_tensorboard_logs(tmp_path):
    fit("lenet", epochs=1, tensorboard=tmp_path / "tb", output=tmp_path, **SMALL)
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and any("train" in str(p) for p in events)


def test_jit_and_distribute_choices(tmp_path):
    from kerascnn.config.options import FitConfig
    from kerascnn.training.plan import resolve_jit, start_distribution

    assert resolve_jit("off") is False and resolve_jit("on") is True
    with pytest.raises(KerasCNNError, match="needs the jax backend"):
        start_distribution(FitConfig(distribute="data-parallel"))  # the plan's one check
    r = fit("lenet", epochs=1, jit="on", output=tmp_path, **SMALL)
    assert r.config["jit_compile"] is True


@cpu_only
def test_mixed_precision_on_cpu_warns_and_trains_in_float32(tmp_path, capsys):
    r = fit("lenet", epochs=1, mixed_precision=True, output=tmp_path, **{**SMALL, "verbose": 1})
    assert "needs a GPU" in capsys.readouterr().out
    assert r.config["mixed_precision"] is False
    assert r.model.get_layer("conv1").compute_dtype == "float32"


def test_gpu_choices_run_on_a_cpu_posing_as_a_gpu(tmp_path, monkeypatch):
    """What fit chooses when it sees an accelerator, run here on the CPU: XLA on (tensorflow, jax), mixed
    float16 compute with float32 weights and a loss-scaled optimizer, a family's textbook size."""
    import keras

    from kerascnn.training import plan
    from kerascnn.training.plan import resolve_jit

    monkeypatch.setattr(plan, "accelerator_available", lambda: True)
    assert resolve_jit("auto") is (keras.backend.backend() != "torch")
    r = fit("lenet", epochs=1, mixed_precision=True, output=tmp_path, **SMALL)
    assert r.config["mixed_precision"] is True and r.config["jit_compile"] is resolve_jit("auto")
    conv1 = r.model.get_layer("conv1")
    assert conv1.compute_dtype == "float16" and conv1.kernel.dtype == "float32"
    assert isinstance(r.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(r.history[0]["loss"]) and keras.config.dtype_policy().name == "float32"  # restored
    settings = plan.resolve_settings(plan.make_config("resnet18", "digits").config, load_dataset("digits"))
    from kerascnn.config.families import FAMILIES

    assert settings.image_size == FAMILIES["resnet18"].default_size > FAMILIES["resnet18"].min_size


def test_near_chance_hint_only_near_chance():
    from kerascnn.training.fit import near_chance_hint

    assert near_chance_hint(0.12, 10, 5, 2, 32, "vgg11", {}) is not None
    assert "sigmoid" not in near_chance_hint(0.12, 10, 5, 2, 32, "lenet", {"activation": "relu"})
    assert near_chance_hint(0.2, 10, 5, 2, 32, "lenet", {}) is None
    assert near_chance_hint(0.6, 2, 5, 2, 32, "lenet", {}) is None


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    from kerascnn.training.fit import fit

    kwargs = json.loads(sys.argv[1])
    kill_at = json.loads(sys.argv[2])  # [epoch, batch] (from 1) or null

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
        def on_train_batch_end(self, batch, logs=None):
            if kill_at and [self.epoch, batch + 1] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    fit(callbacks=[Kill()], **kwargs)
""")


def run_fit(kwargs, kill_at=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(kwargs), json.dumps(kill_at)],
                          capture_output=True, text=True, env=env, timeout=300)


def weights(path):
    return [np.asarray(w) for w in storage.load_model(path).get_weights()]  # io registers kerascnn's schedules


def history(path):
    rows = json.loads(storage.sidecar(path, "history.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
# onecycle: the optimizer's step count, kept in the checkpoint, drives the schedule and its warm-up.
# 5 steps an epoch: the default runs them in one call (killed after it, before the checkpoint); at batch 100,
# 6 steps in calls of 3, the kill falls after an epoch's first call. --log-every 4 at batch 100: 6 steps an epoch
# in calls of 2 on tensorflow; the kill after step 8 leaves a row past the checkpoint (epoch 1, step 6), and the
# row of steps 5-8 spans the checkpoint.
@pytest.mark.parametrize("schedule, kill_at", [
    ({}, [3, 5]), ({"batch_size": 100, "steps_per_execution": 3}, [3, 3]),
    ({"optimizer": "adam", "lr": 0.01, "schedule": "onecycle", "warmup": 0.5, "steps_per_execution": 1}, [3, 2]),
    ({"batch_size": 100, "log_every": 4}, [2, 2]),
    ({"mixup": 0.2, "cutmix": 1.0, "randaugment": True, "label_smoothing": 0.1}, [3, 5])],
    ids=["constant", "constant-3-steps-a-call", "onecycle", "log-every", "tricks"])
def test_kill_and_resume_match_an_uninterrupted_run(tmp_path, schedule, kill_at):
    run = {**RUN, **schedule}
    whole = run_fit({**run, "output": str(tmp_path / "whole")})
    assert whole.returncode == 0, whole.stderr

    killed = run_fit({**run, "output": str(tmp_path / "cut")}, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    cut = tmp_path / "cut"
    assert not (cut / "lenet.keras").exists()  # no final model from a killed run
    partial = cut / "lenet.partial"
    assert storage.read_state(partial / "last.keras")["epoch"] == kill_at[0] - 1
    if run.get("log_every"):
        assert [row["step"] for row in read_steps(partial / "steps.csv")] == [4, 8]
    assert not [p for p in partial.iterdir() if p.name.startswith(".")]  # no temporary files left

    # the same command again without --resume refuses to discard the run
    again = run_fit({**run, "output": str(cut)})
    assert again.returncode != 0 and "add resume=True to continue it" in again.stderr

    resumed = run_fit({**run, "output": str(cut), "resume": True})
    assert resumed.returncode == 0, resumed.stderr
    assert history(cut / "lenet.keras") == history(tmp_path / "whole" / "lenet.keras")
    assert not partial.exists()  # the finished run's checkpoints moved beside the model
    assert storage.read_state(cut / "lenet.last.keras")["epoch"] == 4
    for a, b in zip(weights(cut / "lenet.keras"), weights(tmp_path / "whole" / "lenet.keras")):
        np.testing.assert_array_equal(a, b)
    if run.get("log_every"):  # no step repeated or missing, each row's loss as the uninterrupted run's
        steps = read_steps(cut / "lenet.steps.csv")
        assert [row["step"] for row in steps] == list(range(4, 25, 4))
        assert steps == read_steps(tmp_path / "whole" / "lenet.steps.csv")


@pytest.mark.skipif(accelerator_available(), reason="bit-equal repeats need deterministic kernels; GPU "
                                                    "convolutions' gradients are not by default")
def test_same_seed_same_history_and_different_seed_differs(tmp_path):
    from kerascnn.training.fit import fit

    kwargs = {**RUN, "epochs": 2}
    a = fit(**kwargs, output=tmp_path / "a")
    b = fit(**kwargs, output=tmp_path / "b")
    c = fit(**{**kwargs, "seed": 4}, output=tmp_path / "c")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_resume_refuses_other_options_and_missing_checkpoint(tmp_path):
    from kerascnn.errors import KerasCNNError
    from kerascnn.training.fit import fit

    with pytest.raises(KerasCNNError, match="no checkpoint"):
        fit(**{**RUN, "epochs": 1}, output=tmp_path, resume=True)
    fit(**{**RUN, "epochs": 1, "augment": None}, output=tmp_path)
    with pytest.raises(KerasCNNError, match="differs .* in: batch_size"):
        fit(**{**RUN, "epochs": 2, "augment": None, "batch_size": 64}, output=tmp_path, resume=True)
    # a finished run can be extended by more epochs
    r = fit(**{**RUN, "epochs": 2, "augment": None}, output=tmp_path, resume=True)
    assert [row["epoch"] for row in r.history] == [1, 2] and r.config["resumed_from"] == 1


def test_a_tensorflow_run_saved_before_the_one_epoch_order_is_refused_on_resume(tmp_path):
    """Such a run cannot continue exactly (tensorflow drew its own order
    then): --resume says so in one line, exits non-zero and writes nothing.
    A jax or torch run of then (the same numpy order) and a sequential one
    resume."""
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli
    from kerascnn.runs import storage

    options = ["--dataset", "digits", "--train-size", "128", "-b", "64", "--activation", "relu", "--output",
               str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(cli, ["fit", "--epochs", "1", *options]).exit_code == 0
    last = tmp_path / "lenet.last.keras"
    state = storage.read_state(last)
    assert state["config"]["epoch_order"] == 2
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    old = {k: v for k, v in state["config"].items() if k != "epoch_order"}  # as a record of before the one order
    storage.update_state(last, config={**old, "backend": "tensorflow"})
    result = runner.invoke(cli, ["fit", "--epochs", "2", "--resume", *options])
    assert result.exit_code != 0 and "trained on tensorflow by an earlier kerascnn" in result.output, result.output
    assert result.output.count("\n") <= 3 and "Traceback" not in result.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p != last} == \
        {p: t for p, t in before.items() if p != last}  # nothing written
    storage.update_state(last, config={**old, "backend": "jax"})
    result = runner.invoke(cli, ["fit", "--epochs", "2", "--resume", *options])
    assert result.exit_code == 0, result.output  # the jax run of before: the same order, resumed


def test_lenet5_on_digits_padded_to_32_from_fit_to_evaluate_and_visualize(tmp_path, monkeypatch):
    """Must show (issue 16, lenet5-mnist): `fit --image-size 32 --resize pad --padding valid` pads the 28x28
    digits with black (normalized to -mean/std) in training and evaluation, and evaluate and visualize pad too."""
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli
    from kerascnn.config.options import FitConfig
    from kerascnn.data import loader, tf_pipeline
    from kerascnn.runs.saved import Run

    calls = []

    def spy(name, real):
        def pipeline(*args, **kwargs):
            calls.append((name, kwargs.get("resize")))
            return real(*args, **kwargs)
        return pipeline

    for module, name in ((loader, "make_pipeline"), (tf_pipeline, "make_training_pipeline")):
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    out = tmp_path / "runs"
    runner = CliRunner()
    result = runner.invoke(cli, ["fit", "--dataset", "digits", "--image-size", "32", "--resize", "pad", "--padding",
                                 "valid", "--activation", "relu", "--pool", "max", "--epochs", "1", "--train-size",
                                 "128", "-b", "64", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "lenet on digits at 32x32 (padded)" in result.output
    record = json.loads((out / "lenet.run.json").read_text())
    assert (record["resize"], record["padding"], record["input_shape"]) == ("pad", "valid", [32, 32, 1])
    assert record["given"]["resize"] == "pad" and record["model_options"]["padding"] == "valid"
    replayed = FitConfig.from_file(out / "lenet.run.json")
    assert (replayed.padding, replayed.resize, replayed.image_size) == ("valid", "pad", 32)
    with pytest.raises(KerasCNNError, match="differs from the run in .* in: padding, resize; repeat"):
        fit(replayed.replace(padding=None, resize="resize", epochs=2, resume=True), verbose=0)
    run = Run.load(out / "lenet.keras")
    assert (run.resize, run.settings.resize, run.settings.padding) == ("pad", "pad", "valid")
    assert run.model().get_layer("conv1").output.shape[1:] == (28, 28, 6)

    data = load_dataset("digits", train_size=128)  # as fit split it: the record's mean and std
    x = np.asarray(next(iter(make_pipeline(data.x_test[:8], data.y_test[:8], input_shape=(32, 32, 1), mean=record["mean"],
                                           std=record["std"], resize=run.resize)))[0])
    black = (0 - record["mean"][0]) / record["std"][0]
    assert x.shape == (8, 32, 32, 1)
    ring = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(), x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    np.testing.assert_allclose(ring, black, rtol=1e-6)
    np.testing.assert_allclose(x[:, 2:30, 2:30, 0], (data.x_test[:8, ..., 0] / 255 - record["mean"][0])
                               / record["std"][0], rtol=1e-5, atol=1e-5)

    assert runner.invoke(cli, ["evaluate", str(out / "lenet.keras")]).exit_code == 0
    metrics = json.loads((out / "lenet.metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(record["test_loss"], rel=1e-4)
    result = runner.invoke(cli, ["visualize", "--model", str(out / "lenet.keras")])
    assert result.exit_code == 0 and (out / "lenet.conv1.maps.0.png").exists(), result.output
    assert {name for name, _ in calls} == {"make_pipeline", "make_training_pipeline"}
    assert [resize for _, resize in calls] == ["pad"] * len(calls)
    result = runner.invoke(cli, ["layers", "--arch", "lenet", "--image-size", "32", "--padding", "valid"])
    assert result.exit_code == 0 and "(None, 28, 28, 6)" in result.output, result.output


@pytest.mark.slow
def test_real_fashion_mnist_lenet_learns(real_data_dir, tmp_path):
    result = fit("lenet", "fashion_mnist", data_dir=real_data_dir, epochs=3, train_size=30000,
                 activation="relu", pool="max", output=tmp_path, verbose=0)
    assert result.test_accuracy > 0.80


FAMILIES = ("lenet", "alexnet", "vgg11", "vgg16", "nin", "googlenet", "resnet18", "mobilenet")
NARROW = {"width": 0.25}
DENSE = {"alexnet": {"dense_units": 64}, "vgg11": {"dense_units": 64}, "vgg16": {"dense_units": 64}}


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_learns_from_its_first_steps_with_its_defaults(arch, tmp_path):
    """fit with the family's own optimizer, rate, batch, initializer, warm-up and batch norm (only narrower,
    on 512 digits) lowers the training loss from the first epoch to the third."""
    narrow = {} if arch == "lenet" else {**NARROW, **DENSE.get(arch, {})}
    r = fit(arch, "digits", epochs=3, train_size=512, val_size=0, output=tmp_path, verbose=0, **narrow)
    losses = [row["loss"] for row in r.history]
    assert losses[2] < losses[0], losses
    assert r.settings.batch_size == r.settings.family.batch_size and r.config["given"]["lr"] is None


@pytest.mark.core
@pytest.mark.skipif(accelerator_available(), reason="bit-equal repeats need deterministic kernels")
def test_steps_per_execution_gives_the_same_run(tmp_path):
    """Several steps a call (the default on tensorflow and jax) train exactly as one step a call, with a
    per-step schedule (onecycle), the per-step log, a checkpoint every epoch, early stopping and a resumed
    run (10 steps an epoch: calls of 2, or of 10); a count that does not divide an epoch is refused, and
    torch refuses more than one; the saved model loads with 1."""
    import keras

    from kerascnn.training.fit import fit

    kwargs = {**RUN, "epochs": 3, "batch_size": 64, "schedule": "onecycle", "log_every": 10, "save_every": 1,
              "patience": 2}
    if keras.backend.backend() == "torch":
        with pytest.raises(OptionError, match="steps_per_execution must be 1 on the torch backend"):
            fit(**kwargs, steps_per_execution=2, output=tmp_path / "2")
        return
    with pytest.raises(OptionError, match="steps_per_execution 3 does not divide the 10 steps of an epoch, so a "
                                          "call would run past the epoch's end; choose one of 2, 5, 10"):
        fit(**kwargs, steps_per_execution=3, output=tmp_path / "3")
    runs = {k: fit(**kwargs, steps_per_execution=k, output=tmp_path / str(k)) for k in (1, 2, None)}
    with pytest.raises(KerasCNNError, match="interrupted after epoch 1"):  # Ctrl-C in epoch 2, then resumed
        fit(**kwargs, steps_per_execution=10, callbacks=[Interrupt(2, 1)], output=tmp_path / "resumed")
    runs["resumed"] = fit(**kwargs, resume=True, output=tmp_path / "resumed")
    assert [r.settings.steps_per_execution for r in runs.values()] == [1, 2, 10, 10]
    assert runs[None].config["steps_per_execution"] == 10
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    want = runs[1]
    for name in (2, None, "resumed"):
        assert strip(runs[name].history) == strip(want.history)
        assert read_steps(runs[name].model_path.with_name("lenet.steps.csv")) == \
            read_steps(want.model_path.with_name("lenet.steps.csv"))
        for a, b in zip(runs[name].model.get_weights(), want.model.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in runs[None].model_path.parent.glob("lenet.epoch-*.keras")) == \
        [f"lenet.epoch-00{e}.keras" for e in (1, 2, 3)]
    assert storage.load_model(runs[2].model_path).steps_per_execution == 1


def test_steps_per_execution_refused_with_a_per_batch_warmup(tmp_path):
    from kerascnn.training.fit import fit

    """Plateau's warm-up sets the rate every batch; the other schedules warm up inside the optimizer's schedule."""
    with pytest.raises(OptionError, match="steps_per_execution must be 1 with warmup"):
        fit(**{**RUN, "epochs": 1}, schedule="plateau", warmup=0.5, steps_per_execution=4, output=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_run_killed_while_its_checkpoints_moved_is_done_and_fit_finishes_the_move(tmp_path):
    """A kill after run.json is written but before the checkpoints leave <name>.partial/: the run is done
    (RunFiles.done), so the next fit moves them out instead of calling the run unfinished."""
    from kerascnn.runs.files import RunFiles

    r = fit("lenet", epochs=1, output=tmp_path, **SMALL)
    files = RunFiles.of(r.model_path)
    files.partial.mkdir()
    os.replace(files.checkpoint("last"), files.in_progress("last"))
    assert files.done() and storage.read_state(files.in_progress("last"))["status"] == "running"
    fit("lenet", epochs=1, output=tmp_path, **SMALL)
    assert not files.partial.exists() and files.checkpoint("last").exists() and files.done()

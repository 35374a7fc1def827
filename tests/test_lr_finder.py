"""kerascnn.training.lr_finder: the learning-rate range test: the rates, the smoothing and the stop, the suggestion
rules, the model and optimizer put back exactly, the plot, and `kerascnn lr-find`."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from kerascnn import lr_find
from kerascnn.training.lr_finder import steepest, suggest_lr, sweep, sweep_rates, valley
from tests.conftest import REPO

TINY = dict(activation="relu", pool="max", batch_size=64, train_size=256)


def test_rates_grow_exponentially_from_start_to_end():
    lrs = sweep_rates(1e-7, 10, 200)
    assert len(lrs) == 200 and lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(10)
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    np.testing.assert_allclose(ratios, 1e8 ** (1 / 199), rtol=1e-9)  # the same factor every step


class _Optimizer:
    learning_rate = None
    variables = []

    def build(self, variables):
        pass


class _Scripted:
    """A model whose steps return the given losses (and remember their rates)."""

    def __init__(self, losses):
        self.optimizer, self.variables, self.trainable_variables = _Optimizer(), [], []
        self.script, self.rates = iter(losses), []

    def train_on_batch(self, x, y, return_dict=False):
        self.rates.append(self.optimizer.learning_rate)
        return {"loss": next(self.script)}


def run_sweep(losses, steps=None):
    model = _Scripted(losses)
    lrs = sweep_rates(1e-3, 1, steps or len(losses))
    return model, sweep(model, iter([(None, None)] * len(lrs)), lrs)


def test_smoothing_is_fastais_moving_average_and_the_sweep_stops_at_four_times_its_minimum():
    model, (losses, smoothed) = run_sweep([2.0, 1.0, 1.0, 1.0] + [30.0] * 20)
    # beta 0.98 with bias correction: the first value is the loss itself, the second 0.02*1 + 0.98*0.02*2 ...
    average, expected = 0.0, []
    for i, loss in enumerate(losses):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98 ** (i + 1)))
    assert smoothed == pytest.approx(expected) and smoothed[:2] == pytest.approx([2.0, (0.0196 * 2 + 0.02) / 0.0396])
    assert smoothed[-1] > 4 * min(smoothed) and smoothed[-2] <= 4 * min(smoothed)  # stopped at the first step over
    assert len(losses) < 24 and model.rates == sweep_rates(1e-3, 1, 24)[:len(losses)]
    _, (losses, _) = run_sweep([2.0, 1.5, float("nan"), 1.0, 1.0])  # not finite: at once
    assert len(losses) == 3
    _, (losses, _) = run_sweep([2.0, 1.5, 1.2, 1.1, 1.0])  # no divergence: every rate
    assert len(losses) == 5


def test_suggestion_rules_against_curves_worked_out_by_hand():
    lrs = np.geomspace(1e-5, 1, 6)
    # log-spaced rates: the steepest fall is the largest drop, from step 2 to 3
    assert steepest(lrs, [2.0, 1.9, 1.7, 0.9, 0.8, 3.0]) == 2
    # the longest descent is steps 0-5 (6 losses); fastai's valley then takes int(6/3) + int(6/6) - 1 = 2
    assert valley(np.geomspace(1e-5, 1, 10), [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]) == 2
    # a sweep of 100 steps: fastai leaves out the first 10 (the falls from step 0 and 1 are noise) and the last 5
    lrs = sweep_rates(1e-6, 1, 100)
    smoothed = [5.0, 3.0] + [2.0] * 28 + [1.5] + [1.4] * 64 + [2.0, 4.0, 8.0, 16.0, 32.0]
    assert suggest_lr(lrs, smoothed, 100) == pytest.approx(lrs[29])
    # a sweep cut short: all of it before the loss that is not finite, or before the step that passed 4x the minimum
    short = [2.0, 1.9, 1.2, 1.1, 1.0]
    assert suggest_lr(lrs, short + [float("nan")], 100) == suggest_lr(lrs, short + [9.0], 100) == pytest.approx(lrs[1])


@pytest.mark.core
def test_the_sweep_puts_weights_and_optimizer_state_back_exactly():
    import keras

    from kerascnn.models import build_model
    from kerascnn.training.plan import compile_model

    keras.utils.set_random_seed(0)
    model = build_model("lenet", input_shape=(28, 28, 1), num_classes=10, activation="relu", batchnorm=True,
                        dense_units=(16, 8))
    compile_model(model, keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 8)) for _ in range(12)]

    def state():
        return [keras.ops.convert_to_numpy(v).copy() for v in model.variables + model.optimizer.variables]

    fresh = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    sweep(model, iter(batches), sweep_rates(1e-4, 10, 12))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0  # as fit would start
    for a, b in zip(fresh, [keras.ops.convert_to_numpy(v) for v in model.variables]):
        np.testing.assert_array_equal(a, b)
    model.train_on_batch(*batches[0])  # Adam's moments, the step count and the batch-norm statistics move
    before = state()
    losses, _ = sweep(model, iter(batches), sweep_rates(1e-4, 10, 12))
    assert len(losses) > 1
    after = state()
    assert len(before) == len(after) > len(fresh)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_lr_find_on_a_tiny_model_stops_at_the_divergence_and_suggests_below_it(tmp_path):
    r = lr_find("lenet", "digits", optimizer="sgd", steps=60, suggest="steepest", output=tmp_path / "sgd.png", **TINY)
    assert len(r.lrs) < 60  # SGD at a rate of a few units diverges
    assert r.lrs == pytest.approx(sweep_rates(1e-7, 10, 60)[:len(r.lrs)])
    assert len(r.losses) == len(r.smoothed) == len(r.lrs)
    assert not math.isfinite(r.smoothed[-1]) or r.smoothed[-1] > 4 * min(r.smoothed)
    assert 1e-7 <= r.suggestion < r.lrs[-1]
    assert r.rule == "steepest" and r.path == tmp_path / "sgd.png" and r.path.stat().st_size > 10_000
    assert str(r) == f"suggested learning rate {r.suggestion:.1e} (steepest descent of the smoothed loss); plot: {r.path}"


def test_cli_writes_the_plot_beside_the_run_and_prints_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli

    monkeypatch.chdir(tmp_path)
    args = ["lr-find", "--dataset", "digits", "--train-size", "256", "-b", "64", "--activation", "relu", "--pool",
            "max", "--steps", "30"]
    result = CliRunner().invoke(cli, args + ["--name", "small"])  # valley: the default rule
    assert result.exit_code == 0, result.output
    line = r"suggested learning rate \d\.\de[-+]\d\d \({}\); plot: {}\n"
    assert re.fullmatch(line.format(r"valley rule: [^)]*", re.escape("saved_models/small.lr_find.png")),
                        result.output), result.output
    assert (tmp_path / "saved_models" / "small.lr_find.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "saved_models").iterdir()) == ["small.lr_find.png"]  # nothing else
    result = CliRunner().invoke(cli, args + ["--suggest", "steepest", "--output", "plots/lr.png"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(line.format("steepest descent of the smoothed loss", "plots/lr.png"), result.output)
    assert (tmp_path / "plots" / "lr.png").exists()


@pytest.mark.parametrize("args, message", [
    (("--steps", "5"), "--steps must be a whole number of at least 10, got 5"),
    (("--start-lr", "0"), "--start-lr must be a positive number, got 0.0"),
    (("--end-lr", "1e-8"), "--end-lr 1e-08 must be above --start-lr 1e-07"),
    (("--output", "plot.jpg"), "--output plot.jpg: lr-find writes a PNG image"),
    (("--suggest", "middle"), "Invalid value for '--suggest'"),
    (("--lr", "-1"), "--lr must be positive"),
    (("--schedule", "onecycle", "--decay-after", "2"), "--decay-after does not apply to --schedule onecycle"),
    (("--resume",), "No such option '--resume'"),
])
def test_bad_options_get_one_line_and_exit_2(args, message, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "lr-find", "--dataset", "digits", *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())  # nothing written

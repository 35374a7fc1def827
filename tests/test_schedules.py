"""kerascnn.optim.schedules: the per-epoch schedules, one-cycle and the warm-up wrapper against hand-worked numbers and
PyTorch's OneCycleLR, in fit (the lr column, warm-up, plateau, resume, and checkpoints from before the per-epoch
schedules were the optimizer's) and saved models that load in safe mode under every backend."""

import importlib.util
import json
import textwrap

import keras
import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.config.choices import EPOCH_SCHEDULES
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import RunFiles
from kerascnn.optim.schedules import EpochRates, LinearWarmup, OneCycle, schedule_function
from kerascnn.training.fit import fit
from tests.test_backend import needs, run_under

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)


def values(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(s))) for s in steps]


@pytest.mark.core
def test_onecycle_against_numbers_worked_out_by_hand():
    """40 steps at peak 1: the rise ends at step 0.25 * 40 - 1 = 9, the fall at 39. From 1/25 = 0.04;
    step 3 is a third of the rise: 1 + (0.04 - 1) (1 + cos(pi/3)) / 2 = 0.28; step 24 halfway down:
    (1 + 4e-6) / 2; the last step and after: 0.04 / 1e4 = 4e-6."""
    got = values(OneCycle(1.0, 40), [0, 3, 9, 24, 39, 40, 100])
    assert got == pytest.approx([0.04, 0.28, 1.0, 0.500002, 4e-6, 4e-6, 4e-6], rel=1e-5)
    rates = values(OneCycle(0.1, 40), range(40))
    assert np.argmax(rates) == 9 and all(np.diff(rates[:10]) > 0) and all(np.diff(rates[9:]) < 0)


@pytest.mark.core
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_onecycle_is_pytorchs_onecyclelr():
    import torch

    for total in (1, 2, 5, 12, 101, 1000):
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weight], lr=0.1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total, pct_start=0.25)
        expected = []
        for _ in range(total):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert values(OneCycle(0.1, total), range(total)) == pytest.approx(expected, rel=1e-4), total


@pytest.mark.core
def test_warmup_ramps_any_schedule_and_both_survive_serialization():
    warm = LinearWarmup(OneCycle(1.0, 40), 4)
    ramp = [0.25, 0.5, 0.75, 1.0, 1.0]
    assert values(warm, range(5)) == pytest.approx([r * v for r, v in zip(ramp, values(OneCycle(1.0, 40), range(5)))])
    assert values(LinearWarmup(0.1, 2), range(3)) == pytest.approx([0.05, 0.1, 0.1])
    for schedule in (warm, LinearWarmup(0.1, 2), OneCycle(0.3, 7)):
        config = keras.saving.serialize_keras_object(schedule)
        assert config["registered_name"].startswith("kerascnn>")
        with keras.saving.custom_object_scope({}):
            again = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)), safe_mode=True)
        assert values(again, range(12)) == values(schedule, range(12))


def rates_per_step():
    """A callback that keeps the rate each training step runs at."""
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    return Rates(), rates


def test_onecycle_in_fit_runs_per_step_and_logs_each_epochs_last_rate(tmp_path):
    """256 images in batches of 64: 4 steps an epoch, 12 in 3 epochs; the lr column is the rate of each epoch's
    last step (3, 7, 11), the last being lr / 25e4. With warm-up over half an epoch (2 steps), steps 0 and 1
    train at 1/2 and 2/2 of the one-cycle rate."""
    callback, rates = rates_per_step()
    r = fit("lenet", epochs=3, optimizer="adam", lr=0.01, schedule="onecycle", callbacks=[callback],
            output=tmp_path / "a", **SMALL)
    expected = values(OneCycle(0.01, 12), range(12))
    assert rates == pytest.approx(expected, rel=1e-6)
    assert [row["lr"] for row in r.history] == pytest.approx([expected[3], expected[7], expected[11]], rel=1e-6)
    assert expected[11] == pytest.approx(0.01 / 25e4, rel=1e-4)
    assert r.history[-1]["loss"] < r.history[0]["loss"]

    callback, rates = rates_per_step()
    fit("lenet", epochs=3, optimizer="adam", lr=0.01, schedule="onecycle", warmup=0.5, callbacks=[callback],
        output=tmp_path / "b", **SMALL)
    assert rates == pytest.approx([expected[0] / 2] + expected[1:], rel=1e-6)


class Interrupt(keras.callbacks.Callback):
    """Presses Ctrl-C before batch `batch` (from 1) of epoch `epoch` (from 1)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            raise KeyboardInterrupt


def test_interrupted_onecycle_run_resumes_exactly(tmp_path):
    run = dict(SMALL, epochs=3, optimizer="adam", lr=0.01, schedule="onecycle", warmup=0.5, augment="flip", seed=2)
    whole = fit("lenet", output=tmp_path / "whole", **run)
    with pytest.raises(KerasCNNError, match="interrupted after epoch 1"):
        fit("lenet", output=tmp_path / "cut", callbacks=[Interrupt(2, 3)], **run)
    resumed = fit("lenet", output=tmp_path / "cut", resume=True, **run)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_onecycle_refuses_what_cannot_apply_and_resume_refuses_a_change(tmp_path):
    with pytest.raises(KerasCNNError, match=r"decay_after does not apply to schedule='onecycle'.*leave decay_after out"):
        fit("lenet", schedule="onecycle", decay_after=2, output=tmp_path, **SMALL)
    fit("lenet", epochs=1, schedule="onecycle", output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match=r"in: epochs \(the onecycle schedule spans them\)"):
        fit("lenet", epochs=2, schedule="onecycle", resume=True, output=tmp_path, **SMALL)
    with pytest.raises(KerasCNNError, match="in: schedule"):
        fit("lenet", epochs=2, schedule="cosine", resume=True, output=tmp_path, **SMALL)


SAVE = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from kerascnn.runs import storage
    from kerascnn.optim.schedules import LinearWarmup, OneCycle
    from kerascnn.training.plan import compile_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    compile_model(model, keras.optimizers.Adam(LinearWarmup(OneCycle(0.01, 20), 3)))
    x, y = np.ones((8, 4), "float32"), np.arange(8) % 3
    for _ in range(5):
        model.train_on_batch(x, y)
    storage.save_model(model, sys.argv[1])
""")

LOAD = textwrap.dedent("""
    import json, sys
    import keras
    import kerascnn.optim.schedules  # registers the schedules
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    optimizer = model.optimizer
    print(json.dumps({"config": keras.saving.serialize_keras_object(optimizer._learning_rate),
                      "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                      "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate))}))
""")


@pytest.mark.parametrize("backend", [pytest.param(b, marks=needs(b)) for b in ("jax", "torch")])
def test_onecycle_model_saved_under_tensorflow_loads_in_safe_mode_under(backend, tmp_path):
    path = str(tmp_path / "onecycle.keras")
    saved = run_under("tensorflow", ["-c", SAVE, path])
    assert saved.returncode == 0, saved.stderr[-3000:]
    loaded = run_under(backend, ["-c", LOAD, path])
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert got["config"]["registered_name"] == "kerascnn>LinearWarmup"
    assert got["config"]["config"]["schedule"]["config"]["total_steps"] == 20
    assert got["iterations"] == 5
    assert got["lr"] == pytest.approx(values(LinearWarmup(OneCycle(0.01, 20), 3), [5])[0], rel=1e-6)


# lr 1e-3 over 3 epochs with decay_after=1 (rate: step 0.7, exponential 0.9), worked out by hand:
# step decays every epoch after epoch 1; exponential and cosine hold epoch 1, then start their curve,
# cosine's over the 2 epochs left: 0.5 * (1 + cos(pi * k / 2)) * lr at its k-th epoch = 1e-3, 5e-4
LOGGED_RATES = {
    "constant": [1e-3, 1e-3, 1e-3],
    "step": [1e-3, 7e-4, 4.9e-4],
    "exponential": [1e-3, 1e-3, 9e-4],
    "cosine": [1e-3, 1e-3, 5e-4],
}


@pytest.mark.parametrize("name", EPOCH_SCHEDULES)  # onecycle, per step: tests/test_schedules.py
def test_every_schedule_trains_and_logs_its_rate(tmp_path, name):
    r = fit("lenet", epochs=3, schedule=name, decay_after=1, output=tmp_path, **SMALL)
    rates = [row["lr"] for row in r.history]
    if name == "plateau":  # follows the validation loss: tested below
        assert rates[0] == pytest.approx(1e-3, rel=1e-6)
    else:
        assert rates == pytest.approx(LOGGED_RATES[name], rel=1e-6)
    assert r.config["schedule"] == name


def test_schedules_against_numbers_worked_out_by_hand():
    """Each schedule's rate per epoch (from 0), written out, not recomputed by the code under test."""
    step = schedule_function("step", 0.1, 5, decay_rate=0.5, decay_after=2)
    assert [step(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125])
    exponential = schedule_function("exponential", 1.0, 4)  # x0.9 per epoch from the second
    assert [exponential(e) for e in range(4)] == pytest.approx([1.0, 0.9, 0.81, 0.729])
    exponential = schedule_function("exponential", 1.0, 5, decay_rate=0.5, decay_after=2)
    assert [exponential(e) for e in range(5)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.25])
    # cosine over 4 epochs: 0.5 * (1 + cos(pi * k / 4)) * 0.1 = 0.1, (1 + sqrt(2) / 2) / 20, 0.05, (1 - sqrt(2) / 2) / 20
    cosine = schedule_function("cosine", 0.1, 4)
    assert [cosine(e) for e in range(4)] == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447], rel=1e-5)
    assert cosine(4) == pytest.approx(0.0, abs=1e-12) and cosine(9) == pytest.approx(0.0, abs=1e-12)
    cosine = schedule_function("cosine", 0.1, 6, decay_after=2)  # holds 2 epochs, then the same curve
    assert [cosine(e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.1, 0.0853553, 0.05, 0.0146447], rel=1e-5)
    constant = schedule_function("constant", 0.3, 3)
    assert [constant(e) for e in range(3)] == [0.3, 0.3, 0.3]


def test_step_schedule_is_the_seed_reports_rule(tmp_path):
    """x0.7 every epoch after epoch 10: epochs 1-10 at lr, 11 at 0.7 lr, 12 at 0.49 lr."""
    fn = schedule_function("step", 0.1, 12)
    assert [fn(e) for e in range(12)] == pytest.approx([0.1] * 10 + [0.07, 0.049])
    r = fit("lenet", epochs=4, optimizer="momentum", lr=0.1, schedule="step", decay_after=2, output=tmp_path,
            **SMALL)
    assert [row["lr"] for row in r.history] == pytest.approx([0.1, 0.1, 0.07, 0.049])


def test_cosine_reaches_zero_and_plateau_reduces(tmp_path):
    fn = schedule_function("cosine", 1.0, 10)
    assert fn(0) == 1.0 and fn(5) == pytest.approx(0.5) and fn(10) == pytest.approx(0.0)
    # plateau: at a negligible rate the validation loss cannot improve, so the
    # rate is halved after every epoch without improvement (patience 1)
    r = fit("lenet", epochs=4, optimizer="sgd", lr=1e-9, schedule="plateau", decay_after=1, output=tmp_path,
            **SMALL)
    assert [row["lr"] for row in r.history] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10], rel=1e-6)


def test_warmup_ramps_the_rate_linearly_then_hands_over_to_the_schedule(tmp_path):
    Rates, rates = rates_per_step()
    # 256 images, batch 64: 4 steps per epoch; warm-up over 1.5 epochs = 6 steps
    r = fit("lenet", epochs=3, optimizer="momentum", lr=0.1, schedule="step", decay_after=2, warmup=1.5,
            callbacks=[Rates], output=tmp_path, **SMALL)
    expected = [0.1 * (s + 1) / 6 for s in range(6)] + [0.1] * 2 + [0.07] * 4
    assert rates == pytest.approx(expected, rel=1e-6)
    assert [row["lr"] for row in r.history] == pytest.approx([0.1 * 4 / 6, 0.1, 0.07], rel=1e-6)
    assert r.config["warmup"] == 1.5 and r.settings.warmup == 1.5


def test_epoch_rates_hold_each_epochs_rate_for_its_steps_and_save():
    schedule = EpochRates([0.1, 0.07, 0.049], 4)
    assert values(schedule, range(14)) == pytest.approx([0.1] * 4 + [0.07] * 4 + [0.049] * 6)
    config = keras.saving.serialize_keras_object(schedule)
    assert config["registered_name"] == "kerascnn>EpochRates"
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)), safe_mode=True)
    assert values(again, range(14)) == values(schedule, range(14))


def test_a_checkpoint_from_before_per_step_schedules_resumes_into_its_schedule(tmp_path):
    """Runs saved while callbacks set the per-epoch rates hold a plain rate in their optimizer. Resumed, they
    continue on their schedule (here step, decaying after epoch 2), ending with the weights of a run that had
    it from its start: an epoch-1 checkpoint of a constant-rate run, recorded as a step run, stands for one."""
    run = dict(SMALL, epochs=3, optimizer="momentum", lr=0.1, decay_after=2, seed=1)
    whole = fit("lenet", output=tmp_path / "whole", schedule="step", **run)
    with pytest.raises(KerasCNNError, match="interrupted after epoch 1"):
        fit("lenet", output=tmp_path / "old", schedule="constant", callbacks=[Interrupt(2, 2)], **run)
    last = RunFiles(tmp_path / "old", "lenet").in_progress("last")
    assert isinstance(storage.load_model(last).optimizer.learning_rate, keras.Variable)  # a plain rate, as before
    record = storage.read_state(last)["config"]
    storage.update_state(last, config={**record, "schedule": "step", "given": {**record["given"], "schedule": "step"}})
    resumed = fit("lenet", output=tmp_path / "old", schedule="step", resume=True, **run)
    assert [row["lr"] for row in resumed.history] == pytest.approx([0.1, 0.1, 0.07], rel=1e-6)
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)

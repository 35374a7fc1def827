"""Checkpoints, kill -9 and --resume, seeded determinism."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn import io

RUN = dict(arch="lenet", dataset="digits", epochs=4, batch_size=128, activation="relu", pool="max",
           augment="crop,flip", train_size=600, seed=3, verbose=0)

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    from kerascnn.train import fit

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
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


def history(path):
    rows = json.loads(io.sidecar(path, "history.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_kill_and_resume_match_an_uninterrupted_run(tmp_path):
    whole = run_fit({**RUN, "output": str(tmp_path / "whole")})
    assert whole.returncode == 0, whole.stderr

    killed = run_fit({**RUN, "output": str(tmp_path / "cut")}, kill_at=[3, 2])
    assert killed.returncode == -signal.SIGKILL
    cut = tmp_path / "cut"
    assert not (cut / "lenet.keras").exists()  # no final model from a killed run
    partial = cut / "lenet.partial"
    assert io.read_state(partial / "last.keras")["epoch"] == 2
    assert not [p for p in partial.iterdir() if p.name.startswith(".")]  # no temporary files left

    # the same command again without --resume refuses to discard the run
    again = run_fit({**RUN, "output": str(cut)})
    assert again.returncode != 0 and "add resume=True to continue it" in again.stderr

    resumed = run_fit({**RUN, "output": str(cut), "resume": True})
    assert resumed.returncode == 0, resumed.stderr
    assert history(cut / "lenet.keras") == history(tmp_path / "whole" / "lenet.keras")
    assert not partial.exists()  # the finished run's checkpoints moved beside the model
    assert io.read_state(cut / "lenet.last.keras")["epoch"] == 4
    for a, b in zip(weights(cut / "lenet.keras"), weights(tmp_path / "whole" / "lenet.keras")):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_history_and_different_seed_differs(tmp_path):
    from kerascnn.train import fit

    kwargs = {**RUN, "epochs": 2}
    a = fit(**kwargs, output=tmp_path / "a")
    b = fit(**kwargs, output=tmp_path / "b")
    c = fit(**{**kwargs, "seed": 4}, output=tmp_path / "c")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_checkpoints_best_last_every_n(tmp_path):
    from kerascnn.train import fit

    r = fit(**{**RUN, "epochs": 3, "augment": None}, save_every=2, output=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "lenet.partial" not in names
    assert {"lenet.best.keras", "lenet.last.keras", "lenet.epoch-002.keras", "lenet.keras"} <= set(names)
    assert "lenet.epoch-001.keras" not in names and "lenet.epoch-003.keras" not in names
    assert not [n for n in names if n.startswith(".")]
    best = io.read_state(tmp_path / "lenet.best.keras")
    val = [row["val_accuracy"] for row in r.history]
    assert best["epoch"] == int(np.argmax(val)) + 1  # first epoch with the best val accuracy
    assert io.read_state(tmp_path / "lenet.last.keras")["epoch"] == 3
    # a checkpoint is a plain Keras model too
    np.testing.assert_array_equal(weights(tmp_path / "lenet.last.keras")[0], r.model.get_weights()[0])


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path):
    import keras

    from kerascnn.models import build_model

    model = build_model("lenet", input_shape=(28, 28, 1), num_classes=10)
    path = tmp_path / "m.keras"
    io.save_model(model, path, state={"epoch": 1})
    before = path.read_bytes()

    class Broken(keras.Model):
        def save(self, filepath, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"half a zip")
            raise OSError("disk full")

    with pytest.raises(OSError):
        io.save_model(Broken(), path, state={"epoch": 2})
    assert path.read_bytes() == before
    assert io.read_state(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_seed_generator_states_round_trip():
    import keras

    from kerascnn.callbacks import seed_generator_states, set_seed_generator_states

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dropout(0.5, name="drop")(inputs))
    x = np.ones((2, 4), "float32")
    saved = seed_generator_states(model)
    first = np.asarray(model(x, training=True))
    set_seed_generator_states(model, saved)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), first)
    assert seed_generator_states(model) != saved


def test_resume_refuses_other_options_and_missing_checkpoint(tmp_path):
    from kerascnn.errors import KerasCNNError
    from kerascnn.train import fit

    with pytest.raises(KerasCNNError, match="no checkpoint"):
        fit(**{**RUN, "epochs": 1}, output=tmp_path, resume=True)
    fit(**{**RUN, "epochs": 1, "augment": None}, output=tmp_path)
    with pytest.raises(KerasCNNError, match="differs .* in: batch_size"):
        fit(**{**RUN, "epochs": 2, "augment": None, "batch_size": 64}, output=tmp_path, resume=True)
    # a finished run can be extended by more epochs
    r = fit(**{**RUN, "epochs": 2, "augment": None}, output=tmp_path, resume=True)
    assert [row["epoch"] for row in r.history] == [1, 2] and r.config["resumed_from"] == 1

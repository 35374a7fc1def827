"""kerascnn.inputs: the jax/torch input path (numpy host batches, the image
work in the training step) and kerascnn without TensorFlow."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kerascnn import inputs, io
from kerascnn.transforms import param_columns

REPO = Path(__file__).resolve().parents[1]


def installed(name):
    return importlib.util.find_spec(name) is not None


BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not installed(b), reason=f"{b} is not installed"))
            for b in ("jax", "torch")]
needs_jax = pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
# A process in which `import tensorflow` fails, as where it is not installed: it must not matter on jax and torch.
# (Not sys.modules["tensorflow"] = None: Keras reads a name in sys.modules as TensorFlow loaded. A finder whose
# loader refuses: torch asks importlib.util.find_spec about TensorFlow, and must not see an error there.)
NO_TF = textwrap.dedent("""\
    import importlib.abc, importlib.machinery, sys
    class NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("tensorflow", "tensorflow_datasets"):
                return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
        def exec_module(self, module):
            pass
    sys.meta_path.insert(0, NoTensorFlow())
""")


def env(backend, **extra):
    return dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                TF_CPP_MIN_LOG_LEVEL="3", **extra)


def python(code, backend, *args, timeout=300, cwd=REPO, block_tf=True, **extra):
    code = (NO_TF if block_tf else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env(backend, KERASCNN_DATA_DIR="", **extra), cwd=cwd, timeout=timeout)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    a = inputs.epoch_order(100, 3, seed=1)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    np.testing.assert_array_equal(a, inputs.epoch_order(100, 3, seed=1))
    assert not np.array_equal(a, inputs.epoch_order(100, 4, seed=1))
    assert not np.array_equal(a, inputs.epoch_order(100, 3, seed=2))
    np.testing.assert_array_equal(inputs.epoch_order(10, 5, sampling="sequential"), np.arange(10))
    boot = inputs.epoch_order(1000, 0, seed=1, sampling="bootstrap")
    assert len(boot) == 1000 and len(np.unique(boot)) < 1000 and boot.max() < 1000


def test_training_batches_stream_as_they_iterate_and_cross_epochs():
    x = np.arange(50 * 4 * 4).reshape(50, 4, 4, 1).astype(np.uint8)
    y = np.arange(50) % 10
    batches = inputs.TrainingBatches(x, y, batch_size=16, epochs=3, initial_epoch=1, seed=5, augment=("flip",))
    assert batches.steps == 4
    listed = list(batches)
    assert len(listed) == 2 * 4 and [len(b[1]) for b in listed[:4]] == [16, 16, 16, 2]
    streamed = list(batches.stream())
    for ((xa, pa), ya), ((xb, pb), yb) in zip(listed, streamed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(ya, yb)
    (first_x, params), first_y = listed[0]
    order = inputs.epoch_order(50, 1, seed=5)[:16]  # epoch 1 comes first when resuming after epoch 1
    np.testing.assert_array_equal(first_x, x[order])
    np.testing.assert_array_equal(first_y, y[order])
    assert params.shape == (16, len(param_columns(("flip",))))
    stream = batches.stream()
    next(stream)
    stream.close()  # a consumer that stops early (early stopping, an error) leaves no thread behind


def test_a_batch_split_over_devices():
    x = np.zeros((37, 4, 4, 1), np.uint8)
    batches = inputs.TrainingBatches(x, np.zeros(37), batch_size=8, epochs=1, multiple=2)
    assert batches.steps == 5 and len(batches.batch(0, 4)[1]) == 4  # 5 left over: 4 kept
    assert inputs.TrainingBatches(x, np.zeros(37), batch_size=12, epochs=1, multiple=2).steps == 3  # 1 left: dropped
    evaluation = inputs.Batches(x, np.arange(37), batch_size=8, multiple=2)
    (images, params), labels, weights = evaluation[4]
    assert len(images) == len(labels) == len(weights) == 6 and weights.tolist() == [1] * 5 + [0]
    assert sum(len(b[1]) for b in evaluation) == 38 and sum(b[2].sum() for b in evaluation) == 37


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_main_job_never_imports_tensorflow(backend, tmp_path):
    """fit, evaluate and visualize as the README runs them, then the other commands, in one process: with
    TensorFlow installed none of them loads it (where it is not, CI's environment without it runs the core
    tests); TensorBoard logs written by the tensorboard package alone."""
    code = """
        import sys
        from kerascnn.cli import main
        for args in sys.argv[1:]:
            try:
                main(args.split())
            except SystemExit as e:
                assert not e.code, (args, e.code)
        assert sys.modules.get("tensorflow") is None and "tensorflow.python" not in sys.modules
        print("no tensorflow")
    """
    out = str(tmp_path / "m")
    commands = [f"fit --arch lenet --activation relu --pool max --dataset digits --epochs 2 --batch-size 64 "
                f"--train-size 512 --augment crop,flip,rotate,translate --output {out} --record-layer conv1 "
                f"--tensorboard {tmp_path / 'tb'}",
                f"evaluate {out}/lenet.keras", f"visualize --layer conv1 --model {out}/lenet.keras",
                f"explain {out}/lenet.keras --method saliency --index 0",
                f"show-batch --arch lenet --dataset digits --augment crop,rotate --output {tmp_path / 'b.png'}",
                f"lr-find --arch lenet --dataset digits --steps 12 --output {tmp_path / 'lr.png'}",
                f"predict {out}/lenet.keras {tmp_path / 'd.png'}",
                f"study --arch lenet --dataset digits --epochs 1 --train-size 256 --vary pool=avg,max "
                f"--output {tmp_path / 'st'}", f"report {tmp_path / 'st'}",
                f"compare {out}/lenet.keras --output {tmp_path / 'c.png'}",
                f"report {out}/lenet.keras", "summary --arch resnet18", "layers --arch lenet"]
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)).save(tmp_path / "d.png")
    proc = python(code, backend, *commands, timeout=600, block_tf=not installed("tensorflow"))
    assert proc.returncode == 0 and "no tensorflow" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout and (Path(out) / "lenet.keras").is_file()
    assert {p.parent.name for p in (tmp_path / "tb").rglob("events.out.tfevents.*")} == {"train", "validation"}


@pytest.mark.skipif(not (installed("jax") or installed("torch")), reason="neither jax nor torch is installed")
def test_a_download_without_tensorflow_is_one_line(tmp_path):
    code = """
        from kerascnn.cli import main
        main(["fit", "--dataset", "mnist", "--epochs", "1"])
    """
    proc = python(code, "jax" if installed("jax") else "torch", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "downloading it needs tensorflow-datasets and TensorFlow" in lines[0]
    assert "--data-dir" in lines[0] and "--dataset digits" in lines[0]


def test_tensorboard_scalars_read_back(tmp_path):
    """The events ScalarBoard writes are what TensorBoard reads: one scalar per metric and epoch."""
    pytest.importorskip("tensorboard")
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kerascnn.callbacks import ScalarBoard

    board = ScalarBoard(tmp_path)
    board.set_model(type("M", (), {"optimizer": keras.optimizers.SGD(0.25)})())
    for epoch in range(3):
        board.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.5, "val_loss": 2.0})
    board.on_train_end()
    train = EventAccumulator(str(tmp_path / "train"))
    train.Reload()
    assert sorted(train.Tags()["scalars"]) == ["epoch_accuracy", "epoch_learning_rate", "epoch_loss"]
    assert [round(e.value, 4) for e in train.Scalars("epoch_loss")] == [1.0, 0.5, 0.3333]
    assert [e.value for e in train.Scalars("epoch_learning_rate")] == [0.25] * 3
    validation = EventAccumulator(str(tmp_path / "validation"))
    validation.Reload()
    assert [e.step for e in validation.Scalars("epoch_loss")] == [0, 1, 2]


@needs_jax
def test_the_jitted_jax_step_holds_the_augmentation():
    """Keras keeps jit_compile on (no silent fallback to eager), and the transform is traced into the
    compiled step a few times, not run step by step."""
    code = """
        import json
        from kerascnn import transforms
        from kerascnn.train import fit
        calls = []
        original = transforms.InputTransform.call
        def counting(self, *args, **kwargs):
            calls.append(1)
            return original(self, *args, **kwargs)
        transforms.InputTransform.call = counting
        r = fit("lenet", "digits", epochs=2, batch_size=32, train_size=640, val_size=0, augment="crop,flip,rotate",
                activation="relu", pool="max", output=__import__("sys").argv[1], verbose=0)
        print(json.dumps({"calls": len(calls), "jit": r.config["jit_compile"], "steps": 2 * 20}))
    """
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        proc = python(code, "jax", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["jit"] is True
    assert 1 <= result["calls"] <= 6 < result["steps"], result  # traced (train, test step), never per step


KILL = """
    import json, os, signal, sys
    import keras
    from kerascnn.train import fit

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
        def on_train_batch_end(self, batch, logs=None):
            if [self.epoch, batch + 1] == json.loads(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit(callbacks=[Kill()], **json.loads(sys.argv[1]))
"""
# Every augmentation and every trick (kerascnn.tricks) at once: all their draws must follow (seed, epoch, batch).
RUN = dict(arch="lenet", dataset="digits", epochs=3, batch_size=100, activation="relu", pool="max",
           augment="crop,flip,rotate,translate", train_size=500, seed=3, verbose=0, mixup=0.2, cutmix=1.0,
           randaugment=True, label_smoothing=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_augmented_run_resumed_after_a_kill_matches_an_uninterrupted_one(backend, tmp_path):
    whole = python(KILL, backend, json.dumps({**RUN, "output": str(tmp_path / "whole")}), "[0, 0]")
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = tmp_path / "cut"
    killed = python(KILL, backend, json.dumps({**RUN, "output": str(cut)}), "[2, 3]")
    assert killed.returncode == -signal.SIGKILL and io.read_state(cut / "lenet.partial" / "last.keras")["epoch"] == 1
    resumed = python(KILL, backend, json.dumps({**RUN, "output": str(cut), "resume": True}), "[0, 0]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(io.sidecar(p, "history.json").read_text()) for p in (tmp_path / "whole" / "lenet.keras",
                                                                           cut / "lenet.keras")]
    assert [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in rows][0] == \
        [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in rows][1]
    for a, b in zip(io.load_model(tmp_path / "whole" / "lenet.keras").get_weights(),
                    io.load_model(cut / "lenet.keras").get_weights()):
        np.testing.assert_array_equal(a, b)

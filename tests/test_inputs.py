"""kerascnn.data.host: the jax/torch input path (numpy host batches, the image
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

from kerascnn.data import host, sampling
from kerascnn.training import trainer

from kerascnn.runs import storage
from kerascnn.data.device_transforms import param_columns

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


def test_training_batches_stream_as_they_iterate_and_cross_epochs():
    x = np.arange(50 * 4 * 4).reshape(50, 4, 4, 1).astype(np.uint8)
    y = np.arange(50) % 10
    batches = host.TrainingBatches(x, y, batch_size=16, epochs=3, initial_epoch=1, seed=5, augment=("flip",))
    assert batches.steps == 4
    listed = list(batches)
    assert len(listed) == 2 * 4 and [len(b[1]) for b in listed[:4]] == [16, 16, 16, 2]
    streamed = list(batches.stream())
    for ((xa, pa), ya), ((xb, pb), yb) in zip(listed, streamed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(ya, yb)
    (first_x, params), first_y = listed[0]
    order = sampling.epoch_order(50, 1, seed=5)[:16]  # epoch 1 comes first when resuming after epoch 1
    np.testing.assert_array_equal(first_x, x[order])
    np.testing.assert_array_equal(first_y, y[order])
    assert params.shape == (16, len(param_columns(("flip",))))
    stream = batches.stream()
    next(stream)
    stream.close()  # a consumer that stops early (early stopping, an error) leaves no thread behind


def test_a_batch_split_over_devices():
    x = np.zeros((37, 4, 4, 1), np.uint8)
    batches = host.TrainingBatches(x, np.zeros(37), batch_size=8, epochs=1, multiple=2)
    assert batches.steps == 5 and len(batches.batch(0, 4)[1]) == 4  # 5 left over: 4 kept
    assert host.TrainingBatches(x, np.zeros(37), batch_size=12, epochs=1, multiple=2).steps == 3  # 1 left: dropped
    evaluation = host.Batches(x, np.arange(37), batch_size=8, multiple=2)
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
        from kerascnn.cli.commands import main
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
@pytest.mark.parametrize("dataset, says", [
    ("mnist", ["downloading it needs tensorflow-datasets and TensorFlow", "--data-dir", "--dataset digits"]),
    ("tfds:cifar100", ["error: tfds:cifar100 needs tensorflow-datasets and TensorFlow", "--dataset DIR"]),
])
def test_a_download_without_tensorflow_is_one_line(tmp_path, dataset, says):
    code = f"""
        from kerascnn.cli.commands import main
        main(["fit", "--dataset", "{dataset}", "--epochs", "1"])
    """
    proc = python(code, "jax" if installed("jax") else "torch", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(part in lines[0] for part in says), lines
    assert not list(tmp_path.iterdir())


def test_tensorboard_scalars_read_back(tmp_path):
    """The events ScalarBoard writes are what TensorBoard reads: one scalar per metric and epoch."""
    pytest.importorskip("tensorboard")
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kerascnn.training.callbacks import ScalarBoard

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
        from kerascnn.data import device_transforms
        from kerascnn.training.fit import fit
        calls = []
        original = device_transforms.InputTransform.call
        def counting(self, *args, **kwargs):
            calls.append(1)
            return original(self, *args, **kwargs)
        device_transforms.InputTransform.call = counting
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
    from kerascnn.training.fit import fit

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
        def on_train_batch_end(self, batch, logs=None):
            if [self.epoch, batch + 1] == json.loads(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit(callbacks=[Kill()], **json.loads(sys.argv[1]))
"""
# Every augmentation and every trick (kerascnn.data.tricks) at once: all their draws must follow (seed, epoch, batch).
RUN = dict(arch="lenet", dataset="digits", epochs=3, batch_size=100, activation="relu", pool="max",
           augment="crop,flip,rotate,translate", train_size=500, seed=3, verbose=0, mixup=0.2, cutmix=1.0,
           randaugment=True, label_smoothing=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_augmented_run_resumed_after_a_kill_matches_an_uninterrupted_one(backend, tmp_path):
    whole = python(KILL, backend, json.dumps({**RUN, "output": str(tmp_path / "whole")}), "[0, 0]")
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = tmp_path / "cut"
    killed = python(KILL, backend, json.dumps({**RUN, "output": str(cut)}), "[2, 3]")
    assert killed.returncode == -signal.SIGKILL and storage.read_state(cut / "lenet.partial" / "last.keras")["epoch"] == 1
    resumed = python(KILL, backend, json.dumps({**RUN, "output": str(cut), "resume": True}), "[0, 0]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(storage.sidecar(p, "history.json").read_text()) for p in (tmp_path / "whole" / "lenet.keras",
                                                                           cut / "lenet.keras")]
    assert [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in rows][0] == \
        [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in rows][1]
    for a, b in zip(storage.load_model(tmp_path / "whole" / "lenet.keras").get_weights(),
                    storage.load_model(cut / "lenet.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


# The training set on the device (data_on_device): the same run as on the host, to the last bit.
ON_DEVICE = """
    import json, sys, zipfile
    import numpy as np
    import keras
    from kerascnn.runs import storage
    from kerascnn.training.fit import fit

    class Buffers(keras.callbacks.Callback):
        '''The device buffer of the uint8 training set in the state of every jitted step (jax).'''
        def __init__(self):
            super().__init__()
            self.pointers = []
        def on_train_batch_end(self, batch, logs=None):
            held = [a for a in self.model._jax_state["non_trainable_variables"] if a.dtype == np.uint8]
            self.pointers.append(held[0].unsafe_buffer_pointer())

    options = dict(arch="lenet", dataset="digits", epochs=2, batch_size=64, activation="relu", pool="max",
                   augment="crop,flip", mixup=0.2, train_size=500, seed=3, verbose=0)
    out = sys.argv[1]
    buffers = Buffers()
    extra = [buffers] if keras.backend.backend() == "jax" else []
    runs = {"off": fit(output=out + "/off", data_on_device="off", **options),
            "on": fit(output=out + "/on", data_on_device="on", callbacks=extra, **options)}
    fit(output=out + "/resumed", data_on_device="on", **{**options, "epochs": 1})
    runs["resumed"] = fit(output=out + "/resumed", data_on_device="on", resume=True, **options)
    fit(output=out + "/switched", data_on_device="on", **{**options, "epochs": 1})
    runs["switched"] = fit(output=out + "/switched", data_on_device="off", resume=True, **options)

    def weights_entry(path):
        with zipfile.ZipFile(path) as z:
            return z.getinfo("model.weights.h5").file_size
    print(json.dumps({
        "placement": {k: r.record["data_on_device"] for k, r in runs.items()},
        "weights": {k: [w.tolist() for w in storage.load_model(r.model_path).get_weights()] for k, r in runs.items()},
        "dtypes": sorted({str(w.dtype) for w in storage.load_model(runs["on"].model_path).weights}),
        "entry": {k: weights_entry(r.model_path) for k, r in runs.items()},
        "last": {k: weights_entry(storage.sidecar(runs[k].model_path, "last.keras")) for k in ("off", "on")},
        "history": {k: [{m: v for m, v in row.items() if m != "seconds"} for row in r.history]
                    for k, r in runs.items()},
        "pointers": buffers.pointers}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_training_set_on_the_device_trains_as_on_the_host(backend, tmp_path):
    """data_on_device on (indices to the step, the images gathered there) gives bit for bit the weights and
    history of the host path, with augmentation and mixup; a resumed device-data run continues exactly, also
    resumed on the host; the saved files hold the network alone; under jax the set stays in one device buffer
    through every step and validation (the jitted step donates it and returns it, never a copy)."""
    proc = python(ON_DEVICE, backend, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["placement"] == {"off": "off", "on": "on", "resumed": "on", "switched": "off"}
    for name in ("on", "resumed", "switched"):
        assert result["history"][name] == result["history"]["off"], name
        for a, b in zip(result["weights"][name], result["weights"]["off"], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert result["dtypes"] == ["float32"]  # no uint8 variable saved
    assert len(set(result["entry"].values())) == 1 and result["last"]["on"] == result["last"]["off"]
    if backend == "jax":
        assert len(result["pointers"]) == 2 * 8 and len(set(result["pointers"])) == 1, result["pointers"]


@pytest.mark.core
def test_the_training_model_holds_the_set_apart_from_what_trains():
    """The set is a uint8 variable whatever the dtype policy, outside the trainable weights; indices give
    what the images themselves give."""
    import keras

    from kerascnn.models import build_model
    from kerascnn.data.device_transforms import InputTransform

    images = np.random.default_rng(0).integers(0, 256, (20, 12, 12, 1)).astype(np.uint8)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        net = build_model("lenet", input_shape=[12, 12, 1], num_classes=3, activation="relu", pool="max")
        model = trainer.TrainingModel(net, InputTransform((12, 12, 1), [0.5], [0.25]), images)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.images.dtype == "uint8" and not model.images.trainable
    assert all(v.dtype != "uint8" for v in model.trainable_variables)
    assert all(v.dtype != "uint8" for v in net.weights)
    params = np.zeros((4, 1), np.float32)
    index = np.array([3, 0, 19, 3], np.int32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model((index, params))),
                                  keras.ops.convert_to_numpy(model((images[index], params))))


def test_training_batches_give_indices_in_the_same_order():
    x = np.arange(30 * 2 * 2).reshape(30, 2, 2, 1).astype(np.uint8)
    y = np.arange(30) % 7
    kwargs = dict(batch_size=8, epochs=2, seed=4, augment=("crop", "flip"), image_size=2)
    host_batches, device_batches = (host.TrainingBatches(x, y, indices=i, **kwargs) for i in (False, True))
    for on_host, on_device in zip(host_batches, device_batches, strict=True):
        ((images, params), labels), ((index, same_params), same_labels) = on_host, on_device
        assert index.dtype == np.int32 and index.ndim == 1
        np.testing.assert_array_equal(x[index], images)
        np.testing.assert_array_equal(params, same_params)
        np.testing.assert_array_equal(labels, same_labels)


def test_where_the_training_set_goes(monkeypatch):
    from kerascnn.training import plan
    from kerascnn.config.spelling import OptionError

    lines = []
    resolve = plan.resolve_data_on_device
    assert resolve("auto", 10**6, "jax", echo=lines.append) == "off" and "no GPU visible" in lines[-1]
    assert resolve("on", 10**6, "torch", echo=lines.append) == "on"
    assert lines[-1] == "training set (1.0 MiB of uint8): on the device, gathered by index in the step " \
                        "(data_on_device='on')"
    assert resolve("auto", 10**6, "tensorflow", accelerator=True) == "off"
    assert resolve("auto", 10**6, "jax", "data-parallel", accelerator=True) == "off"
    monkeypatch.setattr(plan, "free_device_memory", lambda: 4 * 10**6)
    assert resolve("auto", 10**6, "jax", accelerator=True) == "on"
    assert resolve("auto", 10**6 + 1, "torch", accelerator=True, echo=lines.append) == "off"
    assert "more than 1/4 of its 4 MiB free" in lines[-1]
    assert resolve("off", 10**6, "jax", accelerator=True) == "off"
    with pytest.raises(OptionError, match="data_on_device='on'.* needs the jax or torch backend"):
        resolve("on", 10**6, "tensorflow")
    with pytest.raises(OptionError, match="does not combine with distribute"):
        resolve("on", 10**6, "jax", "data-parallel")


def test_the_placement_is_recorded_and_a_resume_may_change_it():
    from kerascnn.config.options import FitConfig, with_added
    from kerascnn.runs.files import mismatches, record

    def run(placement):
        return record(FitConfig(), FitConfig(batch_size=32, data_on_device=placement))

    assert run("on")["data_on_device"] == "on"
    assert mismatches(run("on"), run("off")) == []
    older = {k: v for k, v in run("off").items() if k != "data_on_device"}  # a run.json from before the option
    assert with_added(older)["data_on_device"] == "off" and mismatches(older, run("on")) == []

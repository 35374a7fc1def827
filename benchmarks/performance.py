"""Where kerascnn's training time goes on a CPU, against what a user would
write without it: six sections, each configuration in its own process, one
after another.

    python benchmarks/performance.py                       # every section (about 1 h on 2 cores)
    python benchmarks/performance.py --only side-by-side backends
    python benchmarks/performance.py --only archs --arch lenet resnet18
    python benchmarks/performance.py --quick --results /tmp/performance.json   # smoke test, minutes
    python benchmarks/performance.py --write-docs          # docs/performance.md from the results

Sections (`--only`):
  archs         images/s of fit's own path for every architecture at its CPU size and batch size
  side-by-side  LeNet and ResNet-18 through kerascnn, a bare model.fit, a plain PyTorch loop (eager and
                torch.compile); the machine's sgemm rate and the share of it each reaches
  backends      kerascnn on each Keras backend against a training step written in that framework
  pipeline      make_training_pipeline alone at 32, 96 and 224 px beside the training step at that size
  startup       evaluate's images/s; from `kerascnn fit` to its first training step; peak RSS of fits
  scaling       epoch time against image size and batch size (docs/images/performance_scaling.png)
  profile       the training step phase by phase (forward, backward, optimizer), TensorFlow against PyTorch
  scale-out     one process against two: fit with MultiWorkerMirroredStrategy on 1 and 2 workers
                (127.0.0.1, TF_CONFIG), and a study in one process against two `--shard` processes

Fashion-MNIST comes through kerascnn's loader (KERASCNN_DATA_DIR, else
../shared/data). Every invocation first measures the machine's sgemm rate.
A section's results replace its entry in the results JSON
(benchmarks/results/performance.json; --quick without --results writes to
the temporary folder); `--write-docs` renders docs/performance.md and the
plot from it, and refuses to write the committed doc from --quick results.
Run it with nothing else on the machine.
"""

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from backends import cpu_model  # benchmarks/backends.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "performance.json"
DOC = REPO / "docs" / "performance.md"
PLOT = "performance_scaling.png"
SECTIONS = ("archs", "side-by-side", "backends", "pipeline", "startup", "scaling", "profile", "scale-out")
ARCHS = ("lenet", "alexnet", "vgg11", "vgg16", "nin", "googlenet", "resnet18", "mobilenet")  # choices.ARCH_NAMES
FASHION_TRAIN = 54_000  # Fashion-MNIST's training images after fit's default 10% validation split
RELU_LENET = {"activation": "relu", "pool": "max"}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each section measures: the real run, or --quick's smoke test."""

    steps: int = 30  # archs: batches in each timed epoch
    repeats: int = 2  # timed epochs after the warm-up epoch
    batch_cap: int = None  # --quick: no batch larger than this
    lenet_images: int = None  # side-by-side LeNet: None = all 60,000
    resnet_steps: int = 40  # side-by-side ResNet-18: batches an epoch
    compile_resnet: bool = True  # torch.compile of ResNet-18 (minutes of compilation)
    sgemm_n: int = 2048
    pipeline_sizes: tuple = (32, 96, 224)
    pipeline_steps: int = 200
    consumer_steps: int = 5
    scaling_sizes: dict = dataclasses.field(default_factory=lambda: {"lenet": (28, 56, 96, 160, 224),
                                                                     "resnet18": (32, 64, 96, 160, 224)})
    scaling_batches: tuple = (32, 64, 128, 256)
    scaling_pixels: int = 4096 * 28 * 28  # pixels of a timed scaling epoch (2 to 20 batches)
    startup_images: dict = dataclasses.field(default_factory=lambda: {"lenet": None, "resnet18": 4096})
    # LeNet at batch 250: 216 steps an epoch, 12 a call (256 makes 211, a prime: 1 a call)
    scale_out: dict = dataclasses.field(default_factory=lambda: {"lenet": (250, None, 3), "resnet18": (64, 2560, 3)})
    study_images: int = 10_000
    profile_repeats: int = 30
    profile_op_steps: int = 10
    timeout: int = 3600

    def batch(self, size):
        return min(size, self.batch_cap) if self.batch_cap else size


FULL = Budget()
QUICK = Budget(steps=2, repeats=1, batch_cap=16, lenet_images=256, resnet_steps=2, compile_resnet=False, sgemm_n=256,
               pipeline_sizes=(32, 64), pipeline_steps=3, consumer_steps=2,
               scaling_sizes={"lenet": (28, 32), "resnet18": (32,)}, scaling_batches=(8, 16),
               scaling_pixels=32 * 28 * 28, startup_images={"lenet": 512, "resnet18": 128},
               scale_out={"lenet": (32, 512, 2), "resnet18": (16, 128, 2)}, study_images=256, profile_repeats=3,
               profile_op_steps=2,
               timeout=300)


# ----------------------------------------------------------------------------- the machine


def memory_gb():
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        return round(kb / 2**20, 1)
    except (OSError, StopIteration):
        return None


def machine():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def versions():
    """Installed versions, read without importing the packages."""
    found = {}
    for package in ("keras", "tensorflow", "jax", "jaxlib", "torch", "torchvision", "flax", "optax", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


# ----------------------------------------------------------------------------- running one configuration


def child_env(backend, data_dir):
    return dict(os.environ, KERAS_BACKEND=backend, KERASCNN_DATA_DIR=str(data_dir), TF_CPP_MIN_LOG_LEVEL="3",
                CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def run_children(jobs, timeout):
    """Run every (argv, env, cwd) of `jobs` at once, to their ends: a
    run_child tuple for each."""
    with tempfile.TemporaryDirectory() as folder:
        start, procs = time.perf_counter(), []
        for i, (argv, env, cwd) in enumerate(jobs):
            out, err = open(Path(folder) / f"{i}.out", "w+"), open(Path(folder) / f"{i}.err", "w+")
            procs.append((subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd, text=True,
                                           start_new_session=True), out, err))
        done = {}
        while len(done) < len(procs):
            for i, (proc, _, _) in enumerate(procs):
                if i in done:
                    continue
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if not pid and time.perf_counter() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                if pid:
                    done[i] = (os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024)
            time.sleep(0.05)
        results = []
        for i, (proc, out, err) in enumerate(procs):
            out.seek(0)
            err.seek(0)
            code, wall, rss = done[i]
            results.append((code, out.read(), err.read(), wall, rss))
            out.close()
            err.close()
        return results


def run_child(argv, env, timeout, cwd=None):
    """Run `argv` to its end: (return code, stdout, stderr, wall seconds,
    peak RSS in MB of that process, from os.wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd, text=True, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # our child and what it started (torch.compile's workers)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), wall, usage.ru_maxrss / 1024


class Runner:
    """Measures configurations, each in a fresh process of this script
    (`--worker NAME PARAMS`), and remembers them for the invocation: a
    configuration two sections share is measured once."""

    def __init__(self, budget, data_dir):
        self.budget, self.data_dir = budget, data_dir
        self.memo = {}

    def measure(self, worker, params, backend="tensorflow", label=None):
        key = json.dumps([worker, params, backend], sort_keys=True)
        if key in self.memo:
            return self.memo[key]
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, json.dumps(params)]
        load = os.getloadavg()[0]
        code, out, err, wall, rss = run_child(argv, child_env(backend, self.data_dir), self.budget.timeout)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if code == 0 and lines:
            result = {**json.loads(lines[-1][len("RESULT "):]), "wall_s": round(wall, 2), "peak_rss_mb": round(rss),
                      "load_before": round(load, 2)}
        else:
            why = "timed out" if wall > self.budget.timeout else f"exit code {code}"
            result = {"error": f"{why}: " + " | ".join(err.strip().splitlines()[-6:])[-1200:]}
        print(f"  {label or worker} [{backend}]: {summary(result)}", flush=True)
        self.memo[key] = result
        return result


def summary(result):
    if "error" in result:
        return "FAILED " + result["error"]
    if "images_per_s" in result:
        return f"{result['images_per_s']:,.1f} images/s ({result['wall_s']:.0f} s, {result['peak_rss_mb']} MB)"
    if "median" in result:
        return f"{result['median']:,.1f} GFLOP/s"
    return f"done ({result['wall_s']:.0f} s)"


# ----------------------------------------------------------------------------- workers (in the child process)

WORKERS = {}


def worker(fn):
    WORKERS[fn.__name__] = fn
    return fn


def rates(first_s, timed_s, images):
    """images/s over the timed epochs (median) and the warm-up epoch's seconds."""
    return {"images": images, "first_epoch_s": round(first_s, 3), "epoch_s": [round(s, 3) for s in timed_s],
            "images_per_s": images / statistics.median(timed_s)}


def epoch_timer(batches=False):
    """A callback that keeps each epoch's start and end times, and with
    `batches` each batch's end (a batch hook turns off Keras' asynchronous
    callback dispatch, so the bare model.fit is timed without one)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append({"begin": time.perf_counter(), "batches": []})

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[-1]["end"] = time.perf_counter()

    class BatchTimer(EpochTimer):
        def on_train_batch_end(self, batch, logs=None):
            self.epochs[-1]["batches"].append(time.perf_counter())

    return BatchTimer() if batches else EpochTimer()


def timer_rates(timer, images):
    """`rates` of an epoch_timer (whole epochs: what a user waits for); with
    batch times also images/s over the steps alone (epoch start to last
    batch) and the seconds after the last batch (checkpoints, history)."""
    epochs = timer.epochs
    result = rates(epochs[0]["end"] - epochs[0]["begin"], [e["end"] - e["begin"] for e in epochs[1:]], images)
    if epochs[0]["batches"]:
        steps = [e["batches"][-1] - e["begin"] for e in epochs[1:]]
        result.update(steps_images_per_s=images / statistics.median(steps), steps_s=[round(s, 3) for s in steps],
                      after_steps_s=round(statistics.median(e["end"] - e["batches"][-1] for e in epochs[1:]), 3))
    return result


def forward_macs(model):
    """Multiply-accumulates of one image's forward pass through the layers
    with a kernel (Conv2D, DepthwiseConv2D, Dense): output positions times
    kernel size. Bias, batch norm, activations and pooling are left out."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            total += math.prod(layer.output.shape[1:-1]) * math.prod(kernel.shape)
    return total


def model_facts(model):
    import keras

    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)  # torch's parameters(): no BN statistics
    return {"backend": keras.backend.backend(), "params": int(trainable),
            "forward_macs": forward_macs(model), "jit_compile": bool(getattr(model, "jit_compile", False))}


def resident_arrays(size, images):
    """Fashion-MNIST's training images (all 60,000, or `images` of them) as
    float32 NHWC normalized with their mean and std, zero-padded to `size`,
    and int32 labels: the arrays a user holds in memory."""
    import numpy as np

    from kerascnn.data import load_dataset

    data = load_dataset("fashion_mnist", val_size=0, train_size=images)
    mean, std = data.stats()
    x = (data.x_train.astype(np.float32) / 255.0 - np.float32(mean[0])) / np.float32(std[0])
    low, high = (size - 28) // 2, (size - 28) - (size - 28) // 2
    x = np.pad(x, ((0, 0), (low, high), (low, high), (0, 0)))
    return np.ascontiguousarray(x), data.y_train.astype(np.int32)


def kerascnn_model(net, size):
    """kerascnn's network (logits): the ReLU, max-pooling LeNet or ResNet-18."""
    from kerascnn.models import build_model

    return build_model(net, input_shape=(size, size, 1), num_classes=10, **(RELU_LENET if net == "lenet" else {}))


@worker
def sgemm(n, library, repeats=10):
    """GFLOP/s of float32 n x n matrix products in `library` ("numpy" or
    "torch"), all threads; one library a process, so that one's idle
    threads do not spin against the other's."""
    import numpy as np

    a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in range(2))
    matmul, threads = np.matmul, None
    if library == "torch":
        import torch

        a, b, matmul, threads = torch.from_numpy(a), torch.from_numpy(b), torch.matmul, torch.get_num_threads()
    matmul(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b)
        seconds.append(time.perf_counter() - start)
    return {"n": n, "median": 2 * n**3 / statistics.median(seconds) / 1e9, "best": 2 * n**3 / min(seconds) / 1e9,
            "threads": threads}


@worker
def kerascnn_fit(arch, options, train_images, epochs):
    """fit's own stages (kerascnn.train) up to training, without the final
    test evaluation and save: data, settings, run folder, model, callbacks
    (history, divergence guard, checkpoints), model.fit on the tf.data
    pipeline. Times each epoch with a callback."""
    from kerascnn import preparation, train
    from kerascnn.data import steps_per_epoch

    timer = epoch_timer(batches=True)
    with tempfile.TemporaryDirectory() as out:
        given, _ = preparation.make_config(arch, "fashion_mnist", {**options, "epochs": epochs, "val_size": 0,
                                                                   "train_size": train_images, "output": out})
        data = preparation.load_data(given)
        settings = preparation.resolve_settings(given, data)
        run = train.open_run_folder(settings)
        jit = preparation.resolve_jit(settings.jit)
        record = train.run_record(given, settings, data, run, jit)
        with train.run_scope(settings):
            model = preparation.build_or_resume(settings, data.num_classes, record["input_shape"], jit,
                                                steps_per_epoch(len(data.x_train), settings.batch_size), run=run)
            callbacks = train.make_callbacks(settings, run, data, record, [timer])
            train.train(model, settings, run, data, callbacks, verbose=0)
    return {**timer_rates(timer, len(data.x_train)), **model_facts(model), "image_size": settings.image_size,
            "batch_size": settings.batch_size, "steps_per_execution": settings.steps_per_execution}


def user_model(net, size):
    """What a user writes: LeNet as a keras.Sequential, ResNet-18 from
    kerascnn's builder; both end in a softmax for Keras' string loss."""
    import keras
    from keras import layers

    if net != "lenet":
        from kerascnn.models import build_model

        logits = build_model(net, input_shape=(size, size, 1), num_classes=10)
        return keras.Model(logits.input, layers.Softmax(name="probabilities")(logits.output))
    return keras.Sequential([
        keras.Input((size, size, 1)),
        layers.Conv2D(6, 5, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


@worker
def bare_fit(net, size, batch, train_images, epochs):
    """model.fit on arrays in memory with Keras' defaults (jit_compile
    "auto", shuffling, the string loss and optimizer)."""
    import keras

    x, y = resident_arrays(size, train_images)
    keras.utils.set_random_seed(0)
    model = user_model(net, size)
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = epoch_timer()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return {**timer_rates(timer, len(x)), **model_facts(model)}


def adamw(params, grads, m, v, t, sqrt, lr=1e-3, weight_decay=0.004, beta1=0.9, beta2=0.999, eps=1e-7):
    """One AdamW step as Keras takes it (decoupled decay, bias-corrected
    rate): new (params, m, v). Works on JAX arrays and TensorFlow tensors."""
    m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads)]
    v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads)]
    alpha = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    params = [p - lr * weight_decay * p - alpha * mi / (sqrt(vi) + eps) for p, mi, vi in zip(params, m, v)]
    return params, m, v


def epoch_batches(n, batch, epoch):
    """Shuffled index batches of one epoch, full batches only."""
    import numpy as np

    order = np.random.default_rng(epoch).permutation(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


@worker
def raw_jax(net, size, batch, train_images, epochs):
    """jax.jit of value_and_grad over kerascnn's model through
    Model.stateless_call (Keras' layers, no Keras trainer), hand-written
    AdamW (no optax here), batches gathered from NumPy arrays."""
    import jax
    import jax.numpy as jnp
    import keras

    x, y = resident_arrays(size, train_images)
    keras.utils.set_random_seed(0)
    model = kerascnn_model(net, size)

    def loss_fn(trainable, non_trainable, xb, yb):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1)), non_trainable

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2, 3))  # weights and moments updated in place
    def step(trainable, non_trainable, m, v, t, xb, yb):
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, non_trainable, xb, yb)
        trainable, m, v = adamw(trainable, grads, m, v, t, jnp.sqrt)
        return trainable, non_trainable, m, v, loss

    trainable = [jnp.asarray(w.value) for w in model.trainable_variables]
    non_trainable = [jnp.asarray(w.value) for w in model.non_trainable_variables]
    m, v = [jnp.zeros_like(w) for w in trainable], [jnp.zeros_like(w) for w in trainable]
    seconds, t = [], 0
    for epoch in range(epochs):
        start = time.perf_counter()
        for idx in epoch_batches(len(x), batch, epoch):
            t += 1
            trainable, non_trainable, m, v, loss = step(trainable, non_trainable, m, v, jnp.float32(t), x[idx], y[idx])
        loss.block_until_ready()
        seconds.append(time.perf_counter() - start)
    images = len(x) // batch * batch
    return {**rates(seconds[0], seconds[1:], images), **model_facts(model), "jit_compile": True}


@worker
def raw_tf(net, size, batch, train_images, epochs):
    """A tf.function of GradientTape over kerascnn's model (Keras' layers on
    the TensorFlow backend, no Keras trainer), hand-written AdamW, XLA off
    as kerascnn's `--jit auto` runs it on a CPU."""
    import keras
    import tensorflow as tf

    x, y = resident_arrays(size, train_images)
    keras.utils.set_random_seed(0)
    model = kerascnn_model(net, size)
    weights = model.trainable_variables
    m = [tf.Variable(tf.zeros(w.shape)) for w in weights]
    v = [tf.Variable(tf.zeros(w.shape)) for w in weights]
    t = tf.Variable(0.0)

    @tf.function(jit_compile=False)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        grads = tape.gradient(loss, weights)
        t.assign_add(1.0)
        new = adamw([w.value for w in weights], grads, [a.value() for a in m], [a.value() for a in v], t, tf.sqrt)
        for variables, values in zip((weights, m, v), new):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return loss

    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for idx in epoch_batches(len(x), batch, epoch):
            loss = step(x[idx], y[idx])
        float(loss)
        seconds.append(time.perf_counter() - start)
    images = len(x) // batch * batch
    return {**rates(seconds[0], seconds[1:], images), **model_facts(model), "jit_compile": False}


def torch_lenet(size):
    """The ReLU, max-pooling LeNet in PyTorch."""
    from torch import nn

    flat = 16 * (((size // 2) - 4) // 2) ** 2
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def torch_resnet18(channels=1, classes=10):
    """torchvision's resnet18, written out (torchvision is not installed
    here): 11,689,512 parameters at 3 channels and 1000 classes."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, kernel, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1)
            self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))

    stages, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(conv_bn(channels, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), *stages,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def torch_params(model):
    return sum(p.numel() for p in model.parameters())


@worker
def raw_torch(net, size, batch, train_images, epochs, compile=False):
    """A plain PyTorch loop (NCHW tensors in memory, AdamW with Keras'
    defaults, full batches), eager or through torch.compile."""
    import torch

    x, y = resident_arrays(size, train_images)
    x, y = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    torch.manual_seed(0)
    model = torch_lenet(size) if net == "lenet" else torch_resnet18()
    facts = {"params": torch_params(model), "threads": torch.get_num_threads(), "jit_compile": compile}
    if net != "lenet":
        facts["params_at_224_1000"] = torch_params(torch_resnet18(3, 1000))
        assert facts["params_at_224_1000"] == 11_689_512, facts
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for idx in epoch_batches(len(x), batch, epoch):
            idx = torch.from_numpy(idx)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(forward(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return {**rates(seconds[0], seconds[1:], len(x) // batch * batch), **facts, "backend": "torch"}


@worker
def pipeline(size, batch, steps, augment):
    """make_training_pipeline over Fashion-MNIST's 60,000 training images,
    iterated without a model: images/s after 5 warm-up batches."""
    from kerascnn.augment import Augmenter
    from kerascnn.data import load_dataset, make_training_pipeline

    data = load_dataset("fashion_mnist", val_size=0)
    mean, std = data.stats()
    ds, _ = make_training_pipeline(data.x_train, data.y_train, input_shape=(size, size, 1), mean=mean, std=std,
                                   batch_size=batch, epochs=2, augment=Augmenter(augment, size) if augment else None)
    return pipeline_rate(ds, batch, steps)


def pipeline_rate(ds, batch, steps):
    """Images/s of iterating `ds` for `steps` batches after 5 warm-up ones."""
    batches = iter(ds)
    for _ in range(5):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "images": steps * batch}


def phase_times(fns, repeats):
    """Median milliseconds of each fn() in `fns` (name -> fn), after 3
    warm-up calls, the phases interleaved `repeats` times."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


@worker
def profile_tf(net, size, batch, repeats):
    """The training step of kerascnn's model on TensorFlow, phase by phase
    (one batch in memory): the forward pass in training mode, forward and
    backward (tf.GradientTape), and Keras' whole train step (AdamW, loss and
    accuracy metrics) through train_on_batch."""
    import numpy as np
    import tensorflow as tf

    from kerascnn.models import build_model
    from kerascnn.optimizers import make_optimizer
    from kerascnn.preparation import compile_model

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, size, size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, batch).astype(np.int32))
    model = build_model(net, input_shape=(size, size, 1), num_classes=10, **(RELU_LENET if net == "lenet" else {}))
    compile_model(model, make_optimizer("adamw"))
    loss_fn = model.loss

    @tf.function
    def forward():
        return model(x, training=True)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    def step():
        model.train_on_batch(x, y)

    ms = phase_times({"forward": lambda: forward().numpy(), "forward_backward":
                      lambda: [g.numpy() for g in forward_backward()[:1]], "step": step}, repeats)
    return {**ms, "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                              tf.config.threading.get_inter_op_parallelism_threads()], "backend": "tensorflow"}


@worker
def profile_torch(net, size, batch, repeats):
    """The same phases in the plain PyTorch loop (eager): forward in training
    mode, forward and backward, and the whole step with AdamW."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 10, (batch,))
    model = torch_lenet(size) if net == "lenet" else torch_resnet18()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    ms = phase_times({"forward": forward, "forward_backward": forward_backward, "step": step}, repeats)
    return {**ms, "threads": torch.get_num_threads(), "backend": "torch"}


def torch_op_profile(step, steps):
    """torch.profiler over `steps` calls of step(): self CPU milliseconds a
    step, in all and for the 12 costliest operators (with calls a step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"self_ms": round(total / 1000 / steps, 3),
            "top": [[e.key, round(e.self_cpu_time_total / 1000 / steps, 3), round(e.count / steps, 1)] for e in top]}


@worker
def profile_torch_ops(net, size, batch, steps, keras_model):
    """The operators a training step runs on torch, by self CPU time: Keras'
    torch backend running kerascnn's model (train_on_batch), or the plain
    PyTorch loop."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    if keras_model:
        from kerascnn.models import build_model
        from kerascnn.optimizers import make_optimizer
        from kerascnn.preparation import compile_model

        x = rng.standard_normal((batch, size, size, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch).astype(np.int32)
        model = build_model(net, input_shape=(size, size, 1), num_classes=10,
                            **(RELU_LENET if net == "lenet" else {}))
        compile_model(model, make_optimizer("adamw"))

        def step():
            model.train_on_batch(x, y)
    else:
        x = torch.randn(batch, 1, size, size)
        y = torch.randint(0, 10, (batch,))
        model = torch_lenet(size) if net == "lenet" else torch_resnet18()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
    for _ in range(3):
        step()
    return {**torch_op_profile(step, steps), "backend": "torch"}


PIPELINE_VARIANTS = ("kerascnn", "map serial", "no prefetch", "resize each image", "cache resized")


@worker
def pipeline_variant(size, batch, steps, variant):
    """make_training_pipeline's batches (plain, Fashion-MNIST's 60,000
    images) built another way, iterated without a model: kerascnn's own
    (gather a batch, scale and resize it in one op, normalize; map on
    AUTOTUNE threads; prefetch AUTOTUNE), the map on one thread, without
    prefetch, each image resized on its own before batching, or every image
    resized once beforehand (uint8, cached in memory) and gathered."""
    import numpy as np
    import tensorflow as tf

    from kerascnn.data import epoch_indices, load_dataset, make_training_pipeline, normalize, scale_and_resize

    data = load_dataset("fashion_mnist", val_size=0)
    mean, std = data.stats()
    facts = {}
    if variant == "kerascnn":
        ds, _ = make_training_pipeline(data.x_train, data.y_train, input_shape=(size, size, 1), mean=mean, std=std,
                                       batch_size=batch, epochs=2)
    else:
        images, labels = data.x_train, data.y_train.astype("int32")
        if variant == "cache resized":
            start = time.perf_counter()
            images = np.concatenate([np.round(np.clip(scale_and_resize(images[i:i + 2048], size=(size, size))
                                                      .numpy() * 255, 0, 255)).astype(np.uint8)
                                     for i in range(0, len(images), 2048)])
            facts = {"cache_s": round(time.perf_counter() - start, 2), "cache_mb": round(images.nbytes / 2**20)}
        images, labels = tf.constant(images), tf.constant(labels)
        idx = epoch_indices(len(data.x_train), 0)
        parallel = None if variant == "map serial" else tf.data.AUTOTUNE

        def prep(i):
            x = tf.cast(tf.gather(images, i), tf.float32) / 255.0 if variant == "cache resized" else \
                scale_and_resize(tf.gather(images, i), size=(size, size))
            return normalize(x, channels=1, mean=mean, std=std), tf.gather(labels, i)

        if variant == "resize each image":
            def one(i):
                x = scale_and_resize(tf.gather(images, i)[None], size=(size, size))[0]
                return x, tf.gather(labels, i)

            ds = tf.data.Dataset.from_tensor_slices(idx).map(one, num_parallel_calls=parallel).batch(batch)
            ds = ds.map(lambda x, y: (normalize(x, channels=1, mean=mean, std=std), y), num_parallel_calls=parallel)
        else:
            ds = tf.data.Dataset.from_tensor_slices(idx).batch(batch).map(prep, num_parallel_calls=parallel)
        ds = ds.repeat()
        if variant != "no prefetch":
            ds = ds.prefetch(tf.data.AUTOTUNE)
    return {**pipeline_rate(ds, batch, steps), **facts}


@worker
def train_step(arch, size, batch, steps):
    """kerascnn's model compiled as fit compiles it, trained with
    train_on_batch on one batch already in memory: the training step with
    no input pipeline."""
    import numpy as np

    from kerascnn.models import build_model
    from kerascnn.optimizers import make_optimizer
    from kerascnn.preparation import compile_model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    model = build_model(arch, input_shape=(size, size, 1), num_classes=10)
    compile_model(model, make_optimizer("adamw"))
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), **model_facts(model)}


@worker
def train_lenet(output, train_images):
    """A saved LeNet run (ReLU, max pooling, 1 epoch) for `evaluate`."""
    from kerascnn import fit

    result = fit("lenet", "fashion_mnist", **RELU_LENET, epochs=1, train_size=train_images, output=output, verbose=0)
    return {"model": str(result.model_path)}


@worker
def evaluate_run(model, output):
    """kerascnn.evaluate on the saved run (predictions, report, figures),
    then the model's predict alone on the same test pipeline, warm."""
    from kerascnn import evaluate
    from kerascnn.data import make_pipeline
    from kerascnn.run import Run

    start = time.perf_counter()
    result = evaluate(model, output=output)
    seconds = time.perf_counter() - start
    run = Run.load(model)
    keras_model, data = run.model(), run.load_data()
    mean, std = run.stats_for(data)
    test = make_pipeline(data.x_test, data.y_test, input_shape=keras_model.input_shape[1:], mean=mean, std=std,
                         batch_size=256, resize=run.resize)
    keras_model.predict(test, verbose=0)
    start = time.perf_counter()
    keras_model.predict(test, verbose=0)
    predict = time.perf_counter() - start
    n = len(data.x_test)
    return {"images": n, "evaluate_s": seconds, "images_per_s": n / seconds, "predict_images_per_s": n / predict,
            "accuracy": result.accuracy}


# `kerascnn ARGS` as the console script runs it (kerascnn.cli.main), writing time stamps
# (time.time(), the parent's clock) at each of fit's stages and at its first training step
# to the JSON file argv[1]; argv[2] is when the parent spawned it.
HOOK = r"""
import json, sys, time
marks_path, marks = sys.argv[1], {"spawned": float(sys.argv[2]), "python_started": time.time()}
import kerascnn.cli as cli
import kerascnn.train as train
marks["cli_imported"] = time.time()

def stamped(name, fn):
    def call(*args, **kwargs):
        marks.setdefault(name + "_begin", time.time())
        try:
            return fn(*args, **kwargs)
        finally:
            marks.setdefault(name + "_end", time.time())
    return call

def fit_with_marks(*args, callbacks=(), fit=train.fit, **kwargs):
    import keras

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.setdefault("first_step", time.time())

        def on_epoch_end(self, epoch, logs=None):
            marks.setdefault("first_epoch", time.time())

    return fit(*args, callbacks=[*callbacks, FirstStep()], **kwargs)

train.fit = stamped("fit", fit_with_marks)
for stage in ("load_data", "resolve_settings", "build_or_resume", "train", "finish"):
    setattr(train, stage, stamped(stage, getattr(train, stage)))
sys.argv = ["kerascnn", *sys.argv[3:]]
try:
    cli.main()
finally:
    marks["exit"] = time.time()
    with open(marks_path, "w") as f:
        json.dump(marks, f)
"""


def startup_timeline(marks):
    """Seconds of each stage from the spawn of `kerascnn fit` to its exit."""
    t0 = marks["spawned"]
    points = [("Python started", "python_started"), ("kerascnn.cli imported", "cli_imported"),
              ("TensorFlow and Keras imported, options checked", "fit_begin"),
              ("data loaded", "load_data_end"), ("defaults resolved", "resolve_settings_end"),
              ("model built and compiled", "build_or_resume_end"), ("first training step done", "first_step"),
              ("first epoch done, validation included", "first_epoch"), ("training done", "train_end"),
              ("test set evaluated, run saved", "finish_end"), ("process exited", "exit")]
    return [(label, round(marks[key] - t0, 2)) for label, key in points if key in marks]


# ----------------------------------------------------------------------------- the sections


SECTION_FNS = {}


def section(name):
    """Register `fn(runner) -> results` as the section `name`."""
    def register(fn):
        SECTION_FNS[name] = fn
        return fn
    return register


def epochs(budget):
    return 1 + budget.repeats


@section("archs")
def archs(runner, only_archs=None):
    """Every architecture through fit's stages at its CPU size and batch size."""
    from kerascnn.choices import FAMILIES

    b = runner.budget
    rows = []
    for arch in only_archs or ARCHS:
        family = FAMILIES[arch]
        size = 28 if family.default_size is None else family.min_size  # config.image_size without a GPU
        batch = b.batch(family.batch_size)
        options = {**({"batch_size": batch} if batch != family.batch_size else {})}
        r = runner.measure("kerascnn_fit", {"arch": arch, "options": options, "train_images": b.steps * batch,
                                            "epochs": epochs(b)}, label=arch)
        row = {"arch": arch, "size": r.get("image_size", size), "batch": batch, **r}
        if arch != "lenet":  # LeNet's is side-by-side's (its ReLU variant, as a user writes it)
            row["bare"] = runner.measure("bare_fit", {"net": arch, "size": row["size"], "batch": batch,
                                                      "train_images": b.steps * batch, "epochs": epochs(b)},
                                         label=f"{arch} bare model.fit")
        rows.append(row)
    return {"rows": rows, "steps": b.steps, "repeats": b.repeats}


def side_by_side_cases(budget):
    """The two networks of sections 2 and 3: (net, size, batch, training images)."""
    return {"lenet": (28, budget.batch(256), budget.lenet_images),
            "resnet18": (32, budget.batch(64), budget.resnet_steps * budget.batch(64))}


def framework_params(net, size, batch, images, budget):
    return {"net": net, "size": size, "batch": batch, "train_images": images, "epochs": epochs(budget)}


def kerascnn_params(net, size, batch, images, budget, jit="auto"):
    options = {"batch_size": batch, "image_size": size, "jit": jit, **(RELU_LENET if net == "lenet" else {})}
    return {"arch": net, "options": options, "train_images": images, "epochs": epochs(budget)}


@section("side-by-side")
def side_by_side(runner):
    """LeNet and ResNet-18: kerascnn, bare model.fit, PyTorch eager and compiled."""
    b = runner.budget
    nets = {}
    for net, (size, batch, images) in side_by_side_cases(b).items():
        p = framework_params(net, size, batch, images, b)
        compiled = b.compile_resnet or net == "lenet"
        nets[net] = {
            "size": size, "batch": batch,
            "kerascnn": runner.measure("kerascnn_fit", kerascnn_params(net, size, batch, images, b),
                                       label=f"{net} kerascnn"),
            "bare": runner.measure("bare_fit", p, label=f"{net} bare model.fit"),
            "torch_eager": runner.measure("raw_torch", {**p, "compile": False}, "torch", label=f"{net} torch eager"),
            "torch_compile": runner.measure("raw_torch", {**p, "compile": True}, "torch", label=f"{net} torch.compile")
            if compiled else {"error": "skipped (--quick)"},
        }
    return {"nets": nets, "lenet_macs": lenet_macs(), "repeats": b.repeats}


def lenet_macs(size=28, kernel=5, channels=(6, 16), dense=(120, 84), classes=10):
    """LeNet's forward multiply-accumulates per image, layer by layer:
    conv1 keeps the size, each pooling halves it, conv2 is valid."""
    c1, c2 = channels
    after_conv2 = size // 2 - kernel + 1
    flat = (after_conv2 // 2) ** 2 * c2
    return {f"conv1 ({c1}@{kernel}x{kernel} same, {size}x{size} out)": size * size * c1 * kernel * kernel,
            f"conv2 ({c2}@{kernel}x{kernel} valid, {after_conv2}x{after_conv2} out)":
                after_conv2 * after_conv2 * c2 * kernel * kernel * c1,
            f"fc1 ({flat} -> {dense[0]})": flat * dense[0], f"fc2 ({dense[0]} -> {dense[1]})": dense[0] * dense[1],
            f"output ({dense[1]} -> {classes})": dense[1] * classes}


@section("backends")
def backends(runner):
    """kerascnn on each backend against a step written in that framework."""
    b = runner.budget
    nets = {}
    for net, (size, batch, images) in side_by_side_cases(b).items():
        p = framework_params(net, size, batch, images, b)
        compiled = b.compile_resnet or net == "lenet"
        k = kerascnn_params(net, size, batch, images, b)
        skipped = {"error": "skipped (--quick)"}
        nets[net] = {"size": size, "batch": batch, "rows": [
            ("tensorflow", runner.measure("kerascnn_fit", k, label=f"{net} kerascnn"),
             runner.measure("raw_tf", p, label=f"{net} raw tf.function")),
            ("jax", runner.measure("kerascnn_fit", k, "jax", label=f"{net} kerascnn"),
             runner.measure("raw_jax", p, "jax", label=f"{net} raw jax.jit")),
            ("torch", runner.measure("kerascnn_fit", k, "torch", label=f"{net} kerascnn"),
             runner.measure("raw_torch", {**p, "compile": False}, "torch", label=f"{net} torch eager")),
            ("torch, compiled", runner.measure("kerascnn_fit", kerascnn_params(net, size, batch, images, b, "on"),
                                               "torch", label=f"{net} kerascnn --jit on") if compiled else skipped,
             runner.measure("raw_torch", {**p, "compile": True}, "torch", label=f"{net} torch.compile")
             if compiled else skipped),
        ]}
    return {"nets": nets, "repeats": b.repeats}


@section("pipeline")
def pipeline_section(runner):
    """make_training_pipeline alone, beside ResNet-18's training step."""
    b = runner.budget
    batch = b.batch(64)
    rows = []
    for size in b.pipeline_sizes:
        rows.append({
            "size": size, "batch": batch,
            "plain": runner.measure("pipeline", {"size": size, "batch": batch, "steps": b.pipeline_steps,
                                                 "augment": None}, label=f"pipeline {size} px"),
            "augmented": runner.measure("pipeline", {"size": size, "batch": batch, "steps": b.pipeline_steps,
                                                     "augment": "crop,flip"}, label=f"pipeline {size} px crop,flip"),
            "step": runner.measure("train_step", {"arch": "resnet18", "size": size, "batch": batch,
                                                  "steps": b.consumer_steps}, label=f"resnet18 step {size} px"),
            "variants": {v: runner.measure("pipeline_variant", {"size": size, "batch": batch,
                                                                "steps": b.pipeline_steps, "variant": v},
                                           label=f"pipeline {size} px, {v}") for v in PIPELINE_VARIANTS},
        })
    return {"rows": rows, "steps": b.pipeline_steps, "consumer_steps": b.consumer_steps}


def fit_command(net, images, output):
    options = ["--activation", "relu", "--pool", "max"] if net == "lenet" else []
    subset = ["--train-size", str(images)] if images else []
    return ["fit", "--arch", net, *options, "--dataset", "fashion_mnist", "--epochs", "1", *subset,
            "--output", output]


@section("startup")
def startup(runner):
    """evaluate's images/s; time to the first step and peak RSS of `kerascnn fit`."""
    b = runner.budget
    out = {}
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as work:
        saved = runner.measure("train_lenet", {"output": work, "train_images": b.startup_images["lenet"] or 4096},
                               label="train a LeNet to evaluate")
        if "error" not in saved:
            out["evaluate"] = runner.measure("evaluate_run", {"model": saved["model"], "output": work},
                                             label="kerascnn.evaluate")
            out["evaluate_cli"] = cli_run(runner, ["evaluate", saved["model"], "--output", work], work)
        out["fits"] = {}
        for net, images in b.startup_images.items():
            args = fit_command(net, images, str(Path(work) / net))
            out["fits"][net] = {"command": "kerascnn " + " ".join(fit_command(net, images, "OUT")),
                                **cli_run(runner, args, work, marks=True)}
    return out


def cli_run(runner, args, cwd, marks=False):
    """`kerascnn ARGS` in a fresh process: wall seconds and peak RSS, and with
    `marks` the time line of fit's stages (HOOK)."""
    with tempfile.TemporaryDirectory() as folder:
        marks_path = Path(folder) / "marks.json"
        launcher = ["-c", HOOK, str(marks_path), repr(time.time())] if marks else [str(REPO / "cli.py")]
        env = child_env("tensorflow", runner.data_dir)
        code, _, err, wall, rss = run_child([sys.executable, *launcher, *args], env, runner.budget.timeout, cwd=cwd)
        result = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss)}
        if code != 0:
            result["error"] = f"exit code {code}: " + " | ".join(err.strip().splitlines()[-6:])[-1200:]
        elif marks:
            result["timeline"] = startup_timeline(json.loads(marks_path.read_text()))
    print(f"  kerascnn {args[0]} {args[1] if args[0] == 'evaluate' else args[2]}: "
          f"{result.get('error') or f'{wall:.1f} s, {rss:.0f} MB'}", flush=True)
    return result


def scaling_steps(budget, size, batch):
    return max(2, min(20, round(budget.scaling_pixels / (batch * size * size))))


def too_big(previous, batch):
    """Why a scaling configuration is skipped, or None: its peak RSS,
    extrapolated from the same size at the previous batch size, would pass
    60% of the machine's memory."""
    if not previous or "peak_rss_mb" not in previous or not memory_gb():
        return None
    need = previous["peak_rss_mb"] * batch / previous["batch"]
    if need > 0.6 * memory_gb() * 1024:
        return f"skipped: would need about {need:,.0f} MB (peak RSS {previous['peak_rss_mb']:,} MB at batch " \
               f"{previous['batch']}, scaled)"
    return None


@section("scaling")
def scaling(runner):
    """Epoch time against image size and batch size, through fit's stages."""
    b = runner.budget
    rows = []
    for net, sizes in b.scaling_sizes.items():
        for size in sizes:
            previous, skip = None, None
            for batch in b.scaling_batches:  # ascending: once one is too big, so are the larger ones
                steps = scaling_steps(b, size, batch)
                options = {"batch_size": batch, "image_size": size, **(RELU_LENET if net == "lenet" else {})}
                skip = skip or too_big(previous, batch)
                r = {"error": skip} if skip else runner.measure(
                    "kerascnn_fit", {"arch": net, "options": options, "train_images": steps * batch, "epochs": 2},
                    label=f"{net} {size} px b{batch}")
                previous = {**r, "batch": batch}
                rows.append({"net": net, "size": size, "batch": batch, "steps": steps, **r})
    return {"rows": rows, "epoch_images": FASHION_TRAIN}


# fit in a process of its own, for scale-out: argv[1] is fit's options (JSON)
FIT_PROCESS = r"""
import json, sys
from kerascnn.train import fit
r = fit(**json.loads(sys.argv[1]), verbose=0)
print("RESULT " + json.dumps({"seconds": [row["seconds"] for row in r.history], "chief": r.chief,
                              "images": r.config["train_images"], "replicas": r.config.get("replicas"),
                              "steps_per_execution": r.config.get("steps_per_execution"),
                              "test_accuracy": r.test_accuracy}))
"""


def cluster_envs(runner, workers):
    """Each worker's environment: TF_CONFIG naming `workers` free ports on 127.0.0.1."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    cluster = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [dict(child_env("tensorflow", runner.data_dir), TF_CONFIG=json.dumps(
        {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})) for i in range(workers)]


def fit_processes(runner, options, workers, label):
    """`fit(**options)` in `workers` processes at once (a MultiWorkerMirroredStrategy cluster when
    options ask for it, else one plain process): the chief's epoch times, images/s after the first epoch."""
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as out:
        options = {**options, "output": out}
        envs = cluster_envs(runner, workers) if options.get("distribute") else [child_env("tensorflow",
                                                                                         runner.data_dir)]
        load = os.getloadavg()[0]
        done = run_children([([sys.executable, "-c", FIT_PROCESS, json.dumps(options)], env, None) for env in envs],
                            runner.budget.timeout)
    failed = [(code, err) for code, _, err, _, _ in done if code != 0]
    if failed:
        code, err = failed[0]
        result = {"error": f"exit code {code}: " + " | ".join(err.strip().splitlines()[-6:])[-1200:]}
    else:
        reports = [json.loads(next(line for line in out.splitlines()[::-1] if line.startswith("RESULT "))[7:])
                   for _, out, _, _, _ in done]
        chief = next(r for r in reports if r["chief"])
        result = {**chief, **rates(chief["seconds"][0], chief["seconds"][1:], chief["images"]),
                  "processes": workers, "wall_s": round(max(d[3] for d in done), 2),
                  "peak_rss_mb": [round(d[4]) for d in done], "load_before": round(load, 2)}
    print(f"  {label}: {summary({**result, 'peak_rss_mb': sum(result.get('peak_rss_mb', [0]))})}", flush=True)
    return result


def study_processes(runner, shards, images):
    """A four-run study (LeNet, ReLU and sigmoid, 2 seeds, 1 epoch) as one `kerascnn study` process or
    as `shards` `--shard i/N` processes at once, then `kerascnn report`: the wall time to the report."""
    with tempfile.TemporaryDirectory(prefix="kerascnn-perf-") as work:
        base = [sys.executable, str(REPO / "cli.py"), "study", "--arch", "lenet", "--vary", "activation=relu,sigmoid",
                "--seeds", "2", "--epochs", "1", "--train-size", str(images), "--dataset", "fashion_mnist",
                "--output", str(Path(work) / "study")]
        env = child_env("tensorflow", runner.data_dir)
        jobs = [(base + (["--shard", f"{i}/{shards}"] if shards > 1 else []), env, work) for i in range(shards)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = run_children(jobs, runner.budget.timeout)
        report = run_child([sys.executable, str(REPO / "cli.py"), "report", str(Path(work) / "study")], env,
                           runner.budget.timeout, cwd=work) if shards > 1 else (0, "", "", 0, 0)
        wall = time.perf_counter() - start
        failed = [(code, err) for code, _, err, _, _ in [*done, report] if code != 0]
        rows = (Path(work) / "study" / "results.csv").read_text().splitlines() if not failed else []
    if failed:
        code, err = failed[0]
        result = {"error": f"exit code {code}: " + " | ".join(err.strip().splitlines()[-6:])[-1200:]}
    else:
        result = {"wall_s": round(wall, 2), "processes": shards, "runs": 4, "variants": len(rows) - 1,
                  "shard_wall_s": [round(d[3], 2) for d in done], "report_s": round(report[3], 2),
                  "peak_rss_mb": [round(d[4]) for d in done], "load_before": round(load, 2)}
    print(f"  study in {shards} process(es): {result.get('error') or str(result['wall_s']) + ' s'}", flush=True)
    return result


@section("profile")
def profile(runner):
    """The training step phase by phase, TensorFlow (kerascnn's model) against PyTorch eager."""
    b = runner.budget
    nets = {}
    for net, (size, batch, _) in side_by_side_cases(b).items():
        p = {"net": net, "size": size, "batch": batch, "repeats": b.profile_repeats}
        ops = {"net": net, "size": size, "batch": batch, "steps": b.profile_op_steps}
        nets[net] = {"size": size, "batch": batch,
                     "tensorflow": runner.measure("profile_tf", p, label=f"{net} phases, tensorflow"),
                     "torch": runner.measure("profile_torch", p, "torch", label=f"{net} phases, torch"),
                     "keras_torch_ops": runner.measure("profile_torch_ops", {**ops, "keras_model": True}, "torch",
                                                       label=f"{net} operators, Keras on torch"),
                     "torch_ops": runner.measure("profile_torch_ops", {**ops, "keras_model": False}, "torch",
                                                 label=f"{net} operators, plain PyTorch")}
    return {"nets": nets, "repeats": b.profile_repeats, "op_steps": b.profile_op_steps}


@section("scale-out")
def scale_out(runner):
    """fit on one and two MultiWorkerMirroredStrategy workers; a study in one process and in two shards."""
    b = runner.budget
    nets = {}
    for net, (batch, images, n_epochs) in b.scale_out.items():
        options = {"config": net, "dataset": "fashion_mnist", "epochs": n_epochs, "batch_size": batch,
                   **({"train_size": images} if images else {}), **(RELU_LENET if net == "lenet" else {})}
        nets[net] = {"batch": batch, "epochs": n_epochs, "rows": [
            ("one process, no strategy", fit_processes(runner, options, 1, f"{net} plain fit")),
            ("one process, no strategy, 1 step a call",
             fit_processes(runner, {**options, "steps_per_execution": 1}, 1, f"{net} plain fit, 1 step a call")),
            ("1 worker", fit_processes(runner, {**options, "distribute": "multi-worker"}, 1, f"{net} 1 worker")),
            ("2 workers", fit_processes(runner, {**options, "distribute": "multi-worker"}, 2, f"{net} 2 workers")),
        ]}
    studies = [study_processes(runner, shards, b.study_images) for shards in (1, 2)]
    return {"nets": nets, "studies": studies, "study_images": b.study_images}


# ----------------------------------------------------------------------------- the report (Markdown)


def number(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def rate(r):
    return "failed" if r is None or "error" in r else number(r["images_per_s"])


def ratio(a, b):
    ok = a and b and "error" not in a and "error" not in b
    return f"{a['images_per_s'] / b['images_per_s']:.2f}×" if ok else "–"


def steps_ratio(k, bare):
    """kerascnn's steps alone (its epoch less what comes after the last
    batch) against a bare fit's whole epochs."""
    ok = k and bare and "error" not in k and "error" not in bare and "steps_images_per_s" in k
    return f"{k['steps_images_per_s'] / bare['images_per_s']:.2f}×" if ok else "–"


def full_epoch_ratio(k, bare, images=FASHION_TRAIN):
    """kerascnn against a bare fit over an epoch of `images`: kerascnn's
    steps at its steps-only rate plus its seconds after the steps."""
    if not k or not bare or "error" in k or "error" in bare or "steps_images_per_s" not in k:
        return "–"
    return f"{(images / bare['images_per_s']) / (images / k['steps_images_per_s'] + k['after_steps_s']):.2f}×"


def table(header, rows, text=1):
    """A Markdown table: the first `text` columns left-aligned, the figures right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < text else "---:" for i in range(len(header)))
             + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def failures(*results):
    """Footnotes for the configurations that failed, with their error."""
    notes = [f"- {label}: {r['error']}" for label, r in results if r and "error" in r]
    return ("\n\nFailed or skipped:\n\n" + "\n".join(notes)) if notes else ""


def training_gflops(r):
    """GFLOP/s of training: images/s x 3 x forward FLOPs (2 x MACs)."""
    if not r or "error" in r or "forward_macs" not in r:
        return None
    return r["images_per_s"] * 3 * 2 * r["forward_macs"] / 1e9


def render_archs(s):
    sgemm = s["sgemm"].get("gflops")
    rows = []
    for r in s["rows"]:
        gflops = training_gflops(r)
        rows.append([r["arch"], r["size"], r["batch"], number(r.get("params")),
                     number(2 * r["forward_macs"] / 1e6 if "forward_macs" in r else None), rate(r), number(gflops),
                     f"{100 * gflops / sgemm:.0f}%" if gflops and sgemm else "–",
                     rate(r["bare"]) if "bare" in r else "side by side", ratio(r, r.get("bare")),
                     steps_ratio(r, r.get("bare")), full_epoch_ratio(r, r.get("bare")),
                     number(r.get("first_epoch_s")), number(r.get("after_steps_s")), number(r.get("peak_rss_mb"))])
    return (f"Each architecture at the size and batch size `kerascnn fit` picks on a CPU (the family's smallest "
            f"size, 28 px for LeNet), with its family's defaults, on {s['steps']} batches of Fashion-MNIST per "
            f"epoch: one warm-up epoch, then the median of {s['repeats']} timed epochs. The path is fit's own "
            "stages (`kerascnn.train`: load_data, resolve_settings, open_run_folder, build_or_resume, "
            "make_callbacks, train), without the final test evaluation and save; images/s counts whole "
            "epochs, of which \"after the steps\" is what an epoch spends after its last batch (the checkpoint "
            "`last.keras`, history). GFLOP/s counts training as 3× the forward pass of the "
            "convolutions and dense layers (2 FLOPs a multiply-accumulate). The bare model.fit is the same "
            "network from kerascnn's builder, ending in a softmax, trained by `model.fit` on arrays in memory "
            "with Keras' defaults (AdamW, whole epochs timed); LeNet's is in the next section. The timed epochs "
            f"are short ({s['steps']} batches), so an epoch's fixed cost (the checkpoint: parameters and optimizer "
            "state, fsync-ed) weighs more than in a real one; the next column puts the same measurements "
            "into a whole Fashion-MNIST epoch of 54,000 images: the steps at the measured steps-only rate plus the "
            "measured seconds after them, against the bare fit at its rate. \"Steps alone\" leaves the fixed "
            "cost out.\n\n"
            + table(["arch", "px", "batch", "parameters", "forward MFLOP/image", "images/s", "training GFLOP/s",
                     "of sgemm", "bare model.fit images/s", "kerascnn / bare", "steps alone / bare",
                     "54,000-image epochs",
                     "warm-up epoch s",
                     "after the steps s", "peak RSS MB"], rows)
            + failures(*((r["arch"], r) for r in s["rows"]), *((f"{r['arch']} bare", r["bare"])
                                                               for r in s["rows"] if "bare" in r)))


def render_side_by_side(s):
    sgemm = s["sgemm"]
    header = ["network", "kerascnn fit path", "bare model.fit", "PyTorch eager", "torch.compile",
              "kerascnn / bare", "kerascnn / torch eager", "kerascnn / torch.compile"]
    rows, details, failed = [], [], []
    for net, n in s["nets"].items():
        k, bare, eager, comp = n["kerascnn"], n["bare"], n["torch_eager"], n["torch_compile"]
        rows.append([f"{net} {n['size']} px b{n['batch']}", rate(k), rate(bare), rate(eager), rate(comp),
                     ratio(k, bare), ratio(k, eager), ratio(k, comp)])
        for label, r in (("kerascnn", k), ("bare model.fit", bare), ("PyTorch eager", eager),
                         ("torch.compile", comp)):
            failed.append((f"{net}, {label}", r))
            if "error" not in r:
                details.append([f"{net}, {label}", f"{r['images']:,}", rate(r), number(r.get("first_epoch_s")),
                                "on" if r.get("jit_compile") else "off", number(r.get("params")),
                                number(r.get("peak_rss_mb"))])
    macs = s["lenet_macs"]
    total = sum(macs.values())
    flops = [[name, f"{v:,}"] for name, v in macs.items()] + [["**forward, total**", f"**{total:,}**"]]
    shares = []
    for net, n in s["nets"].items():
        gflops = training_gflops(n["kerascnn"])
        if gflops and sgemm["gflops"]:
            shares.append([net, number(2 * n["kerascnn"]["forward_macs"] / 1e6),
                           number(6 * n["kerascnn"]["forward_macs"] / 1e6), rate(n["kerascnn"]), number(gflops),
                           f"{100 * gflops / sgemm['gflops']:.1f}%"])
    check = {n: r["kerascnn"].get("forward_macs") for n, r in s["nets"].items()}
    agree = "agrees with" if check.get("lenet") == total else f"differs from ({check.get('lenet')})"
    return (
        f"The same two networks four ways, Fashion-MNIST, AdamW (lr 1e-3, weight decay 0.004), one warm-up epoch "
        f"then the median of {s['repeats']} timed epochs:\n\n"
        "- **kerascnn fit path**: fit's stages as in section 1 (`--activation relu --pool max` for LeNet, "
        "`-b` and `--image-size` as shown), tf.data pipeline, TensorFlow backend, `--jit auto` (XLA off on a CPU), `--steps-per-execution` "
        "auto (16 steps a call on TensorFlow, 1 elsewhere), whole epochs timed (the checkpoint included);\n"
        "- **bare model.fit**: what a user writes: LeNet as a `keras.Sequential` (conv 6@5x5 same → max pool "
        "→ conv 16@5x5 valid → max pool → 120 → 84 → 10, ReLU, softmax), ResNet-18 from kerascnn's builder "
        "with a softmax; `compile(optimizer=\"adamw\", loss=\"sparse_categorical_crossentropy\", "
        "metrics=[\"accuracy\"])`, "
        "`fit(x, y, batch_size=...)` on NumPy arrays in memory (images normalized, zero-padded to 32 px for "
        "ResNet-18), Keras' defaults otherwise (`jit_compile=\"auto\"`, shuffling);\n"
        "- **PyTorch eager**: the same network in `torch.nn` (ResNet-18 written out as torchvision's resnet18, "
        "checked at 11,689,512 parameters for 3 channels and 1000 classes; torchvision is not installed), NCHW "
        "tensors in memory, `torch.optim.AdamW`, full batches only;\n"
        "- **torch.compile**: the same loop with `torch.compile(model)` (its compilation is in the warm-up epoch).\n\n"
        + table(header, rows)
        + "\n\nEvery configuration (images a timed epoch; the warm-up epoch includes compilation or tracing):\n\n"
        + table(["configuration", "images an epoch", "images/s", "warm-up epoch s", "jit", "parameters",
                 "peak RSS MB"], details)
        + f"\n\n**The machine's sgemm rate**, measured in the same run: {number(sgemm['gflops'])} GFLOP/s "
        f"(float32 {sgemm['numpy'].get('n')}×{sgemm['numpy'].get('n')} matrix product, the best of 10, each "
        f"library in its own process: NumPy {number(sgemm['numpy'].get('best'))} (median "
        f"{number(sgemm['numpy'].get('median'))}), torch {number(sgemm['torch'].get('best'))} (median "
        f"{number(sgemm['torch'].get('median'))}) on {sgemm['torch'].get('threads')} threads; the higher "
        "is taken).\n\n"
        "**LeNet's FLOPs**, counted per layer (multiply-accumulates of one 28×28 image's forward pass; bias, "
        "activations and pooling left out):\n\n" + table(["layer", "MACs"], flops)
        + f"\n\nThe count from the built Keras model {agree} this. Training ≈ 3× the forward pass "
        f"(forward, gradient of the activations, gradient of the weights), 2 FLOPs a MAC:\n\n"
        + table(["network", "forward MFLOP/image", "training MFLOP/image", "kerascnn images/s",
                 "training GFLOP/s", "of sgemm"], shares)
        + failures(*failed))


def render_backends(s):
    raw_names = {"tensorflow": "tf.function + GradientTape", "jax": "jax.jit(value_and_grad), Keras' layers",
                 "torch": "plain PyTorch loop, eager", "torch, compiled": "torch.compile"}
    rows, failed = [], []
    for net, n in s["nets"].items():
        for backend, k, raw in n["rows"]:
            label = "kerascnn `--jit on`" if backend == "torch, compiled" else "kerascnn"
            rows.append([f"{net} {n['size']} px b{n['batch']}", backend, raw_names[backend], rate(k), rate(raw),
                         ratio(k, raw), number(k.get("first_epoch_s")), number(raw.get("first_epoch_s"))])
            failed += [(f"{net}, {backend}, {label}", k), (f"{net}, {backend}, {raw_names[backend]}", raw)]
    return (
        f"kerascnn's fit path (as in section 2, with `KERAS_BACKEND` set) against a training step written in "
        f"the backend's own framework, on the same network, data in memory, hand-written AdamW with Keras' "
        f"constants, one warm-up epoch then the median of {s['repeats']} timed epochs:\n\n"
        "- **tensorflow**: a `tf.function` (XLA off, as `--jit auto` runs TensorFlow on a CPU) of a "
        "`GradientTape` over kerascnn's Keras model called directly: Keras' layers, not Keras' trainer;\n"
        "- **jax**: \"raw JAX with Keras' layers\": `jax.jit` of `jax.value_and_grad` over "
        "`model.stateless_call` (flax and optax are not installed, so the layers stay Keras'); kerascnn runs "
        "JAX with jit on;\n"
        "- **torch**: the plain PyTorch loop of section 2 (the network in `torch.nn`, NCHW); kerascnn runs "
        "torch eagerly under `--jit auto`; the last row compiles both (kerascnn `--jit on`, which makes Keras "
        "call `torch.compile`).\n\n"
        + table(["network", "backend", "raw step", "kerascnn images/s", "raw images/s", "kerascnn / raw",
                 "kerascnn warm-up s", "raw warm-up s"], rows, text=3)
        + failures(*failed))


def render_pipeline(s):
    rows, failed = [], []
    for r in s["rows"]:
        rows.append([r["size"], r["batch"], rate(r["plain"]), rate(r["augmented"]), rate(r["step"]),
                     ratio(r["augmented"], r["step"])])
        failed += [(f"{r['size']} px pipeline", r["plain"]), (f"{r['size']} px crop,flip", r["augmented"]),
                   (f"{r['size']} px ResNet-18 step", r["step"])]
    return (
        "kerascnn's `make_training_pipeline` over Fashion-MNIST's 60,000 training images (gather, scale, resize "
        "28 → size, optionally random crop after zero padding and horizontal flip, normalize, batch, prefetch), "
        f"iterated in TensorFlow without a model: {s['steps']} batches after 5 warm-up ones. Beside it, "
        "ResNet-18's training step at that size (`train_on_batch` on one batch in memory, TensorFlow backend, "
        f"{s['consumer_steps']} steps after one warm-up): what the pipeline has to keep up with. Measured apart, "
        "each with both cores; in training they share them, so a ratio near 1 already means the pipeline takes "
        "time from the step.\n\n"
        + table(["px", "batch", "pipeline images/s", "with crop,flip", "ResNet-18 step images/s",
                 "(crop,flip) / step"], rows)
        + render_pipeline_variants(s)
        + failures(*failed))


def render_pipeline_variants(s):
    rows = []
    for r in s["rows"]:
        variants = r.get("variants")
        if not variants:
            continue
        cached = variants.get("cache resized", {})
        rows.append([r["size"]] + [f"{rate(variants[v])} ({ratio(variants[v], variants['kerascnn'])})"
                                   for v in PIPELINE_VARIANTS]
                    + [f"{number(cached.get('cache_s'))} s, {number(cached.get('cache_mb'))} MB"])
    if not rows:
        return ""
    return ("\n\nThe same plain batches built other ways, each against kerascnn's (in brackets): the map on "
            "one thread instead of AUTOTUNE's, no prefetch, each image resized on its own before batching "
            "instead of one resize a batch, and every image resized once beforehand and kept (uint8) in "
            "memory, whose one-time cost is the last column:\n\n"
            + table(["px", *PIPELINE_VARIANTS, "caching cost"], rows))


def render_startup(s):
    parts = []
    ev, cli = s.get("evaluate"), s.get("evaluate_cli")
    if ev and "error" not in ev:
        parts.append(
            f"**evaluate**: `kerascnn.evaluate` of a saved LeNet (ReLU, max pooling) on the {ev['images']:,} test "
            f"images: {ev['evaluate_s']:.2f} s in the process, {number(ev['images_per_s'])} images/s with its "
            f"report and figures; the model's `predict` alone on the same pipeline, warm: "
            f"{number(ev['predict_images_per_s'])} images/s. The command `kerascnn evaluate MODEL` from spawn to "
            f"exit: {cli['wall_s']:.1f} s, peak RSS {cli['peak_rss_mb']} MB.")
    fits = s.get("fits", {})
    ok = {net: f for net, f in fits.items() if "error" not in f}
    if ok:
        labels = [label for label, _ in max(ok.values(), key=lambda f: len(f["timeline"]))["timeline"]]
        rows = [[label] + [number(dict(f["timeline"]).get(label)) for f in ok.values()] for label in labels]
        rows.append(["**peak RSS, MB**"] + [f"**{f['peak_rss_mb']}**" for f in ok.values()])
        commands = "\n".join(f"- {net}: `{f['command']}`" for net, f in ok.items())
        parts.append(
            "**From the command to the first training step**, and **peak RSS** (the process's `ru_maxrss`, from "
            "`os.wait4`): `kerascnn fit` started as the console script does (`kerascnn.cli.main`) in a fresh "
            "process, TensorFlow backend, with time stamps at each of fit's stages (its functions wrapped, and a "
            "callback at the first `on_train_batch_end`); seconds since the process was spawned:\n\n"
            + commands + "\n\n" + table(["reached", *ok], rows))
    return "\n\n".join(parts) + failures(("evaluate", ev), ("kerascnn evaluate", cli),
                                         *((f"kerascnn fit {n}", f) for n, f in fits.items()))


def render_scaling(s, image):
    grid = {}
    for r in s["rows"]:
        grid.setdefault((r["net"], r["size"]), {})[r["batch"]] = r
    batches = sorted({r["batch"] for r in s["rows"]})
    rows = [[net, size] + [number(s["epoch_images"] / c[b]["images_per_s"]) if b in c and "error" not in c[b]
                           else "–" for b in batches] for (net, size), c in grid.items()]
    return (
        f"![epoch time against image size]({image})\n\n"
        f"Seconds an epoch of Fashion-MNIST's {s['epoch_images']:,} training images would take (fit's default "
        "10% validation split), projected from the images/s of fit's stages (as in section 1, TensorFlow, "
        "LeNet with ReLU and max pooling, ResNet-18 with its defaults) over one timed epoch of 2 to 20 batches "
        "after a warm-up epoch of as many (fewer at larger sizes):\n\n"
        + table(["network", "px", *(f"batch {b}" for b in batches)], rows)
        + failures(*((f"{r['net']} {r['size']} px b{r['batch']}", r) for r in s["rows"])))


def plot_scaling(s, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    nets = list(dict.fromkeys(r["net"] for r in s["rows"]))
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4.2), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for batch in sorted({r["batch"] for r in s["rows"]}):
            points = [(r["size"], s["epoch_images"] / r["images_per_s"]) for r in s["rows"]
                      if r["net"] == net and r["batch"] == batch and "error" not in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"batch {batch}")
        ax.set(xscale="log", yscale="log", xlabel="image size (px)", ylabel="seconds an epoch (projected)",
               title=f"{net}: {s['epoch_images']:,} images an epoch")
        sizes = sorted({r["size"] for r in s["rows"] if r["net"] == net})
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


TITLES = {"archs": "1. Throughput per architecture", "side-by-side": "2. LeNet and ResNet-18 side by side",
          "backends": "3. Each Keras backend against its own framework", "pipeline": "4. The input pipeline alone",
          "startup": "5. Evaluate, start-up and memory", "scaling": "6. Epoch time against image and batch size",
          "profile": "7. Where a training step's time goes",
          "scale-out": "8. One process against two: workers and study shards"}


def load_averages(value):
    """Every `load_before` in a section's results."""
    if isinstance(value, dict):
        return ([value["load_before"]] if "load_before" in value else []) + \
            [x for v in value.values() if isinstance(v, (dict, list, tuple)) for x in load_averages(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in load_averages(v)]
    return []


def render_profile(s):
    rows = []
    for net, n in s["nets"].items():
        for name in ("tensorflow", "torch"):
            r = n[name]
            if "error" in r:
                continue
            fwd, both, step = r["forward"], r["forward_backward"], r["step"]
            rows.append([f"{net} {n['size']} px b{n['batch']}", "TensorFlow (Keras)" if name == "tensorflow"
                         else "PyTorch eager", f"{fwd:.2f}", f"{both - fwd:.2f}", f"{step - both:.2f}",
                         f"{step:.2f}", number(n["batch"] / step * 1000)])
        t, p = n["tensorflow"], n["torch"]
        if "error" not in t and "error" not in p:
            rows.append([f"{net}: TensorFlow / PyTorch", "time ratio", f"{t['forward'] / p['forward']:.2f}",
                         f"{(t['forward_backward'] - t['forward']) / (p['forward_backward'] - p['forward']):.2f}",
                         f"{(t['step'] - t['forward_backward']) / max(p['step'] - p['forward_backward'], 1e-9):.2f}",
                         f"{t['step'] / p['step']:.2f}", ""])
    return ("One batch in memory, the median of " + str(s["repeats"]) + " interleaved repetitions after 3 warm-up "
            "ones, milliseconds: the forward pass in training mode; the backward pass (forward and gradients, "
            "less the forward); the rest of the step (the optimizer update, and on Keras' side its train step's "
            "loss and metric bookkeeping); the whole step. TensorFlow runs kerascnn's model (NHWC, "
            "`tf.function`, XLA off, Keras' `train_on_batch` for the step), PyTorch the same network eagerly "
            "(NCHW). A ratio above 1 is time TensorFlow spends beyond PyTorch.\n\n"
            + table(["network", "framework", "forward ms", "backward ms", "optimizer and rest ms", "step ms",
                     "images/s"], rows, text=2)
            + render_torch_ops(s)
            + failures(*((f"{net} {name}", n[name]) for net, n in s["nets"].items()
                         for name in ("tensorflow", "torch", "keras_torch_ops", "torch_ops") if name in n)))


def render_torch_ops(s):
    parts = []
    for net, n in s["nets"].items():
        keras_ops, plain = n.get("keras_torch_ops", {}), n.get("torch_ops", {})
        if "top" not in keras_ops or "top" not in plain:
            continue
        rows = []
        for i in range(max(len(keras_ops["top"]), len(plain["top"]))):
            k = keras_ops["top"][i] if i < len(keras_ops["top"]) else ["", None, None]
            p = plain["top"][i] if i < len(plain["top"]) else ["", None, None]
            rows.append([f"`{k[0]}`" if k[0] else "", number(k[1]), number(k[2]), f"`{p[0]}`" if p[0] else "",
                         number(p[1]), number(p[2])])
        rows.append(["**all operators**", f"**{number(keras_ops['self_ms'])}**", "", "**all operators**",
                     f"**{number(plain['self_ms'])}**", ""])
        parts.append(f"\n\n{net} {n['size']} px, batch {n['batch']}: the costliest operators of a training "
                     f"step on torch by self CPU time (`torch.profiler`, {s.get('op_steps', '')} steps after 3 "
                     "warm-up ones), Keras' torch backend running kerascnn's model (`train_on_batch`) beside the "
                     "plain PyTorch loop:\n\n"
                     + table(["Keras on torch: operator", "ms a step", "calls a step", "plain PyTorch: operator",
                              "ms a step", "calls a step"], rows))
    return "".join(parts)


def render_scale_out(s):
    rows = []
    for net, n in s["nets"].items():
        base = dict(n["rows"])["one process, no strategy, 1 step a call"]
        for label, r in n["rows"]:
            rows.append([net, label, n["batch"], number(r.get("images")), rate(r), ratio(r, base),
                         number(r.get("test_accuracy") and 100 * r["test_accuracy"]),
                         " + ".join(f"{x:,}" for x in r.get("peak_rss_mb", [])) or "–"])
    one, two = s["studies"]
    studies = [[f"{r['processes']} process{'es' * (r['processes'] > 1)}", number(r.get("wall_s")),
                ", ".join(f"{x:.1f}" for x in r.get("shard_wall_s", [])) or "–", number(r.get("report_s")),
                ratio({"images_per_s": 1 / r["wall_s"]}, {"images_per_s": 1 / one["wall_s"]})
                if "wall_s" in r and "wall_s" in one else "–"] for r in (one, two)]
    return ("`kerascnn fit` in separate processes on this one machine: plain (no strategy), and under "
            "`--distribute multi-worker` (tf.distribute.MultiWorkerMirroredStrategy) with TF_CONFIG naming 1 or "
            "2 workers on 127.0.0.1, each worker its own process, the batch size global (each of 2 workers "
            "computes half of each batch). LeNet (ReLU, max pooling) on all 54,000 training images of "
            "Fashion-MNIST, ResNet-18 at 32 px on a subset; images/s of the chief's epochs after the first, "
            "validation included; the ratio is to one plain process at 1 step a call, which is what "
            "the strategy runs.\n\n"
            + table(["network", "how", "batch", "images an epoch", "images/s", "ratio", "test accuracy %",
                     "peak RSS MB"], rows, text=2)
            + f"\n\nA study of 4 runs (LeNet, `--vary activation=relu,sigmoid --seeds 2`, 1 epoch, "
            f"{s['study_images']:,} training images each) as one `kerascnn study` process, and as two "
            "`--shard i/2` processes started together on the same folder followed by `kerascnn report` (which "
            "merges them); the time to the finished report:\n\n"
            + table(["study", "wall s", "each shard s", "report s", "speed-up"], studies)
            + failures(*((f"{net} {label}", r) for net, n in s["nets"].items() for label, r in n["rows"]),
                       *((f"study, {r.get('processes')} processes", r) for r in s["studies"])))


def render_section(name, s, image=None):
    """One section's Markdown: title, the command, date and machine load, its table."""
    body = {"archs": render_archs, "side-by-side": render_side_by_side, "backends": render_backends,
            "pipeline": render_pipeline, "startup": render_startup, "scale-out": render_scale_out,
            "profile": render_profile}.get(name)
    text = body(s) if body else render_scaling(s, image or f"images/{PLOT}")
    loads = load_averages(s)
    load = f"; 1-minute load average before its configurations {min(loads):.2f}–{max(loads):.2f}" if loads else ""
    return (f"## {TITLES[name]}\n\n*Measured by `{s['command']}` on {s['date']} ({s['wall_s'] / 60:.0f} min{load})*"
            + (" — **--quick smoke test, not a measurement**" if s.get("quick") else "") + f"\n\n{text}\n")


def describe_machine(m, v, sgemm):
    installed = ", ".join(f"{k} {x}" for k, x in v.items() if x)
    missing = ", ".join(k for k, x in v.items() if not x)
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['system']}, Python {m['python']}; {installed}"
            + (f" (not installed: {missing})" if missing else "")
            + (f"; sgemm {number(sgemm['gflops'])} GFLOP/s in the newest run (each section's shares use its own run's)"
               if sgemm and sgemm.get("gflops") else ""))


def write_docs(results_path, doc):
    """docs/performance.md (and the scaling plot beside it, in images/) from
    the results JSON."""
    report = json.loads(Path(results_path).read_text())
    sections = report["sections"]
    quick = [n for n, s in sections.items() if s.get("quick")]
    if quick and Path(doc).resolve() == DOC.resolve():
        sys.exit(f"{results_path} holds --quick results ({', '.join(quick)}): not writing {DOC}; "
                 "give --doc elsewhere for a smoke test")
    image = Path(doc).parent / "images" / PLOT
    if "scaling" in sections:
        plot_scaling(sections["scaling"], image)
    newest = max(sections.values(), key=lambda s: s["date"])
    machines = {json.dumps([s["machine"], s["versions"]], sort_keys=True) for s in sections.values()}
    intro = ("Where kerascnn's training time goes on a CPU, and how it compares with what a user would write "
             "without it: a bare `model.fit`, a plain PyTorch loop, each backend's own framework. Every figure comes "
             "from `benchmarks/performance.py`, each configuration in its own process, one after another; each "
             f"section names the command that measured it. Results: `{_relative(results_path)}`; this page is "
             "written from them by `python benchmarks/performance.py --write-docs`.")
    lines = ["# Performance on a CPU", "", intro, "",
             f"Machine: {describe_machine(newest['machine'], newest['versions'], newest.get('sgemm'))}.", ""]
    if len(machines) > 1:
        lines += ["**The sections were measured on different machines or versions**: see each section's record "
                  + "in the JSON.", ""]
    lines += [kept_prose(doc), ""]
    for name in SECTIONS:
        if name in sections:
            lines.append(render_section(name, sections[name], f"images/{PLOT}"))
    Path(doc).parent.mkdir(parents=True, exist_ok=True)
    Path(doc).write_text("\n".join(lines))
    print(f"wrote {doc}" + (f" and {image}" if "scaling" in sections else ""))


PROSE = ("<!-- written by hand: performance.py --write-docs keeps this part -->", "<!-- /written by hand -->")


def kept_prose(doc):
    """The hand-written part of an existing doc, markers included (or
    empty markers)."""
    old = Path(doc).read_text() if Path(doc).exists() else ""
    if PROSE[0] in old and PROSE[1] in old:
        return PROSE[0] + old.split(PROSE[0], 1)[1].split(PROSE[1], 1)[0] + PROSE[1]
    return f"{PROSE[0]}\n{PROSE[1]}"


def _relative(path):
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- main


def command(args, name):
    parts = ["python benchmarks/performance.py --only", name]
    if args.quick:
        parts.append("--quick")
    if name == "archs" and args.arch:
        parts += ["--arch", *args.arch]
    return " ".join(parts)


def measure_sections(args, results_path):
    data_dir = Path(os.environ.get("KERASCNN_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    if not (data_dir / "fashion_mnist").is_dir():
        sys.exit(f"no fashion_mnist/ in {data_dir}: set KERASCNN_DATA_DIR")
    budget = QUICK if args.quick else FULL
    runner = Runner(budget, data_dir)
    report = json.loads(results_path.read_text()) if results_path.exists() else {"sections": {}}
    print("sgemm ...", flush=True)
    sgemm = {library: runner.measure("sgemm", {"n": budget.sgemm_n, "library": library}, label=library)
             for library in ("numpy", "torch")}
    sgemm["gflops"] = max((r["best"] for r in sgemm.values() if "error" not in r), default=None)
    for name in args.only or SECTIONS:
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        fn = SECTION_FNS[name]
        result = fn(runner, args.arch) if name == "archs" else fn(runner)
        report["sections"][name] = {
            "command": command(args, name), "date": datetime.datetime.now().isoformat(timespec="minutes"),
            "quick": args.quick, "wall_s": round(time.perf_counter() - start), "machine": machine(),
            "versions": versions(), "sgemm": sgemm, **result}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(report, indent=1) + "\n")  # after each section: a crash keeps the rest
        print(render_section(name, report["sections"][name], str(Path(tempfile.gettempdir()) / PLOT)), flush=True)
    print(f"wrote {results_path}")


def run_worker(name, params):
    sys.path.insert(0, str(REPO))
    result = WORKERS[name](**json.loads(params))
    print("RESULT " + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=", ".join(SECTIONS))
    parser.add_argument("--arch", nargs="+", choices=ARCHS, metavar="ARCH",
                        help=f"archs section: only these ({', '.join(ARCHS)})")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps, small batches and images")
    parser.add_argument("--results", type=Path, help=f"the results JSON [{_relative(RESULTS)}; with --quick, "
                                                     "performance-quick.json in the temporary folder]")
    parser.add_argument("--write-docs", action="store_true", help="only render the results JSON into --doc")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"[{_relative(DOC)}]")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(*args.worker)
    results = args.results or (Path(tempfile.gettempdir()) / "performance-quick.json" if args.quick else RESULTS)
    if args.write_docs:
        return write_docs(results, args.doc)
    measure_sections(args, results)


if __name__ == "__main__":
    main()

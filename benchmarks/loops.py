"""The training loops the CPU benchmarks time, each a worker run in its own
process: kerascnn's fit path, a bare `model.fit`, and a training step written
by hand in TensorFlow, JAX and PyTorch over the same networks; the machine's
sgemm rate. Imports nothing heavy at module level (gpu.py borrows the
PyTorch networks on machines without TensorFlow).
"""

import functools
import math
import os
import statistics
import tempfile
import time

from harness import worker

RELU_LENET = {"activation": "relu", "pool": "max"}


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

    from kerascnn.data.datasets import load_dataset

    data = load_dataset("fashion_mnist", val_size=0, train_size=images)
    mean, std = data.stats()
    x = (data.x_train.astype(np.float32) / 255.0 - np.float32(mean[0])) / np.float32(std[0])
    low, high = (size - 28) // 2, (size - 28) - (size - 28) // 2
    x = np.pad(x, ((0, 0), (low, high), (low, high), (0, 0)))
    return np.ascontiguousarray(x), data.y_train.astype(np.int32)


def net_options(net, width=1.0):
    """kerascnn's model options of `net`: LeNet with ReLU and max pooling,
    ResNet-18 at `width` (1: the textbook channels)."""
    return RELU_LENET if net == "lenet" else {"width": width} if width != 1.0 else {}


def kerascnn_model(net, size, width=1.0):
    """kerascnn's network (logits): the ReLU, max-pooling LeNet or ResNet-18."""
    from kerascnn.models import build_model

    return build_model(net, input_shape=(size, size, 1), num_classes=10, **net_options(net, width))


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
def kerascnn_fit(arch, options, train_images, epochs, batch_times=True, torch_step=None):
    """fit's own stages (kerascnn.training.plan, kerascnn.training.fit) up to training, without the final
    test evaluation and save: data, settings, run folder, model, callbacks
    (history, divergence guard, checkpoints), model.fit on the tf.data
    pipeline. Times each epoch with a callback: with `batch_times` each
    batch too (which makes Keras wait for every step) and the epoch's end
    after the checkpoint, else its steps alone. Counts the waits for the
    device per training step. `torch_step` (torch): "keras" for Keras' own
    step, "channels_first" for the native step on contiguous NCHW input
    (kerascnn.training.torch_graph), None for the default."""
    from kerascnn.training import plan
    from kerascnn.training import torch_graph
    from kerascnn.training import torch_native
    from kerascnn.training import fit
    from kerascnn.training.callbacks import count_log_syncs
    from kerascnn.training.trainer import network

    timer = epoch_timer(batches=batch_times)
    if torch_step == "keras":
        os.environ[torch_native.ENV] = "0"
    elif torch_step:
        torch_graph.NativeGraph.memory_format = torch_step
    with tempfile.TemporaryDirectory() as out:
        run = plan.make_plan(arch, "fashion_mnist", {**options, "epochs": epochs, "val_size": 0,
                                                     "train_size": train_images, "output": out})
        settings, data = run.settings, run.data
        t = fit.Training(run, fit.open_run_folder(settings), verbose=0)
        t.record = fit.run_record(run, t.folder)
        with fit.run_scope(settings):
            model = run.model(t.folder)  # on jax and torch a TrainingModel around the network, as in fit
            t.callbacks = fit.make_callbacks(t, [timer] if batch_times else [])
            if not batch_times:  # first: each epoch's end timed at Keras' wait for its logs, before checkpoints
                t.callbacks.all.insert(0, timer)
            with count_log_syncs() as syncs:
                steps = fit.train(t, model) * epochs
    return {**timer_rates(timer, len(data.x_train)), **model_facts(network(model)), "image_size": settings.image_size,
            "batch_size": settings.batch_size, "steps_per_execution": settings.steps_per_execution,
            "log_syncs_per_step": syncs.per_step(steps),
            "torch_step": torch_step or torch_native.used}


def user_model(net, size, width=1.0):
    """What a user writes: LeNet as a keras.Sequential, ResNet-18 from
    kerascnn's builder; both end in a softmax for Keras' string loss."""
    import keras
    from keras import layers

    if net != "lenet":
        logits = kerascnn_model(net, size, width)
        return keras.Model(logits.input, layers.Softmax(name="probabilities")(logits.output))
    return keras.Sequential([
        keras.Input((size, size, 1)),
        layers.Conv2D(6, 5, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


@worker
def bare_fit(net, size, batch, train_images, epochs, width=1.0):
    """model.fit on arrays in memory with Keras' defaults (jit_compile
    "auto", shuffling, the string loss and optimizer)."""
    import keras

    from kerascnn.training.callbacks import count_log_syncs

    x, y = resident_arrays(size, train_images)
    keras.utils.set_random_seed(0)
    model = user_model(net, size, width)
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = epoch_timer()
    with count_log_syncs() as syncs:
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    steps = -(-len(x) // batch) * epochs
    return {**timer_rates(timer, len(x)), **model_facts(model), "log_syncs_per_step": syncs.per_step(steps)}


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
def raw_jax(net, size, batch, train_images, epochs, width=1.0):
    """jax.jit of value_and_grad over kerascnn's model through
    Model.stateless_call (Keras' layers, no Keras trainer), hand-written
    AdamW (no optax here), batches gathered from NumPy arrays."""
    import jax
    import jax.numpy as jnp
    import keras

    x, y = resident_arrays(size, train_images)
    keras.utils.set_random_seed(0)
    model = kerascnn_model(net, size, width)

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


def torch_resnet18(channels=1, classes=10, width=1.0):
    """torchvision's resnet18, written out (torchvision is not installed
    here): 11,689,512 parameters at 3 channels and 1000 classes; `width`
    scales every stage as kerascnn's `width` does."""
    import torch
    from torch import nn

    def scaled(c):
        return max(1, int(round(c * width)))  # kerascnn.models.common.scaled

    def conv_bn(cin, cout, kernel, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1)
            self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))

    stages, cin = [], scaled(64)
    for cout, stride in ((scaled(64), 1), (scaled(128), 2), (scaled(256), 2), (scaled(512), 2)):
        stages += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(conv_bn(channels, scaled(64), 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), *stages,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def torch_params(model):
    return sum(p.numel() for p in model.parameters())


@worker
def raw_torch(net, size, batch, train_images, epochs, compile=False, width=1.0):
    """A plain PyTorch loop (NCHW tensors in memory, AdamW with Keras'
    defaults, full batches), eager or through torch.compile."""
    import torch

    x, y = resident_arrays(size, train_images)
    x, y = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    torch.manual_seed(0)
    model = torch_lenet(size) if net == "lenet" else torch_resnet18(width=width)
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

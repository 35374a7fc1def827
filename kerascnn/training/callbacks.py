"""Callbacks of a training run: the per-epoch history, the plateau schedule
and its warm-up, early stopping, divergence detection, checkpoints with the state a
resumed run needs, and the activation recorder (the per-step log is kerascnn.training.steplog's).

Every callback with state across epochs has `get_state()` and
`set_state(state)` (plain JSON values), so that `--resume` continues a run
exactly where its last checkpoint left it.
"""

import contextlib
import math
import threading
import time

import keras
import numpy as np

from kerascnn.runs import storage
from kerascnn.config.spelling import spell
from kerascnn.errors import KerasCNNError
from kerascnn.training.trainer import network
from kerascnn.optim.schedules import LinearWarmup, warmup_steps
from kerascnn.training.steplog import BatchLogReader, EpochSums


def current_lr(model):
    """The learning rate of the optimizer's last step (before any, its first):
    a plain rate as set, a per-step schedule (kerascnn.optim.schedules) at the
    step before its iteration counter."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a loss-scale optimizer
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        step = max(int(keras.ops.convert_to_numpy(optimizer.iterations)) - 1, 0)
        return float(keras.ops.convert_to_numpy(schedule(step)))
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class LogSyncs:
    """The count `count_log_syncs` keeps: `conversions`, Keras' conversions
    of logs holding backend tensors to Python floats on the thread that
    trains (each one waits for the device to finish the step)."""

    def __init__(self):
        self.conversions = 0

    def per_step(self, steps):
        return self.conversions / max(steps, 1)


@contextlib.contextmanager
def count_log_syncs():
    """Within the block, count the times Keras' CallbackList turns logs
    holding backend tensors into floats on this thread: a host wait for the
    device. With every batch callback async-safe, the batch logs are
    converted on Keras' callback threads instead, and only each epoch's end
    (and evaluation's) is counted. Yields a LogSyncs."""
    from keras.src.backend import is_tensor
    from keras.src.callbacks import callback_list

    counts, here = LogSyncs(), threading.get_ident()
    utils = callback_list.python_utils
    original = utils.pythonify_logs

    def counting(logs):
        if threading.get_ident() == here and any(is_tensor(v) for v in (logs or {}).values()):
            counts.conversions += 1
        return original(logs)

    utils.pythonify_logs = counting
    try:
        yield counts
    finally:
        utils.pythonify_logs = original


class HistoryRecorder(keras.callbacks.Callback):
    """Keeps one row per epoch: the epoch (from 1), Keras' logs, the
    learning rate of the epoch's last step and its wall-clock seconds."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        row["lr"] = current_lr(self.model)
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)

    def get_state(self):
        return {"rows": self.rows}

    def set_state(self, state):
        self.rows = list(state["rows"])


class EpochLog(keras.callbacks.Callback):
    """One plain line per epoch, from the history's last row, for output
    that is not a terminal (a log file, CI, a pipe), where Keras' progress
    bar would write escape codes and carriage returns."""

    def __init__(self, history, echo=print):
        super().__init__()
        self.history, self.echo = history, echo

    def on_epoch_end(self, epoch, logs=None):
        row = self.history.rows[-1]
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "seconds"))
        self.echo(f"epoch {row['epoch']}/{self.params['epochs']}: {metrics}, lr {row['lr']:.3g} "
                  f"({row['seconds']:.1f} s)")


class MonitorCallback(keras.callbacks.Callback):
    """Watches a loss (lower is better) after every epoch and counts the
    epochs without improvement; `on_patience_out(epoch)` acts when they reach
    `patience`. The count survives a resume through get_state/set_state."""

    def __init__(self, monitor="val_loss", patience=2):
        super().__init__()
        self.monitor, self.patience = monitor, patience
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or value != value:
            return
        if value < self.best:
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.on_patience_out(epoch)

    def on_patience_out(self, epoch):
        raise NotImplementedError

    def get_state(self):
        return {"best": self.best, "wait": self.wait}

    def set_state(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])


class Warmup(keras.callbacks.Callback):
    """Plateau's warm-up (the other schedules warm up inside their
    schedule: kerascnn.optim.schedules.LinearWarmup): ramps the rate linearly over
    the first `epochs` epochs (fractions allowed, counted in batches) with
    LinearWarmup's ramp: batch s of the warm-up trains at (s + 1) / steps of
    the rate in force when the epoch begins. Put it before the plateau
    callback: at each epoch's end it restores that rate, which plateau then
    adjusts. A function of (epoch, batch), so a resumed run warms up exactly
    as an uninterrupted one."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = float(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._rate = epoch, current_lr(self.model)
        self._ramp = LinearWarmup(self._rate, warmup_steps(self.epochs, self.params["steps"]))

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch * self.params["steps"] + batch
        if step < self._ramp.warmup_steps:
            self.model.optimizer.learning_rate = float(keras.ops.convert_to_numpy(self._ramp(step)))

    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self._rate


class ReduceOnPlateau(MonitorCallback):
    """Multiplies the learning rate by `factor` when the monitored loss has
    not improved for `patience` epochs (Keras' ReduceLROnPlateau, with
    state that survives a resume)."""

    def __init__(self, monitor="val_loss", factor=0.5, patience=2, min_lr=0.0):
        super().__init__(monitor, patience)
        self.factor, self.min_lr = factor, min_lr

    def on_patience_out(self, epoch):
        self.model.optimizer.learning_rate = max(self.min_lr, current_lr(self.model) * self.factor)
        self.wait = 0


class EarlyStop(MonitorCallback):
    """Stops training when the monitored loss has not improved for
    `patience` epochs; `stopped_epoch` is then the last epoch run (from 1)."""

    def __init__(self, monitor="val_loss", patience=5):
        super().__init__(monitor, patience)
        self.stopped_epoch = None

    def on_patience_out(self, epoch):
        self.stopped_epoch = epoch + 1
        self.model.stop_training = True


class DivergenceGuard(BatchLogReader):
    """Stops training when the loss diverges: a batch loss that is not
    finite, or above `factor` times the run's first batch loss for
    `patience` batches in a row (or a whole epoch, if an epoch is shorter).

    Keras logs the epoch's running mean, weighted by batch size; each
    batch's own loss is recovered from two consecutive means (with several
    steps a call, their mean loss, and `first_loss` is set beforehand: see
    train.first_batch_loss). A BatchLogReader: on jax and torch each call
    is checked on Keras' callback threads once the device has finished it,
    never stalling the steps queued after it, and the run stops at the next
    call the training loop starts. After a stop, `diverged_epoch` (from 1)
    and `reason` say when and why."""

    def __init__(self, batch_size, samples, *, factor=10.0, patience=50):
        super().__init__()
        self.sums = EpochSums(batch_size, samples)
        self.factor, self.patience = factor, patience
        self.first_loss = None
        self.diverged_epoch = self.reason = None
        self._epoch, self._run = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch = epoch + 1
        self.sums.start()

    def _batch_loss(self, batch, mean):
        """The mean loss of the batches since the last call (one, unless
        several steps run per execution), and how many they were."""
        sums, images, count = self.sums.advance(batch, {"loss": mean})
        return sums["loss"] / max(images, 1), count

    def on_batch_logs(self, batch, logs):
        mean = logs.get("loss")
        if mean is not None and self.diverged_epoch is None:
            self._check(batch, mean)

    def _check(self, batch, mean):
        if not math.isfinite(mean):
            return self._stop(f"the loss became {'NaN' if math.isnan(mean) else 'infinite'}")
        loss, count = self._batch_loss(batch, mean)
        if self.first_loss is None:
            self.first_loss = loss
            return
        self._run = self._run + count if loss > self.factor * self.first_loss else 0
        limit = min(self.patience, self.params.get("steps") or self.patience)
        if self._run >= limit:
            self._stop(f"the loss stayed above {self.factor:g} times its first value ({self.first_loss:.3g}) "
                       f"for {self._run} batches, reaching {loss:.3g}")

    def _stop(self, reason):
        self.diverged_epoch, self.reason = self._epoch, reason
        self.stop_training()

    def get_state(self):
        return {"first_loss": self.first_loss}

    def set_state(self, state):
        self.first_loss = state["first_loss"]


def seed_generator_states(model):
    """The states of the random-seed generators of every layer (dropout
    masks, ...), which .keras files do not store."""
    return {layer.name: [np.asarray(keras.ops.convert_to_numpy(sg.state.value)).tolist()
                         for sg in getattr(layer, "_seed_generators", [])]
            for layer in model.layers if getattr(layer, "_seed_generators", None)}


def set_seed_generator_states(model, states):
    for name, values in states.items():
        layer = model.get_layer(name)
        for sg, value in zip(layer._seed_generators, values):
            sg.state.assign(np.asarray(value, dtype=sg.state.dtype))


class Checkpointer(keras.callbacks.Callback):
    """After every epoch, writes into the folder of the run in progress
    (`files`, a kerascnn.runs.files.RunFiles; each atomically):
    - `best.keras` when the monitored accuracy improved;
    - `epoch-NNN.keras` every `save_every` epochs;
    - `last.keras` with the run state inside (`storage.STATE_ENTRY`): the commit
      point that `--resume` continues from.
    `state_fn(epoch)` returns the state of the run after `epoch` epochs."""

    def __init__(self, files, state_fn, *, monitor="val_accuracy", save_every=None, guard=None):
        super().__init__()
        self.files = files
        self.guard = guard
        self.state_fn = state_fn
        self.monitor = monitor
        self.save_every = save_every
        self.best = -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))) or self.guard and self.guard.diverged_epoch:
            return  # a diverged epoch is never a checkpoint
        done = epoch + 1
        value = logs.get(self.monitor)
        improved = value is not None and float(value) > self.best
        if improved:
            self.best = float(value)
        state = self.state_fn(done)
        storage.ensure_dir(self.files.partial)
        paths = [self.files.in_progress("best")] if improved else []
        if self.save_every and done % self.save_every == 0:
            paths.append(self.files.in_progress(self.files.epoch_kind(done)))
        paths.append(self.files.in_progress("last"))  # last: the commit point
        storage.save_model(network(self.model), paths[0], state=state)  # serialized once, the same bytes copied
        for path in paths[1:]:
            storage.copy_file(paths[0], path)

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = float(state["best"])


class ActivationRecorder(keras.callbacks.Callback):
    """Records the activations of `layers` on a fixed probe batch before
    training (epoch 0) and after every epoch, with the layers' kernels, in
    one compressed float16 .npz rewritten atomically after each epoch:
    `epochs` (E,), `probe_labels`, `probe_index` (test-set indices),
    `<layer>/maps` (E, P, H, W, C) and `<layer>/kernel` (E, ...)."""

    def __init__(self, path, layers, probe_x, probe_labels, probe_index):
        super().__init__()
        self.path = path
        self.layers = list(layers)
        self.probe_x = probe_x
        self.meta = {"probe_labels": np.asarray(probe_labels), "probe_index": np.asarray(probe_index)}
        self.records = {"epochs": []}

    def set_model(self, model):
        model = network(model)
        super().set_model(model)
        names = [layer.name for layer in model.layers]
        missing = [n for n in self.layers if n not in names]
        if missing:
            raise KerasCNNError(f"{spell('record_layers')}: no layer named {', '.join(missing)}; "
                                f"see `kerascnn layers` for the names")
        flat = [n for n in self.layers if len(model.get_layer(n).output.shape) != 4]
        if flat:
            raise KerasCNNError(f"{spell('record_layers')}: {', '.join(flat)} has no spatial output (feature maps)")
        self._probe = keras.Model(model.input, [model.get_layer(n).output for n in self.layers])

    def resume_from(self, epoch, path):
        """Keep the records up to `epoch` from an earlier run's file."""
        if epoch and path.exists():
            with np.load(path) as f:
                keep = f["epochs"] <= epoch
                self.records = {k: list(f[k][keep]) for k in f.files if k not in self.meta}

    def on_train_begin(self, logs=None):
        if not self.records["epochs"]:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)

    def _record(self, epoch):
        outputs = self._probe(self.probe_x, training=False)
        if len(self.layers) == 1:
            outputs = [outputs]
        self.records["epochs"].append(epoch)
        for name, out in zip(self.layers, outputs):
            self.records.setdefault(f"{name}/maps", []).append(
                np.asarray(keras.ops.convert_to_numpy(out)).astype(np.float16))
            layer = self.model.get_layer(name)
            kernel = getattr(layer, "kernel", None)
            if kernel is None:
                kernel = getattr(layer, "depthwise_kernel", None)
            if kernel is not None:
                self.records.setdefault(f"{name}/kernel", []).append(
                    np.asarray(keras.ops.convert_to_numpy(kernel)).astype(np.float16))
        arrays = {k: np.stack(v) for k, v in self.records.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        storage.write_npz(self.path, {**arrays, **self.meta})


class ScalarBoard(keras.callbacks.Callback):
    """TensorBoard logs without TensorFlow (jax, torch): each epoch's metrics
    and learning rate as scalars `epoch_<metric>` in `<log_dir>/train` and
    `<log_dir>/validation`, the layout of Keras' TensorBoard callback, written
    with the tensorboard package's own record writer and protocol buffers."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._files = {}

    def _writer(self, split):
        if split not in self._files:
            import os
            import socket

            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            folder = os.path.join(str(self.log_dir), split)
            os.makedirs(folder, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.kerascnn"
            writer = RecordWriter(open(os.path.join(folder, name), "wb"))
            writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            self._files[split] = writer
        return self._files[split]

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        logs = dict(logs or {})
        scalars = {"train": {k: v for k, v in logs.items() if not k.startswith("val_")},
                   "validation": {k[4:]: v for k, v in logs.items() if k.startswith("val_")}}
        scalars["train"]["learning_rate"] = current_lr(self.model)
        for split, values in scalars.items():
            if not values:
                continue
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"epoch_{k}", simple_value=float(v))
                                                 for k, v in values.items()])
            writer = self._writer(split)
            writer.write(event_pb2.Event(wall_time=time.time(), step=epoch, summary=summary).SerializeToString())
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._files.values():
            writer.close()
        self._files = {}

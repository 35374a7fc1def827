"""The per-step log of a run (`fit --log-every N`): the training loss and
accuracy every N steps into `<name>.steps.csv`, recovered exactly from the
running means Keras logs, and continued exactly by `--resume`; and the
base of the callbacks that read every batch's logs without making the
training loop wait for the device (`BatchLogReader`)."""

import collections
import math
import threading
from pathlib import Path

import keras

from kerascnn.runs import storage
from kerascnn.config.spelling import spell_set
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import STEP_COLUMNS, parse_steps, step_line


class EpochSums:
    """Sums over the images of the batches between two calls, recovered from
    the running means Keras logs after each call: its mean of a metric over
    the epoch's images so far (the loss weighted by batch size) times the
    images seen, less the same product at the previous call. `samples`
    images an epoch, in batches of `batch_size`, the last possibly short.
    In float64 from float32 means: exact to about 1e-7 times the epoch's
    batches so far, relative."""

    def __init__(self, batch_size, samples):
        self.batch_size, self.samples = batch_size, samples
        self.start()

    def start(self):
        """At an epoch's beginning."""
        self.seen, self.totals, self.batch = 0, {}, -1

    def seen_after(self, batch):
        """Images of the epoch trained after `batch` (from 0)."""
        seen = (batch + 1) * self.batch_size
        return min(self.samples, seen) if self.samples else seen

    def advance(self, batch, means):
        """({metric: sum over the images since the last call}, those images,
        the batches since the last call) from Keras' `means` after `batch`."""
        seen = self.seen_after(batch)
        totals = {k: float(v) * seen for k, v in means.items()}
        sums = {k: v - self.totals.get(k, 0.0) for k, v in totals.items()}
        images, batches = seen - self.seen, batch - self.batch
        self.seen, self.totals, self.batch = seen, totals, batch
        return sums, images, batches


class BatchLogReader(keras.callbacks.Callback):
    """A callback that reads each call's training logs in `on_batch_logs(batch,
    logs)` without a host wait per step. It is `async_safe`: on jax and
    torch Keras then converts a call's logs to floats, and runs this, on its
    callback threads while the next steps train (tensorflow converts them on
    its own thread). Those threads may finish out of order, so the calls are
    handed on in the order they began: `on_train_batch_begin`, on the
    training thread, queues each call's first batch, and a call's logs wait
    until every earlier call's have been read. Driven without
    `on_train_batch_begin` (by hand), each call's logs are read at once.
    The loop may start calls up to `AHEAD` steps past the last one read
    (the device has those queued, so it never idles), then waits for the
    reading to catch up: a stop it asks for comes that soon.
    `on_batch_logs` must not touch `self.model` (on jax, reading it copies
    the training state back into the model, racing the loop that is
    donating it): `stop_training()` asks the loop to stop."""

    async_safe = True
    AHEAD = 16  # steps the training loop may start past the last call read
    WAIT_S = 60.0  # the longest it waits for that reading at once (then goes on, never stuck)

    def __init__(self):
        super().__init__()
        self._begun, self._ended, self._lock = collections.deque(), {}, threading.Condition()

    def on_epoch_begin(self, epoch, logs=None):
        # Keras has waited for the last epoch's callbacks before its on_epoch_end: none is running
        self._begun.clear()
        self._ended.clear()

    def on_train_batch_begin(self, batch, logs=None):
        calls = max(1, self.AHEAD // getattr(self._model, "steps_per_execution", 1))
        with self._lock:
            self._begun.append(batch)
            self._lock.wait_for(lambda: len(self._begun) <= calls + 1, timeout=self.WAIT_S)

    def on_train_batch_end(self, batch, logs=None):
        with self._lock:
            if not self._begun:
                return self.on_batch_logs(batch, logs or {})
            self._ended[batch] = logs or {}
            try:
                while self._begun and self._ended:
                    first = min(self._ended)
                    if len(self._begun) > 1 and first >= self._begun[1]:
                        return  # the oldest call has not ended yet
                    self._begun.popleft()
                    self.on_batch_logs(first, self._ended.pop(first))
            finally:
                self._lock.notify_all()

    def on_batch_logs(self, batch, logs):
        """The logs (floats) after the call that ended with `batch`."""
        raise NotImplementedError

    def stop_training(self):
        """Stop the run at the next call the training loop starts."""
        self._model.stop_training = True


class StepLog(BatchLogReader):
    """Every `every` training steps, counted over the run (step = epoch x
    steps an epoch + batch + 1), appends a row to the CSV at `path`
    (runs.files.STEP_COLUMNS): the step, its epoch and batch (from 1), the
    images of that epoch seen so far, and the mean loss and accuracy over
    the images of the steps since the previous row (with every=1, that
    step's batch: its batch loss), recovered from Keras' running means
    (EpochSums); a row's steps may span an epoch's end. Keras reports once
    a call, so the steps of a call must divide `every`
    (plan.resolve_steps_per_execution). `echo`, if set, gets the
    lecture's line for each row: `loss: 0.301234  [ 6400/54000]`.

    The sums since the last row at an epoch's end are its state; a resumed
    run first keeps an earlier file's rows up to its checkpoint
    (`resume_from`), so that no step is repeated or missing."""

    def __init__(self, path, every, batch_size, samples, echo=None):
        super().__init__()
        self.path, self.every, self.samples, self.echo = Path(path), every, samples, echo
        self.sums = EpochSums(batch_size, samples)
        self.carry = {"loss": 0.0, "accuracy": 0.0, "images": 0}
        self._resume = None

    def resume_from(self, epoch, source):
        """Continue after epoch `epoch` (from 1): keep the rows of `source`
        (the earlier attempt's file) up to its end, once the steps of an
        epoch are known (at the start of training)."""
        self._resume = (epoch, Path(source))

    def on_train_begin(self, logs=None):
        if self._resume:
            self._keep_rows(*self._resume, self.params["steps"])
            self._resume = None

    def _keep_rows(self, epoch, source, steps):
        keep = epoch * steps // self.every
        if not keep:
            self.path.unlink(missing_ok=True)
            return
        why = f"resuming after epoch {epoch} needs its first {keep} rows (to step {keep * self.every})"
        if not source.is_file():
            raise KerasCNNError(f"{source} is missing: {why}; start over with {spell_set('overwrite')}")
        lines = source.read_text(encoding="utf-8").splitlines()[:keep + 1]
        rows = parse_steps(lines, source)
        if len(rows) < keep or rows[-1]["step"] != keep * self.every:
            raise KerasCNNError(f"{source} does not match its checkpoint: {why}; start over with "
                                f"{spell_set('overwrite')}")
        storage.write_text(storage.ensure_dir(self.path.parent) / self.path.name, "\n".join(lines) + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch, self._open = epoch, dict(self.carry)
        self.sums.start()

    def on_batch_logs(self, batch, logs):
        steps = self.params["steps"]
        step, last = self._epoch * steps + batch + 1, batch + 1 == steps
        if step % self.every and not last:
            return
        sums, images, _ = self.sums.advance(batch, {k: logs.get(k, math.nan) for k in ("loss", "accuracy")})
        self._open = {k: self._open[k] + v for k, v in {**sums, "images": images}.items()}
        if step % self.every == 0:
            self._write({"step": step, "epoch": self._epoch + 1, "batch": batch + 1, "seen": self.sums.seen,
                         **{k: self._open[k] / max(self._open["images"], 1) for k in ("loss", "accuracy")}})
            self._open = {"loss": 0.0, "accuracy": 0.0, "images": 0}
        if last:
            self.carry = dict(self._open)

    def _write(self, row):
        new = not self.path.is_file()
        if new:
            storage.ensure_dir(self.path.parent)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write((",".join(STEP_COLUMNS) + "\n") * new + step_line(row))
        if self.echo:
            width = max(5, len(str(self.samples)))
            self.echo(f"loss: {row['loss']:>7f}  [{row['seen']:>{width}d}/{self.samples:>{width}d}]")

    def get_state(self):
        return {"carry": self.carry}

    def set_state(self, state):
        self.carry = dict(state["carry"])

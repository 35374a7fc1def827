"""Callbacks: the per-epoch history record."""

import time

import keras
import numpy as np


class HistoryRecorder(keras.callbacks.Callback):
    """Keeps one row per epoch: the epoch (from 1), Keras' logs, the
    learning rate in force and the epoch's wall-clock seconds."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        row["lr"] = float(np.asarray(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)

"""The input path of the jax and torch backends: numpy on the host, the
image work on the accelerator, no TensorFlow.

The host gathers each batch's uint8 images and labels in the epoch's order
(`epoch_order`, a pure function of seed and epoch) and draws its
augmentation parameters (`device_transforms.draw_params`, a pure function of seed,
epoch and batch), a background thread a few batches ahead of the step. The
model trains as `TrainingModel`: `device_transforms.InputTransform` in front of the
network, so scaling, resizing, augmentation and normalization run in the
training step on the device (under JAX inside the jitted step). The network
alone is what is saved.

With the training set on the device (`data_on_device`), the TrainingModel
holds the uint8 images in a non-trainable variable and the host sends each
step only the batch's indices, parameters and labels: the step gathers the
images itself. The batches, their order and their draws are the same.
"""

import queue
import threading

import numpy as np

import keras

from kerascnn.data import device_transforms
from kerascnn.data.sampling import epoch_order, steps_per_epoch

PREFETCH = 4  # batches prepared ahead of the step


def local_rows(n, part):
    """The rows of a batch of `n` that process `part[0]` of `part[1]`
    feeds: its contiguous share, as keras.distribution lays a global batch
    over the devices of the processes in turn."""
    index, count = part
    return slice(n * index // count, n * (index + 1) // count)


class TrainingBatches:
    """The training batches of epochs `initial_epoch` .. `epochs - 1` as one
    stream: ((uint8 images, float32 parameters), int32 labels), the last
    batch of an epoch possibly short; with `indices` the images' int32
    indices into `x` in their place (for a TrainingModel holding `x`).
    `stream()` is the generator `model.fit` reads (prepared `prefetch`
    batches ahead on a thread); `batch(epoch, step)` any one batch. Its
    batch size, sampling and transforms are a run's, as FitConfig checked them."""

    def __init__(self, x, y, *, batch_size, epochs, initial_epoch=0, seed=0, sampling="shuffle", augment=(),
                 image_size=None, prefetch=PREFETCH, multiple=1, part=(0, 1),
                 tricks=None, num_classes=None, indices=False):
        self.x, self.y = x, np.asarray(y, np.int32)
        self.batch_size, self.epochs, self.initial_epoch = batch_size, epochs, initial_epoch
        self.seed, self.sampling, self.augment = seed, sampling, tuple(augment)
        self.image_size = image_size or x.shape[1]
        self.prefetch, self.indices = prefetch, indices
        self.tricks, self.num_classes = tricks, num_classes  # kerascnn.data.tricks: labels one-hot or mixed
        # split over `multiple` devices: an epoch's short last batch keeps a multiple of them (or goes)
        self.multiple = multiple
        self.part = part  # (index, count): this process feeds its share of every batch (local_rows)
        self.steps = steps_per_epoch(len(x), batch_size, multiple)
        self._order = (None, None)

    def order(self, epoch):
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.x), epoch, seed=self.seed, sampling=self.sampling))
        return self._order[1]

    def batch(self, epoch, step):
        index = self.order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        index = index[:len(index) - len(index) % self.multiple]
        params = device_transforms.draw_params(self.augment, len(index), self.image_size, self.seed, epoch, step)
        labels = self.y[index]
        if self.tricks:
            from kerascnn.data.tricks import mix_rows

            rows, labels = mix_rows(self.tricks, labels, self.num_classes, self.image_size, self.seed, epoch, step)
            params = np.concatenate([params, rows], axis=1)
        mine = local_rows(len(index), self.part)  # drawn for the whole batch: every split trains alike
        index, params, labels = index[mine], params[mine], labels[mine]
        return (index.astype(np.int32) if self.indices else self.x[index], params), labels

    def __iter__(self):
        for epoch in range(self.initial_epoch, self.epochs):
            for step in range(self.steps):
                yield self.batch(epoch, step)

    def stream(self, place=None):
        """The batches, prepared on a background thread ahead of the
        consumer; each passed through `place` there when given (turned into
        torch tensors, sent to the device: kerascnn.training.torch_native.feed)."""
        batches = self if place is None else map(place, self)
        if self.prefetch < 1:
            yield from batches
            return
        ready = queue.Queue(self.prefetch)
        stop = threading.Event()
        done = object()

        def produce():
            try:
                for item in batches:
                    while not stop.is_set():
                        try:
                            ready.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                ready.put(done)
            except BaseException as e:  # noqa: BLE001 - raised again in the consumer
                ready.put(e)

        worker = threading.Thread(target=produce, name="kerascnn-batches", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()


class Batches(keras.utils.PyDataset):
    """Batches of `x, y` in order, for evaluation and prediction: with
    `transform` None the uint8 images and a zero parameter row
    ((images, params), labels) for a TrainingModel; else the images passed
    through `transform` (eagerly, on the device), as a plain model takes them."""

    def __init__(self, x, y, batch_size=256, transform=None, columns=1, multiple=1, part=(0, 1), one_hot=0):
        super().__init__()
        self.x, self.y = x, np.asarray(y, np.int32)
        self.batch_size, self.transform, self.columns = batch_size, transform, columns
        self.multiple = multiple  # > 1: split over devices; a short batch padded, its padding weighted 0
        self.part = part  # (index, count): this process's share of every batch (local_rows)
        self.one_hot = one_hot  # > 0: labels one-hot over this many classes (a run with soft labels)

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        images, labels = self.x[part], self.y[part]
        if self.multiple > 1:
            weights = np.ones(len(images), np.float32)
            pad = -len(images) % self.multiple
            if pad:
                images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
                labels = np.concatenate([labels, np.repeat(labels[-1:], pad)])
                weights = np.concatenate([weights, np.zeros(pad, np.float32)])
            mine = local_rows(len(images), self.part)
            images, labels, weights = images[mine], labels[mine], weights[mine]
        if self.one_hot:
            labels = np.eye(self.one_hot, dtype=np.float32)[labels]
        params = np.zeros((len(images), self.columns), np.float32)
        inputs = self.transform(images) if self.transform is not None else (images, params)
        return (inputs, labels, weights) if self.multiple > 1 else (inputs, labels)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

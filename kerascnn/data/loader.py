"""The one input factory: what fit, lr-find, show-batch and the reading
commands consume, on every backend, and the only place that asks which
backend runs (`tf_backend`).

On tensorflow, tf.data pipelines (kerascnn.data.tf_pipeline) hand the model
its input ready. On jax and torch, host batches of uint8 images
(kerascnn.data.host) go to the device, where the run's `input_transform`
(kerascnn.data.device_transforms) turns them into the model's input inside
the step. `create_loader` gives a run's training, validation or test
batches; `make_pipeline` and `preprocess` give any images as a saved
network takes them; `denormalize` undoes that for display.
"""

import dataclasses

import numpy as np

from kerascnn.data.rows import take
from kerascnn.data.sampling import GRAY_WEIGHTS
from kerascnn.errors import KerasCNNError
from kerascnn.runtime.distribution import process_part, sharded


def tf_backend():
    """Whether Keras runs on TensorFlow: the input path is then tf.data;
    on jax and torch it is numpy and keras.ops (kerascnn.data.host), without
    TensorFlow."""
    import keras

    return keras.backend.backend() == "tensorflow"


def preprocess(images, *, input_shape, mean, std, resize="resize"):
    """Scale uint8 images to [0, 1], fit them to `input_shape` (resize, or
    pad when the target is larger), normalize with the dataset's per-channel
    mean and std, and convert gray <-> RGB, on a batch tensor of the backend
    in use (kerascnn.data.device_transforms' keras.ops, on every backend)."""
    from kerascnn.data import device_transforms

    return device_transforms.preprocess(images, tuple(int(v) for v in input_shape), mean, std, resize)


def make_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None, resize="resize"):
    """Batches of `x, y` as a saved network takes them, for evaluation and
    visualization: in order, or shuffled per sample before batching when
    `shuffle` (tf.data reshuffles every pass; on jax and torch one order from
    `seed`), preprocessed. On jax and torch a `kerascnn.data.host.Batches`
    that preprocesses each batch on the device."""
    if batch_size < 1:  # as a notebook gives it (a run's: FitConfig checked it)
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    input_shape = tuple(int(v) for v in input_shape)
    if not tf_backend():
        from kerascnn.data.host import Batches

        if shuffle:
            order = np.random.default_rng(seed).permutation(len(x))
            x, y = take(x, order), np.asarray(y)[order]
        return Batches(x, y, batch_size, transform=lambda images: preprocess(
            images, input_shape=input_shape, mean=mean, std=std, resize=resize))
    from kerascnn.data.tf_pipeline import make_eval_pipeline

    return make_eval_pipeline(x, y, input_shape=input_shape, mean=mean, std=std, batch_size=batch_size, shuffle=shuffle,
                              seed=seed, resize=resize)


def denormalize(x, *, mean, std):
    """`normalize`'s output back to [0, 1] for display (a numpy array). Its
    RGB -> gray sum is not invertible: gray pixels come back exactly, colours
    as the gray of the same weights."""
    if not isinstance(x, np.ndarray):
        import keras

        x = keras.ops.convert_to_numpy(x)  # a tensor, on a GPU perhaps
    x = np.asarray(x, dtype=np.float32)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if x.shape[-1] == 1 and mean.size == 3:
        weights = np.array(GRAY_WEIGHTS, np.float32) / std
        return np.clip((x + (weights * mean).sum()) / weights.sum(), 0, 1)
    return np.clip(x * std + mean, 0, 1)


@dataclasses.dataclass(frozen=True)
class Loader:
    """What `create_loader` returns: the batches a model reads, how many
    make an epoch, and on jax and torch the device side of the input path
    (the `input_transform` the training model runs first; None on tensorflow)."""

    batches: object
    steps: int
    transform: object = None

    def for_fit(self):
        """What `model.fit` reads: the tf.data stream on tensorflow; on jax
        the host batches made on a thread ahead of the step; on torch those
        as tensors placed on the device (kerascnn.data.torch_feed)."""
        import keras

        if tf_backend():
            return self.batches
        if keras.backend.backend() == "torch":
            from kerascnn.data.torch_feed import feed

            return feed(self.batches)
        return self.batches.stream()

    def __iter__(self):
        """The batches as numpy arrays, for a Python loop."""
        return self.batches.as_numpy_iterator() if tf_backend() else iter(self.batches)

    def first_batch(self):
        """The first training batch as the model receives it: (images, labels),
        numpy, the images through the device transform on jax and torch."""
        if self.transform is None:
            return next(iter(self))
        import keras

        (x, params), labels = self.batches.batch(self.batches.initial_epoch, 0)
        return keras.ops.convert_to_numpy(self.transform(x, params, training=True)), labels


def create_loader(plan, split="train", *, initial_epoch=0, epochs=None):
    """The batches of a run's `split`, for the model that trains: "train",
    the training stream of epochs `initial_epoch` to `epochs` (the plan's)
    (`training_batches`); "val" or "test", that split in order
    (`eval_batches`). `plan` is a kerascnn.training.plan.Plan (settings,
    data, tricks, devices, input shape, steps per epoch). The one factory
    fit, lr-find and show-batch read."""
    transform = input_transform(plan)
    data = plan.data
    if split == "train":
        batches = training_batches(plan, initial_epoch, plan.settings.epochs if epochs is None else epochs)
        return Loader(batches, plan.steps_per_epoch, transform)
    x, y = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}[split]
    return Loader(eval_batches(plan, x, y), -(-len(x) // plan.settings.batch_size), transform)


def input_transform(plan):
    """The device side of the jax/torch input path of a run: uint8 images
    and drawn parameters to the model's input; None on tensorflow."""
    if tf_backend():
        return None
    from kerascnn.data.device_transforms import InputTransform

    mean, std = plan.data.stats()
    return InputTransform(plan.input_shape, mean, std, plan.settings.resize, plan.settings.augment,
                          tricks=plan.tricks, name="input_transform")


def model_inputs(plan, x):
    """uint8 images `x` as the run's network takes them, as a numpy array."""
    import keras

    mean, std = plan.data.stats()
    return keras.ops.convert_to_numpy(preprocess(x, input_shape=plan.input_shape, mean=mean, std=std,
                                                 resize=plan.settings.resize))


def eval_batches(plan, x, y):
    """Batches of `x, y` for the model being trained, in order: preprocessed
    (tf.data) on tensorflow; uint8 with a parameter row for its
    TrainingModel on jax and torch."""
    settings, data, tricks = plan.settings, plan.data, plan.tricks
    one_hot = data.num_classes if tricks.soft_labels else 0  # the run's loss takes one-hot labels
    if not tf_backend():
        from kerascnn.data.device_transforms import param_columns
        from kerascnn.data.host import Batches

        return Batches(x, y, settings.batch_size, columns=len(param_columns(settings.augment)) + len(tricks.columns()),
                       multiple=plan.devices, part=process_part(settings.distribute), one_hot=one_hot)
    mean, std = data.stats()
    batches = make_pipeline(x, y, input_shape=plan.input_shape, mean=mean, std=std, batch_size=settings.batch_size,
                            resize=settings.resize)
    if one_hot:
        import tensorflow as tf

        batches = batches.map(lambda images, labels: (images, tf.one_hot(labels, one_hot)))
    return sharded(settings, batches)


def training_batches(plan, initial_epoch, epochs):
    """The training batches of epochs `initial_epoch` to `epochs`, one
    stream. On tensorflow a tf.data stream of the images as the model
    receives them; on jax and torch a `host.TrainingBatches` of uint8 images
    (their indices with `data_on_device` on) and drawn parameters, which
    `input_transform` turns into the model's input on the device."""
    settings, data = plan.settings, plan.data
    if not tf_backend():
        from kerascnn.data.host import TrainingBatches

        return TrainingBatches(data.x_train, data.y_train, batch_size=settings.batch_size, epochs=epochs,
                               initial_epoch=initial_epoch, seed=settings.seed, sampling=settings.sampling,
                               augment=settings.augment, image_size=settings.image_size, multiple=plan.devices,
                               part=process_part(settings.distribute), tricks=plan.tricks,
                               num_classes=data.num_classes, indices=settings.data_on_device == "on")
    from kerascnn.data.tf_augment import Augmenter
    from kerascnn.data.tf_pipeline import make_training_pipeline

    mean, std = data.stats()
    batches, _ = make_training_pipeline(
        data.x_train, data.y_train, input_shape=plan.input_shape, mean=mean, std=std,
        batch_size=settings.batch_size, epochs=epochs, initial_epoch=initial_epoch, seed=settings.seed,
        sampling=settings.sampling, resize=settings.resize,
        augment=Augmenter(settings.augment, settings.image_size) if settings.augment else None, tricks=plan.tricks,
        num_classes=data.num_classes)
    return sharded(settings, batches)

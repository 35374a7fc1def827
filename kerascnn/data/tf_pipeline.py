"""The input path of the tensorflow backend: tf.data pipelines that hand the
model its input ready: scaled, fitted to its size and normalized by
kerascnn.data.device_transforms' keras.ops (TensorFlow ops on this backend,
the same functions jax and torch run in their step), augmented by Keras
preprocessing layers (kerascnn.data.tf_augment) and given the training
tricks. kerascnn.data.loader chooses between this and the jax/torch
path (kerascnn.data.host, kerascnn.data.device_transforms); both visit an
epoch in `sampling.epoch_order`'s order.
"""

import numpy as np

from kerascnn.data import device_transforms
from kerascnn.data.rows import is_lazy
from kerascnn.data.sampling import epoch_order, steps_per_epoch


def _gatherer(x):
    """idx -> the images x[idx] as a uint8 tensor: gathered from a constant
    in memory, or read from a lazy x (a folder's Rows) in a numpy_function,
    so that a folder larger than memory is read a batch at a time."""
    import tensorflow as tf

    if not is_lazy(x):
        images = tf.constant(x)
        return lambda idx: tf.gather(images, idx)
    shape = x.shape[1:]

    def gather(idx):
        batch = tf.numpy_function(lambda i: x[i], [idx], tf.uint8, stateful=False)
        batch.set_shape([None, *shape])
        return batch

    return gather


def make_eval_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None, resize="resize"):
    """Batches of `x, y` in order (or shuffled per sample before batching
    when `shuffle`), preprocessed whole, prefetched."""
    import tensorflow as tf

    gather = _gatherer(x)  # a folder's images read batch by batch, never whole
    labels = tf.constant(np.asarray(y, np.int32))
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda i: (gather(i), tf.gather(labels, i)))
    input_shape = tuple(int(v) for v in input_shape)

    def model_input(images, labels):
        return device_transforms.preprocess(images, input_shape, mean, std, resize), labels

    ds = ds.map(model_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def with_tricks(tricks, images, labels, num_classes, seed, epoch, step):
    """A tf.data batch with kerascnn.data.tricks applied: the parameters and the
    labels from `tricks.mix_rows` (numpy, as on jax and torch), the images
    changed by Keras' layers in the graph."""
    import tensorflow as tf

    from kerascnn.data.tricks import apply, mix_rows

    size = int(images.shape[1])
    rows, labels = tf.numpy_function(
        lambda e, s, y: mix_rows(tricks, y, num_classes, size, seed, int(e), int(s)), [epoch, step, labels],
        [tf.float32, tf.float32 if tricks.soft_labels else tf.int32], stateful=False)
    rows.set_shape([None, len(tricks.columns())])
    labels.set_shape([None, num_classes] if tricks.soft_labels else [None])
    return apply(tricks, images, rows), labels


def make_training_pipeline(x, y, *, input_shape, mean, std, batch_size, epochs, initial_epoch=0, seed=0,
                           sampling="shuffle", augment=None, resize="resize", tricks=None, num_classes=None):
    """The training pipeline for epochs initial_epoch .. epochs-1, one
    stream that `model.fit` reads with `steps_per_epoch = ceil(n / batch)`
    (one iterator for the whole run: a new one each epoch would refill the
    prefetch buffer at every epoch's start, measured slower on LeNet).

    Each epoch's order is `sampling.epoch_order`'s, as on jax and torch; batches are gathered,
    scaled and resized, augmented (an `augment.Augmenter`, seeded per batch
    from seed, epoch and batch number), given `tricks` (kerascnn.data.tricks)
    RandAugmented and mixed, with labels one-hot or mixed over
    `num_classes`, normalized and prefetched. Returns (dataset, steps_per_epoch).
    """
    import tensorflow as tf

    n = len(x)
    steps = steps_per_epoch(n, batch_size)
    gather = _gatherer(x)
    labels = tf.constant(y.astype(np.int32))
    input_shape = tuple(int(v) for v in input_shape)

    def epoch_batches(epoch):
        idx = tf.numpy_function(lambda e: epoch_order(n, int(e), seed=seed, sampling=sampling), [epoch], tf.int64,
                                stateful=False)
        idx.set_shape([n])
        batches = tf.data.Dataset.from_tensor_slices(idx).batch(batch_size).enumerate()
        return batches.map(lambda step, i: (epoch, step, i))

    def make_batch(epoch, step, idx):
        xb = device_transforms.scale_and_resize(gather(idx), input_shape[:2], resize)
        if augment:
            batch_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, step])
            xb = augment(xb, batch_seed)
        yb = tf.gather(labels, idx)
        if tricks:
            xb, yb = with_tricks(tricks, xb, yb, num_classes, seed, epoch, step)
        xb = device_transforms.normalize(xb, input_shape[2], mean, std)
        return xb, yb

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps

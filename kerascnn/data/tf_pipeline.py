"""The input path of the tensorflow backend: tf.data pipelines that hand the
model its input ready, scaled, fitted to its size, augmented (Keras
preprocessing layers, kerascnn.data.tf_augment), given the training tricks
and normalized. kerascnn.data.loader chooses between this and the jax/torch
path (kerascnn.data.host, kerascnn.data.device_transforms); both visit an
epoch in `sampling.epoch_order`'s order.
"""

import numpy as np

from kerascnn.config.choices import RESIZE_MODES
from kerascnn.data.sampling import GRAY_WEIGHTS, epoch_order, steps_per_epoch
from kerascnn.errors import KerasCNNError


def scale_and_resize(images, *, size, resize="resize"):
    """uint8 images to float32 in [0, 1], fitted to size (height, width):
    resized (antialiased when shrinking), or, when `resize="pad"` and the
    target is larger, centred on a border of zeros. The padding comes before
    normalization, so the border is pixel value 0 (MNIST's background, as
    LeNet-5 padded its 28x28 digits to 32x32) and is normalized like any
    black pixel, to -mean/std."""
    import tensorflow as tf

    height, width = size
    x = tf.cast(images, tf.float32) / 255.0
    src_h, src_w = x.shape[1], x.shape[2]
    if (src_h, src_w) != (height, width):
        if resize == "pad" and src_h <= height and src_w <= width:
            x = tf.image.resize_with_crop_or_pad(x, height, width)
        elif resize in RESIZE_MODES:
            x = tf.image.resize(x, (height, width), antialias=src_h > height or src_w > width)
        else:
            raise KerasCNNError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return x


def normalize(x, *, channels, mean, std):
    """Normalize with the dataset's per-channel mean and std, then convert
    gray <-> RGB to the model's `channels`."""
    import tensorflow as tf

    x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    if x.shape[-1] == 1 and channels == 3:
        x = tf.tile(x, [1, 1, 1, 3])
    elif x.shape[-1] == 3 and channels == 1:
        x = tf.reduce_sum(x * tf.constant(GRAY_WEIGHTS), axis=-1, keepdims=True)
    return x


def preprocess(images, *, input_shape, mean, std, resize="resize"):
    """uint8 images as the model takes them, in TensorFlow: scaled to [0, 1],
    fitted to `input_shape` (resize, or pad when the target is larger),
    normalized with the dataset's per-channel mean and std, gray <-> RGB."""
    height, width, channels = input_shape
    x = scale_and_resize(images, size=(height, width), resize=resize)
    return normalize(x, channels=channels, mean=mean, std=std)


def make_eval_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None, resize="resize"):
    """Batches of `x, y` in order (or shuffled per sample before batching
    when `shuffle`), preprocessed whole, prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    input_shape = tuple(int(v) for v in input_shape)

    def prep(images, labels):
        return preprocess(images, input_shape=input_shape, mean=mean, std=std, resize=resize), labels

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32))
    input_shape = tuple(int(v) for v in input_shape)

    def epoch_batches(epoch):
        idx = tf.numpy_function(lambda e: epoch_order(n, int(e), seed=seed, sampling=sampling), [epoch], tf.int64,
                                stateful=False)
        idx.set_shape([n])
        batches = tf.data.Dataset.from_tensor_slices(idx).batch(batch_size).enumerate()
        return batches.map(lambda step, i: (epoch, step, i))

    def prep(epoch, step, idx):
        xb = scale_and_resize(tf.gather(images, idx), size=input_shape[:2], resize=resize)
        if augment:
            batch_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, step])
            xb = augment(xb, batch_seed)
        yb = tf.gather(labels, idx)
        if tricks:
            xb, yb = with_tricks(tricks, xb, yb, num_classes, seed, epoch, step)
        xb = normalize(xb, channels=input_shape[2], mean=mean, std=std)
        return xb, yb

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps

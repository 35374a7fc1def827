"""Datasets and the tf.data input pipeline.

`load_dataset` reads a dataset from where kerascnn.data.sources finds it (local
IDX or .npz files, scikit-learn's digits, tensorflow-datasets), checks its
arrays and splits off the validation set.

Arrays stay uint8 NHWC until `make_pipeline`, which shuffles, batches,
scales to [0, 1], adapts channels, resizes and normalizes for one model.
"""

import dataclasses

import numpy as np

from kerascnn.config.choices import CLASS_NAMES, DATASETS, RESIZE_MODES, SAMPLINGS
from kerascnn.config.spelling import spell
from kerascnn.errors import KerasCNNError
from kerascnn.data.sources import load_arrays


@dataclasses.dataclass
class Dataset:
    """Images as uint8 arrays (N, H, W, C) with integer labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    source: str
    _stats: tuple = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    def stats(self):
        """Per-channel mean and std of the training images scaled to [0, 1]
        (computed once)."""
        if self._stats is None:
            self._stats = channel_stats(self.x_train)
        return self._stats

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
                f"test={len(self.x_test)}, shape={self.image_shape}, source={self.source!r})")


def channel_stats(x, chunk=4096):
    """Per-channel mean and std of uint8 images `x` (N, H, W, C) scaled to
    [0, 1], from exact integer sums taken `chunk` images at a time (a
    float64 copy of Fashion-MNIST's training set would be 380 MB)."""
    channels = x.shape[-1]
    total, squares = np.zeros(channels, np.int64), np.zeros(channels, np.int64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, channels).astype(np.int64)
        total += part.sum(axis=0)
        squares += (part * part).sum(axis=0)
    n = x.size // channels
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return (mean / 255.0).tolist(), (np.sqrt(var) / 255.0).tolist()


def load_dataset(name, data_dir=None, *, val_size=0.1, train_size=None, seed=0, allow_download=True):
    """Load a dataset with a validation split carved from its training set.

    Args:
        name: "mnist", "fashion_mnist", "cifar10" or "digits".
        data_dir: folder holding `<name>/`; defaults to $KERASCNN_DATA_DIR.
        val_size: a fraction (< 1) or a count of training images held out
            for validation, chosen at random by `seed`.
        train_size: keep only this many training images (after the
            validation split), also chosen by `seed`; None keeps all.
        seed: the seed of the split and the subset.
        allow_download: fall back to tensorflow-datasets when no local copy.
    """
    if name not in DATASETS:
        raise KerasCNNError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    arrays, source, where, parts = load_arrays(name, data_dir, allow_download)
    x_train, y_train, x_test, y_test, class_names = _checked(name, arrays, where, parts)

    n_val = _count(val_size, len(x_train), "val_size")
    if n_val >= len(x_train):
        raise KerasCNNError(f"{spell('val_size')} {val_size} leaves no training images (the training set has "
                            f"{len(x_train)})")
    order = np.random.default_rng(seed).permutation(len(x_train))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if train_size is not None:
        n_train = _count(train_size, len(train_idx), "train_size")
        if n_train < 1:
            raise KerasCNNError(f"{spell('train_size')} must keep at least one image, got {train_size}")
        train_idx = np.sort(np.random.default_rng(seed + 1).permutation(train_idx)[:n_train])
    return Dataset(
        name=name,
        x_train=x_train[train_idx], y_train=y_train[train_idx],
        x_val=x_train[val_idx], y_val=y_train[val_idx],
        x_test=x_test, y_test=y_test,
        class_names=class_names, source=source,
    )


def _count(size, total, what):
    if size is None:
        return 0
    if isinstance(size, float) and 0 <= size < 1:
        return int(round(size * total))
    if size < 0 or size != int(size):
        raise KerasCNNError(f"{spell(what)} must be a fraction below 1 or a whole count, got {size}")
    return min(int(size), total)


def _checked(name, arrays, where, parts):
    """The arrays as (x_train, y_train, x_test, y_test, class_names): images
    uint8 NHWC, labels int64 (N,), each set non-empty with one label per image
    in 0..classes-1. Anything else is an error naming the file (`where`) and
    the array in it (`parts`)."""
    class_names = _class_names(name, arrays, where)
    owner = f"class_names lists {len(class_names)}" if "class_names" in arrays else f"{name} has {len(class_names)}"
    out = []
    for split, kind in (("train", "training"), ("test", "test")):
        x_key, y_key = f"x_{split}", f"y_{split}"
        x = _as_nhwc(arrays[x_key], f"{where}: {parts[x_key]}")
        y = _as_labels(arrays[y_key], f"{where}: {parts[y_key]}", len(class_names), owner)
        if len(x) == 0:
            raise KerasCNNError(f"{where}: the {kind} set is empty ({parts[x_key]} holds 0 images); "
                                f"put the complete dataset there")
        if len(x) != len(y):
            raise KerasCNNError(f"{where}: {parts[x_key]} holds {len(x)} images but {parts[y_key]} holds "
                                f"{len(y)} labels; each image needs one label (are the files from different "
                                f"downloads, or is one incomplete?)")
        out += [x, y]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise KerasCNNError(f"{where}: the training images are {_dims(out[0])} but the test images "
                            f"{_dims(out[2])}; both sets must have the same size and channels")
    return (*out, class_names)


def _class_names(name, arrays, where):
    """The file's class names (one string each), else the dataset's."""
    if "class_names" not in arrays:
        return list(CLASS_NAMES[name])
    names = np.asarray(arrays["class_names"])
    if names.ndim != 1 or names.size == 0:
        raise KerasCNNError(f"{where}: class_names must be a list of names, one per class, got shape {names.shape}")
    return [str(c) for c in names]


def _dims(x):
    return "x".join(str(d) for d in x.shape[1:])


def _as_nhwc(x, what):
    """Images as uint8 (N, H, W, C): uint8 as they are, other numbers when
    0..255 (floats 0..1 are scaled up)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise KerasCNNError(f"{what} must be images of shape (N, H, W) or (N, H, W, 1|3), got shape {x.shape}")
    if x.dtype == np.uint8 or x.size == 0:
        return x.astype(np.uint8)
    if x.dtype.kind not in "iuf":
        raise KerasCNNError(f"{what} holds {x.dtype} values; images must be numbers from 0 to 255 "
                            f"(or floats from 0 to 1)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise KerasCNNError(f"{what} holds NaN or infinite values; images must be numbers from 0 to 255 "
                            f"(or floats from 0 to 1)")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise KerasCNNError(f"{what} holds values from {low:g} to {high:g}; images must be numbers from 0 to 255 "
                            f"(or floats from 0 to 1), not normalized")
    if high <= 1.0:
        x = x * 255.0
    return np.round(x).astype(np.uint8)


def _as_labels(y, what, classes, owner):
    """Labels as int64 (N,): whole numbers 0..classes-1, one per image."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise KerasCNNError(f"{what} must hold one label per image, shape (N,), got shape {y.shape}"
                            + ("; for one-hot labels save their argmax" if y.ndim == 2 else ""))
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not (np.isfinite(y) & (y == np.round(y))).all()):
        raise KerasCNNError(f"{what} holds {y.dtype} values that are not whole numbers; labels must be the "
                            f"class numbers 0 to {classes - 1}")
    bad = y[(y < 0) | (y >= classes)]
    if bad.size:
        raise KerasCNNError(f"{what} holds label {bad[0]:g}, but {owner} classes (labels 0 to {classes - 1}); "
                            f"the labels are damaged or belong to another dataset")
    return y.astype(np.int64)


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
        x = tf.reduce_sum(x * tf.constant([0.2989, 0.5870, 0.1140]), axis=-1, keepdims=True)
    return x


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
        weights = np.array([0.2989, 0.5870, 0.1140], np.float32) / std
        return np.clip((x + (weights * mean).sum()) / weights.sum(), 0, 1)
    return np.clip(x * std + mean, 0, 1)


def tf_backend():
    """Whether Keras runs on TensorFlow: the input path is then tf.data;
    on jax and torch it is numpy and keras.ops (kerascnn.data.host), without
    TensorFlow."""
    import keras

    return keras.backend.backend() == "tensorflow"


def preprocess(images, *, input_shape, mean, std, resize="resize"):
    """Scale uint8 images to [0, 1], fit them to `input_shape` (resize, or
    pad when the target is larger), normalize with the dataset's per-channel
    mean and std, and convert gray <-> RGB. Works on a batch tensor: in
    TensorFlow on tensorflow, in keras.ops (kerascnn.data.device_transforms) on jax and
    torch."""
    if not tf_backend():
        from kerascnn.data import device_transforms

        return device_transforms.preprocess(images, input_shape, mean, std, resize)
    height, width, channels = input_shape
    x = scale_and_resize(images, size=(height, width), resize=resize)
    return normalize(x, channels=channels, mean=mean, std=std)


def make_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None,
                  resize="resize"):
    """The pipeline for evaluation and visualization: batches in order (or
    shuffled per sample before batching when `shuffle`), preprocessed
    whole, prefetched. Training uses `make_training_pipeline`. On jax and
    torch (no shuffle) a `kerascnn.data.host.Batches` that preprocesses each
    batch on the device instead."""
    if not tf_backend() and not shuffle:
        from kerascnn.data.host import Batches

        input_shape = tuple(int(v) for v in input_shape)
        return Batches(x, y, batch_size, transform=lambda images: preprocess(
            images, input_shape=input_shape, mean=mean, std=std, resize=resize))
    import tensorflow as tf

    if batch_size < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    input_shape = tuple(int(v) for v in input_shape)

    def prep(images, labels):
        return preprocess(images, input_shape=input_shape, mean=mean, std=std, resize=resize), labels

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_indices(n, epoch, *, seed=0, sampling="shuffle"):
    """The order in which epoch `epoch` (from 0) visits `n` training
    samples: a permutation ("shuffle"), 0..n-1 ("sequential"), or n draws
    with replacement ("bootstrap"). A pure function of (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one. Returns an
    int64 tensor."""
    import tensorflow as tf

    if sampling not in SAMPLINGS:
        raise KerasCNNError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    if sampling == "sequential":
        return tf.range(n, dtype=tf.int64)
    if sampling == "bootstrap":
        return tf.random.stateless_uniform([n], seed=key, minval=0, maxval=n, dtype=tf.int64)
    return tf.cast(tf.argsort(tf.random.stateless_uniform([n], seed=key), stable=True), tf.int64)


def steps_per_epoch(n, batch_size):
    """Batches in an epoch of `n` images: the last one may be short."""
    return -(-n // batch_size)


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

    Each epoch's order comes from `epoch_indices`; batches are gathered,
    scaled and resized, augmented (an `augment.Augmenter`, seeded per batch
    from seed, epoch and batch number), given `tricks` (kerascnn.data.tricks)
    RandAugmented and mixed, with labels one-hot or mixed over
    `num_classes`, normalized and prefetched. Returns (dataset, steps_per_epoch).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    n = len(x)
    steps = steps_per_epoch(n, batch_size)
    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32))
    input_shape = tuple(int(v) for v in input_shape)

    def epoch_batches(epoch):
        idx = epoch_indices(n, epoch, seed=seed, sampling=sampling)
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

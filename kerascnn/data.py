"""Datasets and the one input pipeline.

Sources, in the order `load_dataset` tries them:
1. local files in a data directory (`data_dir`, else `$KERASCNN_DATA_DIR`):
   `<name>/` holding the four standard IDX files (gzipped or not) or one
   `.npz` with x_train, y_train, x_test, y_test (and optionally class_names);
2. scikit-learn's bundled 8x8 digits for `digits` (no download, any machine);
3. tensorflow-datasets, which downloads when a network is there and fails
   within seconds, with a message, when it is not.

Arrays stay uint8 NHWC until `make_pipeline`, which shuffles, batches,
scales to [0, 1], adapts channels, resizes and normalizes for one model.
"""

import dataclasses
import gzip
import os
import socket
import struct
from pathlib import Path

import numpy as np

from kerascnn.choices import DATASETS, SAMPLINGS
from kerascnn.errors import KerasCNNError

DATA_DIR_ENV = "KERASCNN_DATA_DIR"

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# Where tensorflow-datasets fetches each dataset from; probed before a
# download so that an offline machine fails at once instead of retrying.
TFDS_HOSTS = {
    "mnist": "storage.googleapis.com",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "cifar10": "www.cs.toronto.edu",
}


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
            x = self.x_train.reshape(-1, self.x_train.shape[-1]).astype(np.float64) / 255.0
            self._stats = (x.mean(axis=0).tolist(), x.std(axis=0).tolist())
        return self._stats

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
                f"test={len(self.x_test)}, shape={self.image_shape}, source={self.source!r})")


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
    arrays, source = _load_arrays(name, data_dir, allow_download)
    x_train, y_train, x_test, y_test = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    class_names = [str(c) for c in arrays.get("class_names", CLASS_NAMES[name])]
    x_train, x_test = _as_nhwc(x_train), _as_nhwc(x_test)
    y_train, y_test = y_train.astype(np.int64).ravel(), y_test.astype(np.int64).ravel()

    n_val = _count(val_size, len(x_train), "val_size")
    if n_val >= len(x_train):
        raise KerasCNNError(f"val_size {val_size} leaves no training images (the training set has {len(x_train)})")
    order = np.random.default_rng(seed).permutation(len(x_train))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if train_size is not None:
        n_train = _count(train_size, len(train_idx), "train_size")
        if n_train < 1:
            raise KerasCNNError(f"train_size must keep at least one image, got {train_size}")
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
        raise KerasCNNError(f"{what} must be a fraction below 1 or a whole count, got {size}")
    return min(int(size), total)


def _as_nhwc(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise KerasCNNError(f"images must be (N, H, W) or (N, H, W, 1|3), got shape {x.shape}")
    if x.dtype != np.uint8:
        if x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def resolve_data_dir(data_dir=None):
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(data_dir).expanduser() if data_dir else None


def _load_arrays(name, data_dir, allow_download):
    root = resolve_data_dir(data_dir)
    if root is not None:
        if not root.is_dir():
            raise KerasCNNError(f"data directory {root} does not exist")
        folder = root / name
        if folder.is_dir():
            return read_folder(folder), f"local:{folder}"
        if data_dir is not None and name != "digits":
            raise KerasCNNError(f"no {name}/ folder in {root}; it should hold the four IDX files or an .npz")
    if name == "digits":
        return load_digits_arrays(), "sklearn:digits"
    if not allow_download:
        raise KerasCNNError(_offline_message(name))
    return load_tfds_arrays(name), "tensorflow_datasets"


def read_folder(folder):
    """Read a dataset folder: the four IDX files, or one .npz."""
    folder = Path(folder)
    npz = sorted(folder.glob("*.npz"))
    if npz:
        with np.load(npz[0], allow_pickle=False) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise KerasCNNError(f"{npz[0]} lacks {', '.join(missing)}")
            arrays = {k: f[k] for k in f.files}
        return arrays
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()), None)
        if path is None:
            raise KerasCNNError(f"{folder} has no .npz and no {stem}[.gz]; it needs the four IDX files")
        arrays[key] = read_idx(path)
    return arrays


def read_idx(path):
    """Read an IDX file (gzipped or not) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise KerasCNNError(f"cannot read {path}: {e}") from None
    if len(data) < 8:
        raise KerasCNNError(f"{path} is not an IDX file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise KerasCNNError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise KerasCNNError(f"{path} is truncated: header says {dims}, found {body.size} bytes")
    return body.reshape(dims)


def load_digits_arrays(seed=0, test_fraction=0.2):
    """scikit-learn's 8x8 digits scaled to MNIST's 28x28 layout (the digit
    fills the central 20x20, as in MNIST), with a fixed stratified split."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images / 16.0  # values 0..16
    big = np.stack([zoom(im, 20 / 8, order=1) for im in images])
    big = np.pad(np.clip(big, 0, 1), ((0, 0), (4, 4), (4, 4)))
    x = np.round(big * 255).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _offline_message(name):
    return (f"cannot download {name}: no network. Point at local files with --data-dir DIR "
            f"(or {DATA_DIR_ENV}=DIR), DIR holding {name}/ with the four IDX files or an .npz, "
            f"or use --dataset digits, which needs no download")


def network_available(host, port=443, timeout=3.0):
    """True when a TCP connection to host:port opens within `timeout`."""
    try:
        socket.getaddrinfo(host, port)  # fails at once without DNS
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds_arrays(name, tfds_data_dir=None):
    """Load a dataset through tensorflow-datasets as numpy arrays.

    A dataset already prepared in the tfds data directory loads without a
    network; otherwise the download host is probed first so that an offline
    machine fails in seconds.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=tfds_data_dir)
    if not _tfds_prepared(builder):
        if not network_available(TFDS_HOSTS[name]):
            raise KerasCNNError(_offline_message(name))
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001 - tfds raises many kinds
            raise KerasCNNError(f"tensorflow-datasets could not download {name}: {e}. "
                                + _offline_message(name).split(": ", 1)[1]) from None
    arrays = {}
    for split in ("train", "test"):
        # batch_size=-1 would be one step, but crashes on datasets of unknown
        # cardinality; large batches concatenated do the same.
        batches = list(builder.as_dataset(split=split, as_supervised=True).batch(10000).as_numpy_iterator())
        arrays[f"x_{split}"] = np.concatenate([x for x, _ in batches])
        arrays[f"y_{split}"] = np.concatenate([y for _, y in batches])
    names = builder.info.features["label"].names
    arrays["class_names"] = np.array(names if name == "cifar10" else CLASS_NAMES[name])
    return arrays


def _tfds_prepared(builder):
    import logging

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "no dataset_info.json" is the expected answer here
    try:
        return builder.is_prepared()
    except AttributeError:
        return Path(builder.data_path).joinpath("dataset_info.json").exists()
    finally:
        absl.setLevel(level)


RESIZE_MODES = ("resize", "pad")


def scale_and_resize(images, *, size, resize="resize"):
    """uint8 images to float32 in [0, 1], fitted to size (height, width):
    resized (antialiased when shrinking), or padded when `resize="pad"` and
    the target is larger."""
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


def preprocess(images, *, input_shape, mean, std, resize="resize"):
    """Scale uint8 images to [0, 1], fit them to `input_shape` (resize, or
    pad when the target is larger), normalize with the dataset's per-channel
    mean and std, and convert gray <-> RGB. Works on a batch tensor."""
    height, width, channels = input_shape
    x = scale_and_resize(images, size=(height, width), resize=resize)
    return normalize(x, channels=channels, mean=mean, std=std)


def make_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None,
                  resize="resize"):
    """The pipeline for evaluation and visualization: batches in order (or
    shuffled per sample before batching when `shuffle`), preprocessed
    whole, prefetched. Training uses `make_training_pipeline`."""
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


def make_training_pipeline(x, y, *, input_shape, mean, std, batch_size, epochs, initial_epoch=0, seed=0,
                           sampling="shuffle", augment=None, resize="resize"):
    """The training pipeline for epochs initial_epoch .. epochs-1, one
    stream that `model.fit` reads with `steps_per_epoch = ceil(n / batch)`.

    Each epoch's order comes from `epoch_indices`; batches are gathered,
    scaled and resized, augmented (an `augment.Augmenter`, seeded per batch
    from seed, epoch and batch number), normalized and prefetched. Returns
    (dataset, steps_per_epoch).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise KerasCNNError(f"batch size must be at least 1, got {batch_size}")
    n = len(x)
    steps = -(-n // batch_size)
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
        xb = normalize(xb, channels=input_shape[2], mean=mean, std=std)
        return xb, tf.gather(labels, idx)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps

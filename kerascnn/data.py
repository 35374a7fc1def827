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
import math
import os
import socket
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from kerascnn.choices import DATASETS, RESIZE_MODES, SAMPLINGS
from kerascnn.config import spell, spell_set
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
    arrays, source, where, parts = _load_arrays(name, data_dir, allow_download)
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


def resolve_data_dir(data_dir=None):
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(data_dir).expanduser() if data_dir else None


def check_available(name, data_dir=None, *, allow_download=True):
    """Raise the error loading `name` would raise for a missing folder or an
    offline machine, without reading the data (a study checks once, before
    its first run)."""
    if _local_folder(name, data_dir) is not None or name == "digits":
        return
    tfds = _tfds(name)

    if not (allow_download and (_tfds_prepared(tfds.builder(name)) or network_available(TFDS_HOSTS[name]))):
        raise KerasCNNError(_offline_message(name))


def _local_folder(name, data_dir):
    """The local folder holding `name` (None when the data comes from
    elsewhere); a data folder that cannot hold it is an error."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return None
    how = spell("data_dir") if data_dir is not None else DATA_DIR_ENV
    if not root.exists():
        raise KerasCNNError(f"data directory {root} does not exist; check {how}, or leave it out to use "
                            f"the downloaded datasets")
    if not root.is_dir():
        raise KerasCNNError(f"data directory {root} is a file, not a folder; {how} names the folder that "
                            f"holds {name}/")
    folder = root / name
    if folder.is_dir():
        return folder
    if data_dir is not None and name != "digits":
        raise KerasCNNError(f"no {name}/ folder in {root}; it should hold the four IDX files or an .npz")
    return None


def _load_arrays(name, data_dir, allow_download):
    """(arrays, source, where, parts): the raw arrays, where they came from
    (Dataset.source), and how messages name their file and each array."""
    folder = _local_folder(name, data_dir)
    if folder is not None:
        arrays, where, parts = _read_local(folder)
        return arrays, f"local:{folder}", where, parts
    parts = {k: k for k in IDX_FILES}
    if name == "digits":
        return load_digits_arrays(), "sklearn:digits", "scikit-learn's digits", parts
    if not allow_download:
        raise KerasCNNError(_offline_message(name))
    return load_tfds_arrays(name), "tensorflow_datasets", f"tensorflow-datasets' {name}", parts


def read_folder(folder):
    """Read a dataset folder: the four IDX files, or one .npz."""
    return _read_local(folder)[0]


def _read_local(folder):
    """(arrays, where, parts) of a dataset folder: `where` is the .npz or the
    folder, `parts` names each array as the user knows it (key or file)."""
    folder = Path(folder)
    npz = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))  # not macOS's ._x.npz
    if len(npz) > 1:
        raise KerasCNNError(f"{folder} holds {len(npz)} .npz files ({', '.join(p.name for p in npz)}); "
                            f"keep the one dataset file there")
    if npz:
        return read_npz(npz[0]), npz[0], {k: k for k in IDX_FILES}
    arrays, parts = {}, {}
    for key, stem in IDX_FILES.items():
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            raise KerasCNNError(f"{folder} has no .npz and no {stem}[.gz]; it needs the four IDX files "
                                f"({', '.join(IDX_FILES.values())}, gzipped or not) or one .npz")
        arrays[key], parts[key] = read_idx(path), path.name
    return arrays, folder, parts


NPZ_HINT = "an .npz dataset holds the arrays x_train, y_train, x_test and y_test (numpy.savez)"


def read_npz(path):
    """The arrays of an .npz dataset (x_train, y_train, x_test, y_test and
    class_names if there), never unpickling: object arrays are refused."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise KerasCNNError(f"{path} is not a readable .npz: no complete zip archive (the file is damaged or cut "
                            f"short); {NPZ_HINT}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise KerasCNNError(f"{path} lacks {', '.join(missing)}; {NPZ_HINT}")
            return {k: _npz_array(f, k, path) for k in (*IDX_FILES, "class_names") if k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise KerasCNNError(f"cannot read {path}: {e}; the file is damaged or incomplete") from None


def _npz_array(f, key, path):
    try:
        return f[key]
    except (ValueError, SyntaxError, tokenize.TokenError) as e:  # numpy tokenizes an old header, unguarded
        if "allow_pickle" in str(e):
            raise KerasCNNError(f"{path}: {key} is an object array, which could run code when loaded and is "
                                f"refused; save it as numbers (or strings for class_names)") from None
        reason = e if isinstance(e, ValueError) else "its header does not parse"
        raise KerasCNNError(f"cannot read {key} in {path}: {reason}; the file is damaged") from None


def read_idx(path):
    """Read an IDX file of unsigned bytes (gzipped or not) into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise KerasCNNError(f"cannot read {path}: {e}; the file is damaged or incomplete, download it "
                            f"again") from None
    if len(data) < 4:
        raise KerasCNNError(f"{path} is {'empty' if not data else 'truncated'}; download it again")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim == 0:
        raise KerasCNNError(f"{path} is not an IDX file of unsigned bytes (its magic number is {data[:4].hex()}, "
                            f"not 000008..); is it the right file?")
    if len(data) < 4 + 4 * ndim:
        raise KerasCNNError(f"{path} is truncated: it ends inside its header; download it again")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = math.prod(dims)
    if body.size < expected:
        raise KerasCNNError(f"{path} is truncated: its header says {dims} ({expected} bytes), found "
                            f"{body.size}; download it again")
    if body.size > expected:
        raise KerasCNNError(f"{path} holds {body.size - expected} bytes more than its header says {dims}; "
                            f"it is damaged or not an IDX file")
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
    return (f"cannot download {name}: no network. Point at local files with {spell_set('data_dir', 'DIR')} "
            f"(or {DATA_DIR_ENV}=DIR), DIR holding {name}/ with the four IDX files or an .npz, "
            f"or use {spell_set('dataset', 'digits')}, which needs no download")


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
    tfds = _tfds(name)

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


def _tfds(name):
    """tensorflow-datasets, or an error saying what to do without it (and
    TensorFlow, which it needs: a JAX or PyTorch machine may have neither)."""
    try:
        import tensorflow_datasets as tfds

        tfds.builder  # noqa: B018 - a tensorflow-datasets whose TensorFlow is missing imports half
    except (ImportError, AttributeError) as e:
        raise KerasCNNError(f"no local copy of {name}, and downloading it needs tensorflow-datasets and TensorFlow, "
                            f"which are not installed here ({e}); point at local files with {spell_set('data_dir', 'DIR')} (or "
                            f"{DATA_DIR_ENV}=DIR), DIR holding {name}/ with the four IDX files or an .npz, or use "
                            f"{spell_set('dataset', 'digits')}") from None
    return tfds


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
    on jax and torch it is numpy and keras.ops (kerascnn.inputs), without
    TensorFlow."""
    import keras

    return keras.backend.backend() == "tensorflow"


def preprocess(images, *, input_shape, mean, std, resize="resize"):
    """Scale uint8 images to [0, 1], fit them to `input_shape` (resize, or
    pad when the target is larger), normalize with the dataset's per-channel
    mean and std, and convert gray <-> RGB. Works on a batch tensor: in
    TensorFlow on tensorflow, in keras.ops (kerascnn.transforms) on jax and
    torch."""
    if not tf_backend():
        from kerascnn import transforms

        return transforms.preprocess(images, input_shape, mean, std, resize)
    height, width, channels = input_shape
    x = scale_and_resize(images, size=(height, width), resize=resize)
    return normalize(x, channels=channels, mean=mean, std=std)


def make_pipeline(x, y, *, input_shape, mean, std, batch_size=256, shuffle=False, seed=None,
                  resize="resize"):
    """The pipeline for evaluation and visualization: batches in order (or
    shuffled per sample before batching when `shuffle`), preprocessed
    whole, prefetched. Training uses `make_training_pipeline`. On jax and
    torch (no shuffle) a `kerascnn.inputs.Batches` that preprocesses each
    batch on the device instead."""
    if not tf_backend() and not shuffle:
        from kerascnn.inputs import Batches

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


def make_training_pipeline(x, y, *, input_shape, mean, std, batch_size, epochs, initial_epoch=0, seed=0,
                           sampling="shuffle", augment=None, resize="resize"):
    """The training pipeline for epochs initial_epoch .. epochs-1, one
    stream that `model.fit` reads with `steps_per_epoch = ceil(n / batch)`
    (one iterator for the whole run: a new one each epoch would refill the
    prefetch buffer at every epoch's start, measured slower on LeNet).

    Each epoch's order comes from `epoch_indices`; batches are gathered,
    scaled and resized, augmented (an `augment.Augmenter`, seeded per batch
    from seed, epoch and batch number), normalized and prefetched. Returns
    (dataset, steps_per_epoch).
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
        xb = normalize(xb, channels=input_shape[2], mean=mean, std=std)
        return xb, tf.gather(labels, idx)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps

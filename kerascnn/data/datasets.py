"""Datasets and the tf.data input pipeline.

`load_dataset` reads a dataset from where kerascnn.data.sources finds it (local
IDX or .npz files, scikit-learn's digits, tensorflow-datasets), or a folder of
images (kerascnn.data.folders), checks its arrays and splits off the
validation set.

Arrays stay uint8 NHWC until `make_pipeline`, which shuffles, batches,
scales to [0, 1], adapts channels, resizes and normalizes for one model.
"""

import dataclasses

import numpy as np

from kerascnn.config.choices import DATASETS, TEST_SIZE, is_decoded, is_tfds
from kerascnn.config.spelling import spell
from kerascnn.errors import KerasCNNError
from kerascnn.data.folders import load_folder
from kerascnn.data.rows import take
from kerascnn.data.sources import CLASS_NAMES, load_arrays


@dataclasses.dataclass
class Dataset:
    """Images as uint8 arrays (N, H, W, C) with integer labels (N,); a
    folder's images as kerascnn.data.rows.Rows of its memory-mapped cache,
    read as they are indexed."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    source: str
    fingerprint: str = None  # a folder's (folders.fingerprint_of), which its runs record
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


def channel_stats(x, chunk_bytes=1 << 22):
    """Per-channel mean and std of uint8 images `x` (N, H, W, C) scaled to
    [0, 1], from exact integer sums taken about `chunk_bytes` of images at a
    time (a float64 copy of Fashion-MNIST's training set would be 380 MB;
    a folder's images are read from its cache a chunk at a time)."""
    channels = x.shape[-1]
    chunk = max(1, chunk_bytes // max(1, int(np.prod(x.shape[1:]))))
    total, squares = np.zeros(channels, np.int64), np.zeros(channels, np.int64)
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk]).reshape(-1, channels)
        total += part.sum(axis=0, dtype=np.int64)
        wide = part.astype(np.uint16)  # 255 * 255 fits
        squares += (wide * wide).sum(axis=0, dtype=np.int64)
    n = x.size // channels
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return (mean / 255.0).tolist(), (np.sqrt(var) / 255.0).tolist()


def load_dataset(name, data_dir=None, *, val_size=0.1, train_size=None, seed=0, allow_download=True,
                 test_size=TEST_SIZE, image_size=None, resize="resize", fingerprint=None):
    """Load a dataset with a validation split carved from its training set.

    Args:
        name: "mnist", "fashion_mnist", "cifar10" or "digits"; or a folder
            of images (config.choices.is_folder: an existing folder, or a
            path), read by kerascnn.data.folders.load_folder with the last
            four arguments; the Dataset's name is then its absolute path; or
            "tfds:NAME[/CONFIG]", read by kerascnn.data.tfds_images.load_tfds
            as a folder is.
        data_dir: folder holding `<name>/`; defaults to $KERASCNN_DATA_DIR.
            For tfds:, the TensorFlow Datasets data folder (default: tfds').
        val_size: a fraction (< 1) or a count of training images held out
            for validation, chosen at random by `seed`.
        train_size: keep only this many training images (after the
            validation split), also chosen by `seed`; None keeps all.
        seed: the seed of the split and the subset.
        allow_download: fall back to tensorflow-datasets when no local copy.
        test_size: a folder's test images when it has no train/ and test/:
            a fraction (default 0.2) or a count, of each class, the same for
            every seed.
        image_size, resize: the side a folder's images are stored at (None:
            its most common) and how they are fitted to it ("resize", "pad").
        fingerprint: the folder's as a run recorded it; an error if changed.
    """
    if is_decoded(name):
        stored = dict(image_size=image_size, resize=resize, test_size=test_size, fingerprint=fingerprint)
        if is_tfds(name):
            from kerascnn.data.tfds_images import load_tfds

            folder = load_tfds(name, data_dir=data_dir, allow_download=allow_download, **stored)
        else:
            folder = load_folder(name, **stored)
        x_train, y_train, x_test, y_test, class_names, name, fingerprint = folder[:7]
        source = name if is_tfds(name) else f"folder:{name}"
        if folder.x_val is not None:  # a val/ folder: validation as given
            return _subset(name, (x_train, y_train), (folder.x_val, folder.y_val), (x_test, y_test), class_names,
                           source, fingerprint, train_size, seed)
    elif name not in DATASETS:
        raise KerasCNNError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}, a folder of "
                            f"images (a path), or tfds:NAME")
    else:
        arrays, source, where, parts = load_arrays(name, data_dir, allow_download)
        x_train, y_train, x_test, y_test, class_names = _checked(name, arrays, where, parts)
        fingerprint = None

    n_val = _count(val_size, len(x_train), "val_size")
    if n_val >= len(x_train):
        raise KerasCNNError(f"{spell('val_size')} {val_size} leaves no training images (the training set has "
                            f"{len(x_train)})")
    order = np.random.default_rng(seed).permutation(len(x_train))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return _subset(name, (take(x_train, train_idx), y_train[train_idx]), (take(x_train, val_idx), y_train[val_idx]),
                   (x_test, y_test), class_names, source, fingerprint, train_size, seed)


def _subset(name, train, val, test, class_names, source, fingerprint, train_size, seed):
    """The Dataset of these parts, its training images a random `train_size` of them when given."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    train_idx = np.arange(len(x_train))
    if train_size is not None:
        n_train = _count(train_size, len(train_idx), "train_size")
        if n_train < 1:
            raise KerasCNNError(f"{spell('train_size')} must keep at least one image, got {train_size}")
        train_idx = np.sort(np.random.default_rng(seed + 1).permutation(train_idx)[:n_train])
    return Dataset(name=name, x_train=take(x_train, train_idx), y_train=y_train[train_idx], x_val=x_val, y_val=y_val,
                   x_test=x_test, y_test=y_test, class_names=class_names, source=source, fingerprint=fingerprint)


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

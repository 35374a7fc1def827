"""Where a dataset's arrays come from, in the order `data.load_dataset`
tries them, and the file formats read there:
1. local files in a data directory (`data_dir`, else `$KERASCNN_DATA_DIR`):
   `<name>/` holding the four standard IDX files (gzipped or not) or one
   `.npz` with x_train, y_train, x_test, y_test (and optionally class_names);
2. scikit-learn's bundled 8x8 digits for `digits` (no download, any machine);
3. tensorflow-datasets, which downloads when a network is there and fails
   within seconds, with a message, when it is not.
"""

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

from kerascnn.config.choices import is_decoded
from kerascnn.config.spelling import spell, spell_set
from kerascnn.errors import KerasCNNError


DATA_DIR_ENV = "KERASCNN_DATA_DIR"

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# Each dataset's class names, for its files that do not name them.
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}


# Where tensorflow-datasets fetches each dataset from; probed before a
# download so that an offline machine fails at once instead of retrying.
TFDS_HOSTS = {
    "mnist": "storage.googleapis.com",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "cifar10": "www.cs.toronto.edu",
}


def resolve_data_dir(data_dir=None):
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(data_dir).expanduser() if data_dir else None


def check_available(name, data_dir=None, *, allow_download=True):
    """Raise the error loading `name` would raise for a missing folder or an
    offline machine, without reading the data (a study checks once, before
    its first run)."""
    if is_decoded(name) or local_folder(name, data_dir) is not None or name == "digits":
        return  # a folder of images is checked as it loads
    tfds = _tfds(name)

    if not (allow_download and (_tfds_prepared(tfds.builder(name)) or network_available(TFDS_HOSTS[name]))):
        raise KerasCNNError(_offline_message(name))


def local_folder(name, data_dir):
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


def load_arrays(name, data_dir, allow_download):
    """(arrays, source, where, parts): the raw arrays, where they came from
    (Dataset.source), and how messages name their file and each array."""
    folder = local_folder(name, data_dir)
    if folder is not None:
        arrays, where, parts = _read_local(folder)
        return arrays, f"local:{folder}", where, parts
    parts = {k: k for k in IDX_FILES}
    if name == "digits":
        return load_digits_arrays(), "sklearn:digits", "scikit-learn's digits", parts
    if not allow_download:
        raise KerasCNNError(_offline_message(name))
    return load_tfds_arrays(name), "tensorflow_datasets", f"tensorflow-datasets' {name}", parts


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

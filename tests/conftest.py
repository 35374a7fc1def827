import atexit
import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# JAX's compilation cache (kerascnn.runtime.backend) in a folder of this test run,
# shared with the backend subprocesses, never in the user's ~/.cache.
if not os.environ.get("KERASCNN_CACHE_DIR"):
    os.environ["KERASCNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="kerascnn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["KERASCNN_CACHE_DIR"], ignore_errors=True)
from kerascnn.runtime.backend import use_compilation_cache  # noqa: E402

use_compilation_cache()

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The real datasets beside the project (../shared/data) or
    $KERASCNN_DATA_DIR; None when neither is there."""
    for candidate in (os.environ.get("KERASCNN_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data_dir():
    path = shared_data_dir()
    if path is None:
        pytest.skip("real datasets not found (../shared/data or KERASCNN_DATA_DIR)")
    return path


def write_idx(path, array, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim  # unsigned bytes, ndim dimensions
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(header + array.tobytes())


def make_images(n, size=28, channels=1, classes=10, seed=0):
    """Images whose class is visible: class c lights a band at row 2c+1,
    plus noise, so a tiny model can learn them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, size, size, channels)).astype(np.uint8)
    for i, c in enumerate(y):
        row = (2 * c + 1) % size
        x[i, row:row + 2, :, :] = 255
    return x, y.astype(np.uint8)


@pytest.fixture
def idx_dir(tmp_path):
    """A data dir with mnist/ as four gzipped IDX files."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    x_train, y_train = make_images(200, seed=1)
    x_test, y_test = make_images(50, seed=2)
    write_idx(folder / "train-images-idx3-ubyte", x_train[..., 0])
    write_idx(folder / "train-labels-idx1-ubyte", y_train)
    write_idx(folder / "t10k-images-idx3-ubyte", x_test[..., 0], gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", y_test, gz=False)
    return tmp_path / "data"


@pytest.fixture
def npz_dir(tmp_path):
    """A data dir with cifar10/ as one .npz of 32x32 RGB images."""
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    x_train, y_train = make_images(120, size=32, channels=3, seed=3)
    x_test, y_test = make_images(40, size=32, channels=3, seed=4)
    names = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    np.savez(folder / "subset.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=names)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small LeNet trained on the bundled digits, shared by the tests
    that read a saved run."""
    from kerascnn.training.fit import fit

    out = tmp_path_factory.mktemp("run")
    return fit("lenet", "digits", epochs=3, batch_size=64, activation="relu", pool="max",
               output=out, verbose=0)

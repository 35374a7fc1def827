import math
import socket
import time

import numpy as np
import pytest

from kerascnn import data as kdata
from kerascnn.data import epoch_indices, load_dataset, make_pipeline, make_training_pipeline, read_idx
from kerascnn.errors import KerasCNNError
from kerascnn.train import fit
from tests.conftest import write_idx

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)


def test_idx_files_gzipped_and_plain(idx_dir):
    ds = load_dataset("mnist", idx_dir, val_size=0.1, seed=0)
    assert ds.x_train.shape == (180, 28, 28, 1) and ds.x_val.shape == (20, 28, 28, 1)
    assert ds.x_test.shape == (50, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.source.startswith("local:")
    assert ds.class_names == [str(i) for i in range(10)]
    # the split partitions the training set: every image is in exactly one part
    raw = read_idx(idx_dir / "mnist" / "train-images-idx3-ubyte.gz")
    both = np.concatenate([ds.x_train, ds.x_val])[..., 0]
    assert sorted(map(bytes, both)) == sorted(map(bytes, raw))


def test_data_dir_from_environment(idx_dir, monkeypatch):
    monkeypatch.setenv("KERASCNN_DATA_DIR", str(idx_dir))
    assert load_dataset("mnist").source == f"local:{idx_dir / 'mnist'}"


def test_npz_with_class_names(npz_dir):
    ds = load_dataset("cifar10", npz_dir, val_size=20)
    assert ds.x_train.shape == (100, 32, 32, 3) and len(ds.x_val) == 20
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    mean, std = ds.stats()
    assert len(mean) == 3 and all(s > 0 for s in std)


def test_split_is_deterministic_by_seed(idx_dir):
    a = load_dataset("mnist", idx_dir, seed=1)
    b = load_dataset("mnist", idx_dir, seed=1)
    c = load_dataset("mnist", idx_dir, seed=2)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.y_val, c.y_val) or not np.array_equal(a.x_val, c.x_val)


def test_train_size_subset(idx_dir):
    ds = load_dataset("mnist", idx_dir, train_size=30)
    assert len(ds.x_train) == 30 and len(ds.x_val) == 20


def test_digits_is_28x28_with_fixed_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape[1:] == (28, 28, 1) and len(a.x_test) == 360
    assert a.x_train.max() == 255 and a.source == "sklearn:digits"
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert sorted(set(a.y_test.tolist())) == list(range(10))


def test_fashion_class_names_travel_with_data(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    x, y = np.zeros((20, 28, 28), np.uint8), np.arange(20, dtype=np.uint8) % 10
    for stem, arr in [("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                      ("t10k-images-idx3-ubyte", x), ("t10k-labels-idx1-ubyte", y)]:
        write_idx(folder / stem, arr)
    ds = load_dataset("fashion_mnist", tmp_path, val_size=0)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("setup, message", [
    ("missing", "no mnist/ folder"),
    ("truncated", "truncated"),
    ("badmagic", "not an unsigned-byte IDX"),
    ("incomplete", "needs the four IDX files"),
])
def test_bad_local_files_get_clear_errors(tmp_path, idx_dir, setup, message):
    folder = idx_dir / "mnist"
    path = folder / "t10k-labels-idx1-ubyte"
    if setup == "missing":
        idx_dir = tmp_path
    elif setup == "truncated":
        path.write_bytes(path.read_bytes()[:-5])
    elif setup == "badmagic":
        path.write_bytes(b"\x01\x02\x03\x04" + path.read_bytes()[4:])
    else:
        path.unlink()
    with pytest.raises(KerasCNNError, match=message):
        load_dataset("mnist", idx_dir)


def test_unknown_dataset():
    with pytest.raises(KerasCNNError, match="unknown dataset"):
        load_dataset("imagenet")


def test_tfds_without_network_fails_fast(monkeypatch, tmp_path):
    """No network: the tfds path answers in seconds with what to do."""
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    start = time.monotonic()
    with pytest.raises(KerasCNNError, match="--data-dir.*--dataset digits"):
        load_dataset("fashion_mnist")
    assert time.monotonic() - start < 15


def test_tfds_path_converts_to_arrays(monkeypatch, tmp_path):
    """The tfds source yields uint8 NHWC arrays and class names (tfds' own
    mock data, so nothing is downloaded)."""
    import tensorflow_datasets as tfds

    monkeypatch.setattr(kdata, "network_available", lambda host, **_: True)
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset("fashion_mnist", val_size=5)
    assert ds.source == "tensorflow_datasets"
    assert ds.x_train.shape == (25, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.class_names[-1] == "Ankle boot"


def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_pipeline_scales_normalizes_and_batches(idx_dir):
    ds = load_dataset("mnist", idx_dir)
    mean, std = ds.stats()
    pipe = make_pipeline(ds.x_test, ds.y_test, input_shape=(28, 28, 1), mean=mean, std=std, batch_size=16)
    x, y = _batches(pipe)
    assert [b[0].shape[0] for b in pipe] == [16, 16, 16, 2]
    expected = (ds.x_test.astype(np.float32) / 255 - mean[0]) / std[0]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    np.testing.assert_array_equal(y, ds.y_test)


def test_pipeline_shuffles_samples_before_batching(idx_dir):
    ds = load_dataset("mnist", idx_dir)
    kwargs = dict(input_shape=(28, 28, 1), mean=[0.0], std=[1.0], batch_size=10, shuffle=True, seed=3)
    pipe = make_pipeline(ds.x_train, np.arange(len(ds.x_train)), **kwargs)
    first = np.concatenate([y.numpy() for _, y in pipe])
    second = np.concatenate([y.numpy() for _, y in pipe])
    assert sorted(first) == list(range(len(ds.x_train)))
    assert not np.array_equal(first, np.arange(len(first)))
    assert not np.array_equal(first, second), "each epoch reshuffles"
    # single samples move, not whole batches: batch contents are not runs of 10
    assert any(np.ptp(first[i:i + 10]) != 9 for i in range(0, len(first), 10))
    again = np.concatenate([y.numpy() for _, y in make_pipeline(ds.x_train, np.arange(len(ds.x_train)), **kwargs)])
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("target", [(32, 32, 3), (28, 28, 1), (64, 64, 1)])
def test_pipeline_resizes_and_adapts_channels(npz_dir, idx_dir, target):
    cifar = load_dataset("cifar10", npz_dir)
    mnist = load_dataset("mnist", idx_dir)
    for ds in (cifar, mnist):
        mean, std = ds.stats()
        x, _ = next(iter(make_pipeline(ds.x_test, ds.y_test, input_shape=target, mean=mean, std=std,
                                       batch_size=4)))
        assert tuple(x.shape) == (4,) + target


def test_pipeline_pad_keeps_pixels(idx_dir):
    ds = load_dataset("mnist", idx_dir)
    x, _ = next(iter(make_pipeline(ds.x_test, ds.y_test, input_shape=(32, 32, 1), mean=[0.0], std=[1.0],
                                   batch_size=2, resize="pad")))
    np.testing.assert_allclose(x.numpy()[:, 2:30, 2:30], ds.x_test[:2] / 255, atol=1e-6)
    assert float(np.abs(x.numpy()[:, :2]).max()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name, train, test, shape", [
    ("mnist", 60000, 10000, (28, 28, 1)),
    ("fashion_mnist", 60000, 10000, (28, 28, 1)),
    ("cifar10", 10000, 2000, (32, 32, 3)),
])
def test_real_datasets(real_data_dir, name, train, test, shape):
    ds = load_dataset(name, real_data_dir, val_size=0.1)
    assert len(ds.x_train) + len(ds.x_val) == train and len(ds.x_test) == test
    assert ds.image_shape == shape
    if name == "mnist":
        mean, std = ds.stats()
        assert abs(mean[0] - 0.1307) < 0.002 and abs(std[0] - 0.3081) < 0.002
    if name == "fashion_mnist":
        assert ds.class_names[6] == "Shirt"


def test_sampling_orders():
    seq = np.asarray(epoch_indices(100, 3, sampling="sequential"))
    np.testing.assert_array_equal(seq, np.arange(100))
    shuffled = [np.asarray(epoch_indices(100, e, seed=1)) for e in (0, 1)]
    for order in shuffled:
        np.testing.assert_array_equal(np.sort(order), np.arange(100))  # a permutation
    assert not np.array_equal(shuffled[0], shuffled[1])  # a fresh order every epoch
    np.testing.assert_array_equal(np.asarray(epoch_indices(100, 1, seed=1)), shuffled[1])  # a function of the epoch
    boot = np.asarray(epoch_indices(1000, 0, seed=1, sampling="bootstrap"))
    assert len(boot) == 1000 and boot.min() >= 0 and boot.max() < 1000
    unique = len(np.unique(boot))
    assert unique < 1000  # drawn with replacement: repeats
    assert abs(unique / 1000 - (1 - 1 / math.e)) < 0.05  # about 63.2% distinct, as bootstrap gives


def test_sequential_and_bootstrap_pipelines_feed_fit(tmp_path):
    data = load_dataset("digits", val_size=0, train_size=100)
    ds, steps = make_training_pipeline(data.x_train, data.y_train, input_shape=(28, 28, 1), mean=[0.0], std=[1.0],
                                       batch_size=30, epochs=2, sampling="sequential")
    labels = np.concatenate([np.asarray(y) for _, y in ds])
    assert steps == 4 and len(labels) == 200
    np.testing.assert_array_equal(labels[:100], data.y_train)
    r = fit("lenet", epochs=2, sampling="bootstrap", output=tmp_path, **SMALL)
    assert r.config["sampling"] == "bootstrap" and len(r.history) == 2

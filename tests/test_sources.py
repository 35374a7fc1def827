"""kerascnn.data.sources: where a dataset comes from (a data folder of IDX files or an .npz, the environment's
folder, tensorflow-datasets) and how each source fails: fast and in one line."""

import socket
import time

import numpy as np
import pytest

from kerascnn.data import sources
from kerascnn.data.datasets import load_dataset
from kerascnn.errors import KerasCNNError
from kerascnn.data.sources import read_idx
from tests.test_data import _npz


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


def test_missing_data_dir_and_dataset_folder(tmp_path, monkeypatch):
    with pytest.raises(KerasCNNError, match=f"data directory {tmp_path / 'nowhere'} does not exist; check data_dir"):
        load_dataset("mnist", tmp_path / "nowhere")
    monkeypatch.setenv("KERASCNN_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(KerasCNNError, match="does not exist; check KERASCNN_DATA_DIR"):
        load_dataset("mnist")
    (tmp_path / "file").write_text("")
    with pytest.raises(KerasCNNError, match="data directory .*file is a file, not a folder"):
        load_dataset("mnist", tmp_path / "file")
    with pytest.raises(KerasCNNError, match=f"no mnist/ folder in {tmp_path}; it should hold the four IDX files"):
        load_dataset("mnist", tmp_path)


def test_tfds_without_network_fails_fast(monkeypatch, tmp_path):
    """No network: the tfds path answers in seconds with what to do."""
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    start = time.monotonic()
    with pytest.raises(KerasCNNError, match="data_dir='DIR'.*dataset='digits'"):
        load_dataset("fashion_mnist")
    assert time.monotonic() - start < 15


def test_tfds_path_converts_to_arrays(monkeypatch, tmp_path):
    """The tfds source yields uint8 NHWC arrays and class names (tfds' own
    mock data, so nothing is downloaded)."""
    import tensorflow_datasets as tfds

    monkeypatch.setattr(sources, "network_available", lambda host, **_: True)
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset("fashion_mnist", val_size=5)
    assert ds.source == "tensorflow_datasets"
    assert ds.x_train.shape == (25, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.class_names[-1] == "Ankle boot"


def test_dot_files_are_ignored_and_two_npz_are_refused(tmp_path):
    path = _npz(tmp_path)
    (path.parent / "._data.npz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert load_dataset("cifar10", tmp_path).x_train.shape[0] > 0
    (path.parent / "other.npz").write_bytes(path.read_bytes())
    with pytest.raises(KerasCNNError, match=r"cifar10 holds 2 \.npz files \(data\.npz, other\.npz\); keep the one"):
        load_dataset("cifar10", tmp_path)

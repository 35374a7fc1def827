import re

import numpy as np
import pytest

from kerascnn.data.datasets import load_dataset

from kerascnn.data.loader import make_pipeline

from kerascnn.data.sampling import GRAY_WEIGHTS

from kerascnn.data.tf_pipeline import make_training_pipeline
from kerascnn.errors import KerasCNNError
from kerascnn.training.fit import fit
from tests.conftest import make_images, write_idx

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)


def test_npz_with_class_names(npz_dir, tmp_path):
    ds = load_dataset("cifar10", npz_dir, val_size=20)
    assert ds.x_train.shape == (100, 32, 32, 3) and len(ds.x_val) == 20
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    mean, std = ds.stats()
    assert len(mean) == 3 and all(s > 0 for s in std)
    # a file's own class names win over the dataset's, and their count is the class count
    names = ["cat", "dog", "bird"]
    _npz(tmp_path, y_train=np.arange(20) % 3, y_test=np.arange(20) % 3, class_names=np.array(names))
    own = load_dataset("cifar10", tmp_path, val_size=0)
    assert own.class_names == names and own.num_classes == 3


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


def _rewrite(path, change):
    path.write_bytes(change(path.read_bytes()))


def _relabel(folder, stem, labels):
    write_idx(folder / stem, labels, gz=False)  # the fixture's test files are plain
    (folder / f"{stem}.gz").unlink(missing_ok=True)


def _empty_training_set(folder):
    for stem, arr in [("train-images-idx3-ubyte", np.zeros((0, 28, 28))), ("train-labels-idx1-ubyte", [])]:
        (folder / f"{stem}.gz").unlink()
        write_idx(folder / stem, arr, gz=False)


# idx_dir's mnist/ holds gzipped train-* and plain t10k-* files
TRAIN_X, TEST_Y = "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"
BAD_IDX = {
    "missing file": (lambda f: (f / TEST_Y).unlink(),
                     r"mnist has no \.npz and no t10k-labels-idx1-ubyte\[\.gz\]; it needs the four IDX files \("
                     r"train-images-idx3-ubyte, .*gzipped or not\) or one \.npz"),
    "wrong magic": (lambda f: _rewrite(f / TEST_Y, lambda b: b"\x00\x00\x0d\x01" + b[4:]),
                    r"t10k-labels-idx1-ubyte is not an IDX file of unsigned bytes \(its magic number is 00000d01"),
    "truncated raw": (lambda f: _rewrite(f / TEST_Y, lambda b: b[:-5]),
                      r"t10k-labels-idx1-ubyte is truncated: its header says \(50,\) \(50 bytes\), found 45; "
                      r"download it again"),
    "truncated header": (lambda f: _rewrite(f / TEST_Y, lambda b: b[:6]),
                         r"t10k-labels-idx1-ubyte is truncated: it ends inside its header"),
    "empty file": (lambda f: _rewrite(f / TEST_Y, lambda b: b""), r"t10k-labels-idx1-ubyte is empty; download it"),
    "extra bytes": (lambda f: _rewrite(f / TEST_Y, lambda b: b + b"\0\0"),
                    r"t10k-labels-idx1-ubyte holds 2 bytes more than its header says \(50,\)"),
    "truncated gzip": (lambda f: _rewrite(f / TRAIN_X, lambda b: b[: len(b) // 2]),
                       r"cannot read .*train-images-idx3-ubyte\.gz: Compressed file ended before the end-of-stream "
                       r"marker was reached; the file is damaged or incomplete, download it again"),
    "corrupt gzip": (lambda f: _rewrite(f / TRAIN_X, lambda b: b[:20] + bytes(x ^ 0x5A for x in b[20:40]) + b[40:]),
                     r"cannot read .*train-images-idx3-ubyte\.gz: .*; the file is damaged or incomplete"),
    "train counts": (lambda f: write_idx(f / "train-labels-idx1-ubyte", np.zeros(199)),
                     r"mnist: train-images-idx3-ubyte\.gz holds 200 images but train-labels-idx1-ubyte\.gz holds "
                     r"199 labels; each image needs one label"),
    "test counts": (lambda f: _relabel(f, "t10k-labels-idx1-ubyte", np.zeros(51)),
                    r"mnist: t10k-images-idx3-ubyte holds 50 images but t10k-labels-idx1-ubyte holds 51 labels"),
    "label 10": (lambda f: write_idx(f / "train-labels-idx1-ubyte", np.arange(200) % 11),
                 r"mnist: train-labels-idx1-ubyte\.gz holds label 10, but mnist has 10 classes \(labels 0 to 9\); "
                 r"the labels are damaged or belong to another dataset"),
    "label 255": (lambda f: _relabel(f, "t10k-labels-idx1-ubyte", np.full(50, 255)),
                  r"t10k-labels-idx1-ubyte holds label 255, but mnist has 10 classes"),
    "empty dataset": (_empty_training_set,
                      r"mnist: the training set is empty \(train-images-idx3-ubyte holds 0 images\); put the "
                      r"complete dataset there"),
    "labels as images": (lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros(200)),
                         r"train-images-idx3-ubyte\.gz must be images of shape \(N, H, W\) or \(N, H, W, 1\|3\), "
                         r"got shape \(200,\)"),
    "images 2 channels": (lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros((200, 28, 28, 2))),
                          r"got shape \(200, 28, 28, 2\)"),
    "test size differs": (lambda f: write_idx(f / "t10k-images-idx3-ubyte", np.zeros((50, 32, 32)), gz=False),
                          r"mnist: the training images are 28x28x1 but the test images 32x32x1; both sets must have "
                          r"the same size and channels"),
}


@pytest.mark.parametrize("case", BAD_IDX)
def test_bad_idx_files_get_clear_errors(idx_dir, case):
    setup, message = BAD_IDX[case]
    load_dataset("mnist", idx_dir)  # loads before the damage
    setup(idx_dir / "mnist")
    with pytest.raises(KerasCNNError, match=message):
        load_dataset("mnist", idx_dir)


def _npz(tmp_path, **changes):
    """A data dir whose cifar10/data.npz holds valid arrays, with `changes`
    (None drops an array)."""
    x, y = make_images(20, size=8, channels=3)
    arrays = dict(x_train=x, y_train=y, x_test=x, y_test=y)
    arrays.update(changes)
    (tmp_path / "cifar10").mkdir(exist_ok=True)
    np.savez(tmp_path / "cifar10" / "data.npz", **{k: v for k, v in arrays.items() if v is not None})
    return tmp_path / "cifar10" / "data.npz"


class Payload:
    """An object whose unpickling writes a file: proof that nothing unpickles."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _damage(path, change):
    path.write_bytes(change(path.read_bytes()))
    return path


BAD_NPZ = {
    "no y_test": (dict(y_test=None), r"data\.npz lacks y_test; an \.npz dataset holds the arrays x_train, y_train, "
                                     r"x_test and y_test"),
    "one-hot labels": (dict(y_train=np.eye(10)[np.arange(20) % 10]),
                       r"data\.npz: y_train must hold one label per image, shape \(N,\), got shape \(20, 10\); for "
                       r"one-hot labels save their argmax"),
    "fractional labels": (dict(y_test=np.arange(20) / 3), r"data\.npz: y_test holds float64 values that are not "
                                                          r"whole numbers; labels must be the class numbers 0 to 9"),
    "negative label": (dict(y_test=np.arange(20) - 1), r"y_test holds label -1, but cifar10 has 10 classes"),
    "too few class names": (dict(class_names=np.array(["cat", "dog"])),
                            r"y_train holds label 2, but class_names lists 2 classes \(labels 0 to 1\)"),
    "flat images": (dict(x_train=np.zeros((20, 192), np.uint8)),
                    r"data\.npz: x_train must be images of shape \(N, H, W\) or \(N, H, W, 1\|3\), got shape "
                    r"\(20, 192\)"),
    "NaN images": (dict(x_test=np.full((20, 8, 8, 3), np.nan)), r"x_test holds NaN or infinite values"),
    "normalized images": (dict(x_train=np.linspace(-1, 2, 20 * 64 * 3).reshape(20, 8, 8, 3)),
                          r"x_train holds values from -1 to 2; images must be numbers from 0 to 255 \(or floats "
                          r"from 0 to 1\), not normalized"),
    "text images": (dict(x_train=np.full((20, 8, 8, 3), "a")), r"x_train holds <U1 values; images must be numbers"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_arrays_get_clear_errors(tmp_path, case):
    changes, message = BAD_NPZ[case]
    _npz(tmp_path)
    load_dataset("cifar10", tmp_path)  # loads before the damage
    _npz(tmp_path, **changes)
    with pytest.raises(KerasCNNError, match=message):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"garbage" * 20, r"data\.npz is not a readable \.npz: no complete zip archive \(the file is damaged or cut short\)"),
    (lambda b: b[: len(b) // 2], r"data\.npz is not a readable \.npz: no complete zip archive \(the file is damaged or cut short\)"),
    (lambda b: b[:300] + bytes(x ^ 0xFF for x in b[300:310]) + b[310:],
     r"cannot read .*data\.npz: Bad CRC-32 for file 'x_train\.npy'; the file is damaged or incomplete"),
])
def test_damaged_npz_gets_clear_error(tmp_path, damage, message):
    _damage(_npz(tmp_path), damage)
    with pytest.raises(KerasCNNError, match=message):
        load_dataset("cifar10", tmp_path)


def test_npz_object_arrays_are_refused_unopened(tmp_path):
    marker = tmp_path / "unpickled"
    _npz(tmp_path, y_train=np.array([Payload(marker)] * 20, dtype=object))
    with pytest.raises(KerasCNNError, match=r"data\.npz: y_train is an object array, which could run code when "
                                            r"loaded and is refused; save it as numbers"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_data_loading_never_unpickles(tmp_path, idx_dir, monkeypatch):
    """Every np.load in the data path says allow_pickle=False, and no pickle
    loader runs while the IDX and .npz sources load."""
    import pickle

    calls, real_load = [], np.load

    def checked_load(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading data")

    monkeypatch.setattr(np, "load", checked_load)
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    _npz(tmp_path, class_names=np.array([f"c{i}" for i in range(10)]))
    assert load_dataset("cifar10", tmp_path).class_names[3] == "c3"
    assert load_dataset("mnist", idx_dir).num_classes == 10
    assert calls == [False]


def test_unknown_dataset():
    with pytest.raises(KerasCNNError, match="unknown dataset"):
        load_dataset("imagenet")


def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_make_pipeline_checks_its_batch_size():
    """make_pipeline, as a notebook calls it, says what is wrong with its batch size (fit's is FitConfig's)."""
    x, y = np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int64)
    with pytest.raises(KerasCNNError, match="batch size must be at least 1, got 0"):
        make_pipeline(x, y, input_shape=(28, 28, 1), mean=[0.0], std=[1.0], batch_size=0)


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


LUMINANCE = np.array(GRAY_WEIGHTS)  # ITU-R 601-2, as Pillow's convert("L") (tests/test_sampling.py)


@pytest.mark.parametrize("target", [(32, 32, 3), (28, 28, 1), (64, 64, 1)])
def test_pipeline_resizes_and_adapts_channels(npz_dir, idx_dir, target):
    cifar = load_dataset("cifar10", npz_dir)
    mnist = load_dataset("mnist", idx_dir)
    for ds in (cifar, mnist):
        mean, std = ds.stats()

        def first_batch(channels):
            pipe = make_pipeline(ds.x_test, ds.y_test, input_shape=target[:2] + (channels,), mean=mean, std=std,
                                 batch_size=4)
            return next(iter(pipe))[0].numpy()

        x = first_batch(target[2])
        assert x.shape == (4,) + target
        # resizing and normalizing act per channel, so converting after them equals converting the
        # unconverted batch: RGB to gray by luminance, gray to RGB by copying
        same = first_batch(ds.image_shape[-1])
        if ds.image_shape[-1] == 3 and target[2] == 1:
            np.testing.assert_allclose(x[..., 0], same @ LUMINANCE, atol=1e-4)
        if ds.image_shape[-1] == 1 and target[2] == 3:
            np.testing.assert_allclose(x, np.repeat(same, 3, axis=-1), atol=1e-6)


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


def test_sequential_and_bootstrap_pipelines_feed_fit(tmp_path):
    data = load_dataset("digits", val_size=0, train_size=100)
    ds, steps = make_training_pipeline(data.x_train, data.y_train, input_shape=(28, 28, 1), mean=[0.0], std=[1.0],
                                       batch_size=30, epochs=2, sampling="sequential")
    labels = np.concatenate([np.asarray(y) for _, y in ds])
    assert steps == 4 and len(labels) == 200
    np.testing.assert_array_equal(labels[:100], data.y_train)
    r = fit("lenet", epochs=2, sampling="bootstrap", output=tmp_path, **SMALL)
    assert r.config["sampling"] == "bootstrap" and len(r.history) == 2


def _cli(*args):
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("case", ["missing file", "wrong magic", "truncated gzip", "test counts", "label 255",
                                  "empty dataset"])
def test_bad_data_through_the_cli(idx_dir, tmp_path, case):
    """`kerascnn fit` answers a damaged dataset with its one error line and exit code 1."""
    setup, message = BAD_IDX[case]
    setup(idx_dir / "mnist")
    result = _cli("fit", "--dataset", "mnist", "--data-dir", idx_dir, "--epochs", 1, "--output", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert re.search(message, result.stderr) and "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.keras"))


def test_missing_data_dir_through_the_cli_names_the_option(tmp_path):
    result = _cli("fit", "--dataset", "mnist", "--data-dir", tmp_path / "nowhere", "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr == f"error: data directory {tmp_path / 'nowhere'} does not exist; check --data-dir, or " \
                            f"leave it out to use the downloaded datasets\n"


def test_damaged_files_in_a_real_process(idx_dir, tmp_path):
    """In a process of its own (no test harness catching anything): a
    truncated gzip stream and an .npz of object arrays end in one line on
    stderr and exit code 1, no zlib or pickle traceback."""
    import subprocess
    import sys

    from tests.conftest import REPO

    _rewrite(idx_dir / "mnist" / TRAIN_X, lambda b: b[: len(b) // 2])
    _npz(idx_dir, y_test=np.array([Payload(tmp_path / "unpickled")] * 20, dtype=object))
    for dataset, message in (("mnist", "train-images-idx3-ubyte.gz: Compressed file ended"),
                             ("cifar10", "y_test is an object array")):
        out = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--dataset", dataset, "--data-dir", idx_dir,
                              "--output", tmp_path / "out"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 1
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: ") and message in out.stderr, \
            out.stderr
    assert not (tmp_path / "unpickled").exists()


def test_channel_stats_are_numpys_without_a_float_copy():
    from kerascnn.data.datasets import channel_stats

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 9, 7, 3), dtype=np.uint8)
    mean, std = channel_stats(x, chunk_bytes=64 * 9 * 7 * 3 + 5)  # chunks of 64 images: they do not divide 300
    flat = x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-9)
    assert channel_stats(np.full((2, 3, 3, 1), 7, np.uint8)) == ([7 / 255], [0.0])

"""kerascnn.data.tfds_images: `--dataset tfds:NAME[/CONFIG]` read from a TFDS data folder the tests prepare (no
network): its splits, sizes and channels, the cache, the one-line errors, and a run that evaluate reads again."""

import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.data.datasets import load_dataset
from kerascnn.data.rows import is_lazy
from kerascnn.errors import KerasCNNError


def _builders(tfds):
    """Three tiny datasets: mixed-size RGB with train/validation/test, fixed 8x8 gray with train only, and one
    whose supervised keys are not an image and a class label."""

    def examples(n, seed, shape):
        rng = np.random.default_rng(seed)
        for i in range(n):
            label = i % 3
            size = shape(i)
            image = np.full(size, 60 * label, np.uint8) + rng.integers(1, 40, size, dtype=np.uint8)
            yield i, {"image": image, "label": label}

    class KerascnnTestShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.
                                         FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                                       "label": tfds.features.ClassLabel(names=["r", "g", "b"])}))

        def _split_generators(self, dl_manager):
            shape = lambda i: (12, 12, 3) if i % 4 else (9, 14, 3)  # noqa: E731 - most are 12x12
            return {"train": self._generate_examples(30, 0, shape), "validation": self._generate_examples(6, 1, shape),
                    "test": self._generate_examples(9, 2, shape)}

        def _generate_examples(self, n, seed, shape):
            yield from examples(n, seed, shape)

    class KerascnnTestGray(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.
                                         FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                       "label": tfds.features.ClassLabel(num_classes=3)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from examples(30, 3, lambda i: (8, 8, 1))

    class KerascnnTestPairs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "mask"), features=tfds.features.
                                         FeaturesDict({"image": tfds.features.Image(shape=(4, 4, 3)),
                                                       "mask": tfds.features.Image(shape=(4, 4, 1))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                yield i, {"image": np.zeros((4, 4, 3), np.uint8), "mask": np.zeros((4, 4, 1), np.uint8)}

    return KerascnnTestShapes, KerascnnTestGray, KerascnnTestPairs


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data folder with the three datasets prepared in it."""
    tfds = pytest.importorskip("tensorflow_datasets")
    root = tmp_path_factory.mktemp("tensorflow_datasets")
    for builder in _builders(tfds):
        builder(data_dir=str(root)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("KERASCNN_CACHE_DIR", str(path))
    return path / "folders"


def examples(tfds_dir, name, split):
    import tensorflow_datasets as tfds

    ds = tfds.builder(name, data_dir=str(tfds_dir)).as_dataset(split=split, shuffle_files=False)
    return [(e["image"], int(e["label"])) for e in ds.as_numpy_iterator()]


def test_the_splits_sizes_and_labels_are_the_datasets(tfds_dir, cache, monkeypatch):
    from kerascnn.data import tfds_images

    data = load_dataset("tfds:kerascnn_test_shapes", str(tfds_dir))
    assert data.name == "tfds:kerascnn_test_shapes" and data.class_names == ["r", "g", "b"]
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (30, 6, 9)  # validation as given
    assert data.image_shape == (12, 12, 3)  # the most common side
    assert is_lazy(data.x_train) and is_lazy(data.x_test)
    test = examples(tfds_dir, "kerascnn_test_shapes", "test")
    np.testing.assert_array_equal(data.y_test, [label for _, label in test])
    square = next(i for i, (image, _) in enumerate(test) if image.shape == (12, 12, 3))
    other = next(i for i, (image, _) in enumerate(test) if image.shape == (9, 14, 3))
    np.testing.assert_array_equal(data.x_test[square], test[square][0])  # 12x12: stored as it is
    assert data.x_test[other].shape == (12, 12, 3)  # 9x14: stretched to the side
    np.testing.assert_array_equal(np.sort(data.y_train), np.sort([y for _, y in examples(
        tfds_dir, "kerascnn_test_shapes", "train")]))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(tfds_images, "_decode", refuse)
    again = load_dataset("tfds:kerascnn_test_shapes", str(tfds_dir))
    np.testing.assert_array_equal(np.asarray(again.x_test), np.asarray(data.x_test))
    np.testing.assert_array_equal(again.y_test, data.y_test)
    with pytest.raises(KerasCNNError, match="is not the copy the run was trained on"):
        load_dataset("tfds:kerascnn_test_shapes", str(tfds_dir), fingerprint="0" * 32)


def test_a_dataset_without_a_test_split_is_held_out_stratified(tfds_dir):
    data = load_dataset("tfds:kerascnn_test_gray", str(tfds_dir), val_size=0, test_size=0.2, image_size=16,
                        resize="pad")
    assert data.image_shape == (16, 16, 1) and data.class_names == ["0", "1", "2"]
    assert len(data.x_test) == 6 and np.bincount(data.y_test).tolist() == [2, 2, 2]
    image = np.asarray(data.x_test[0])
    assert (image[:4] == 0).all() and (image[4:12, 4:12] > 0).all()  # 8x8 centred on black
    again = load_dataset("tfds:kerascnn_test_gray", str(tfds_dir), val_size=0, test_size=0.2, image_size=16,
                         resize="pad", seed=7)
    np.testing.assert_array_equal(again.y_test, data.y_test)  # the same test images whatever the seed


@pytest.mark.parametrize("name, message", [
    ("tfds:kerascnn_test_pairs", "is not an image classification dataset"),
    ("tfds:kerascnn_no_such_set", "cannot open tfds:kerascnn_no_such_set"),
    ("tfds:", "needs a dataset name"),
])
def test_bad_names_are_one_line(tfds_dir, cache, name, message):
    with pytest.raises(KerasCNNError, match=message) as e:
        load_dataset(name, str(tfds_dir))
    assert "\n" not in str(e.value) and not cache.exists()


def test_a_dataset_not_prepared_offline_is_one_line(tfds_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KerasCNNError, match="not prepared in .*empty and there is no network") as e:
        load_dataset("tfds:kerascnn_test_gray", str(empty), allow_download=False)
    assert "tfds build kerascnn_test_gray --data_dir DIR" in str(e.value) and "\n" not in str(e.value)


def test_a_run_on_a_tfds_dataset_is_read_again(tfds_dir, tmp_path, monkeypatch):
    from kerascnn.cli.commands import cli as main

    monkeypatch.chdir(tmp_path)
    fit = CliRunner().invoke(main, ["fit", "--dataset", "tfds:kerascnn_test_shapes", "--data-dir", str(tfds_dir),
                                    "--epochs", "3", "--batch-size", "6", "--activation", "relu", "--pool", "max",
                                    "--output", "runs"])
    assert fit.exit_code == 0, fit.output
    trained = float(fit.output.split("test accuracy: ")[1].split()[0])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    evaluated = CliRunner().invoke(main, ["evaluate", str(tmp_path / "runs" / "lenet.keras")])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"test accuracy: {trained:.4f} (9 images)" in evaluated.output

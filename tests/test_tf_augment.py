"""kerascnn.data.tf_augment: augmentation changes training batches only, never evaluation data."""

import numpy as np
import pytest

from kerascnn.data.datasets import load_dataset

from kerascnn.data.loader import make_pipeline

from kerascnn.data.tf_pipeline import make_training_pipeline
from kerascnn.training.fit import fit

SMALL = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0)


def _first_batch(ds):
    x, y = next(iter(ds))
    return np.asarray(x), np.asarray(y)


def test_augmentation_changes_training_batches_only():
    data = load_dataset("digits", val_size=0)
    mean, std = data.stats()
    common = dict(input_shape=(28, 28, 1), mean=mean, std=std, batch_size=32, epochs=1, seed=0)
    plain, _ = make_training_pipeline(data.x_train, data.y_train, **common)
    from kerascnn.data.tf_augment import Augmenter

    for name in ("crop", "flip", "rotate", "translate"):
        augmented, _ = make_training_pipeline(data.x_train, data.y_train, augment=Augmenter((name,), 28), **common)
        xa, ya = _first_batch(augmented)
        xp, yp = _first_batch(plain)
        np.testing.assert_array_equal(ya, yp)  # same samples, same order
        assert not np.allclose(xa, xp), name
        assert xa.shape == xp.shape
        again, _ = make_training_pipeline(data.x_train, data.y_train, augment=Augmenter((name,), 28), **common)
        np.testing.assert_array_equal(_first_batch(again)[0], xa)  # seeded: reproducible
    # evaluation batches are never augmented: fit's test pipeline is the plain one
    test = _first_batch(make_pipeline(data.x_test, data.y_test, input_shape=(28, 28, 1), mean=mean, std=std,
                                      batch_size=32))[0]
    expected = (data.x_test[:32].astype(np.float32) / 255.0 - mean[0]) / std[0]
    np.testing.assert_allclose(test[..., 0], expected[..., 0], atol=1e-5)


def test_augmented_fit_evaluates_on_untouched_test_data(tmp_path, monkeypatch):
    """The test accuracy of an augmented run is that of its model on plain test images."""
    import keras

    r = fit("lenet", epochs=1, augment="crop,flip,rotate,translate", output=tmp_path, **SMALL)
    data = load_dataset("digits")
    x = make_pipeline(data.x_test, data.y_test, input_shape=(28, 28, 1), mean=r.config["mean"],
                      std=r.config["std"], batch_size=64)
    loaded = keras.saving.load_model(r.model_path)
    assert loaded.evaluate(x, verbose=0, return_dict=True)["accuracy"] == pytest.approx(r.test_accuracy, abs=1e-6)

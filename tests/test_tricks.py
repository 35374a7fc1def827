"""kerascnn.data.tricks: label smoothing, mixup, cutmix and RandAugment. Core:
the batch-level checks run under tensorflow, jax and torch
(tests/test_backend.py); the runs' checks under tensorflow here, resume
under jax and torch in tests/test_inputs.py, and a model compiled with the
tricks' loss and metric loading in safe mode on every backend in
tests/test_backend.py."""

import keras
import numpy as np
import pytest

from kerascnn.runs import storage
from kerascnn.config.options import FitConfig
from kerascnn.config.spelling import OptionError
from kerascnn.config.tricks import MIX_COLUMNS, Tricks
from kerascnn.data.tricks import apply, mix_rows, mixed_accuracy

N, SIZE, K = 16, 12, 10


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def numbered(n=N, size=SIZE):
    """Image i is the constant (i + 1) / n: every output pixel says which image it came from."""
    return np.broadcast_to(np.arange(1, n + 1, dtype=np.float32)[:, None, None, None] / n, (n, size, size, 1)).copy()


def one_hot(labels):
    return np.eye(K, dtype=np.float32)[labels]


def mixed(tricks, batch):
    """Batch `batch`'s labels, numbered images, drawn rows, mixed labels and mixed images under `tricks`."""
    labels = np.arange(N) % K
    rows, y = mix_rows(tricks, labels, K, SIZE, seed=5, epoch=1, batch=batch)
    x = numbered()
    return labels, x, rows, y, numpy(apply(tricks, x, rows))


@pytest.mark.core
@pytest.mark.parametrize("batch", range(4))
def test_mixup_labels_sum_to_one_and_match_the_image_blend(batch):
    labels, x, rows, y, out = mixed(Tricks(mixup=0.4), batch)
    partner, share = rows[:, 0].astype(int), rows[:, 2]
    np.testing.assert_allclose(rows[:, 1], share)  # the image's share of the pixels is its share of the label
    np.testing.assert_allclose(out, share[:, None, None, None] * x + (1 - share[:, None, None, None]) * x[partner],
                               atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y, share[:, None] * one_hot(labels) + (1 - share[:, None]) * one_hot(labels[partner]),
                               atol=1e-6)
    assert sorted(partner) == list(range(N)) and 0 < share.min() and share.max() < 1
    assert not rows[:, 3:].any()  # no box


@pytest.mark.core
@pytest.mark.parametrize("batch", range(4))
def test_cutmix_label_shares_equal_the_pasted_area(batch):
    labels, x, rows, y, out = mixed(Tricks(cutmix=1.0), batch)
    partner, share = rows[:, 0].astype(int), rows[:, 2]
    moved = partner != np.arange(N)
    own = np.isclose(out, x)[..., 0]
    np.testing.assert_allclose(own[moved].mean(axis=(1, 2)), share[moved], atol=1e-6)
    np.testing.assert_array_equal(out[~own], np.broadcast_to(x[partner], out.shape)[~own])  # pasted from the partner
    top, left, bottom, right = rows[:, 3:].T.astype(int)
    for i in np.flatnonzero(moved):  # the pasted pixels are the box, whole pixels inside the image
        box = np.zeros((SIZE, SIZE), bool)
        box[top[i]:bottom[i], left[i]:right[i]] = True
        np.testing.assert_array_equal(~own[i], box)
        assert 0 <= top[i] <= bottom[i] <= SIZE and 0 <= left[i] <= right[i] <= SIZE
    np.testing.assert_allclose(y, share[:, None] * one_hot(labels) + (1 - share[:, None]) * one_hot(labels[partner]),
                               atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.core
def test_draws_are_a_pure_function_of_seed_epoch_and_batch_and_both_tricks_take_turns():
    tricks = Tricks(mixup=0.2, cutmix=1.0, randaugment=True)
    labels = np.arange(N) % K
    a = mix_rows(tricks, labels, K, SIZE, seed=3, epoch=2, batch=7)
    for x, y in zip(a, mix_rows(tricks, labels, K, SIZE, seed=3, epoch=2, batch=7)):
        np.testing.assert_array_equal(x, y)
    for other in ({"seed": 4, "epoch": 2, "batch": 7}, {"seed": 3, "epoch": 3, "batch": 7},
                  {"seed": 3, "epoch": 2, "batch": 8}):
        assert not np.array_equal(a[0], mix_rows(tricks, labels, K, SIZE, **other)[0])
    cut = [mix_rows(tricks, labels, K, SIZE, seed=3, epoch=0, batch=b)[0][:, 3:7].any() for b in range(40)]
    assert 10 < sum(cut) < 30  # each batch takes mixup or cutmix, with even odds
    assert a[0].shape == (N, len(MIX_COLUMNS) + 2)


@pytest.mark.core
def test_randaugment_is_keras_own_seeded_per_batch():
    tricks = Tricks(randaugment=True)
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    labels = np.arange(8)
    outs = {}
    for batch in (0, 0, 1):
        rows, y = mix_rows(tricks, labels, K, 16, seed=1, epoch=0, batch=batch)
        np.testing.assert_array_equal(y, labels)  # RandAugment leaves the labels alone
        outs.setdefault(batch, []).append(numpy(apply(tricks, x, rows)))
    np.testing.assert_array_equal(outs[0][0], outs[0][1])
    assert not np.allclose(outs[0][0], outs[1][0]) and not np.allclose(outs[0][0], x)
    assert outs[0][0].shape == x.shape and outs[0][0].min() >= -1e-6 and outs[0][0].max() <= 1 + 1e-6


def _drawn_one_by_one(layer, x, transformation):
    """RandAugment's drawn operations applied in turn, each to new tensors made from numpy copies."""
    def fresh(value):
        return keras.ops.convert_to_tensor(numpy(value).copy()) if keras.ops.is_tensor(value) else value

    for index in numpy(transformation["layer_idxes"]):
        name = list(transformation["transforms"])[int(index)]
        draws = {k: fresh(v) for k, v in (transformation["transforms"][name] or {}).items()} or None
        x = numpy(getattr(layer, name).transform_images(fresh(keras.ops.convert_to_tensor(x)), draws))
    return x


@pytest.mark.core
def test_randaugment_computes_only_the_drawn_operations_each_on_fresh_tensors():
    from kerascnn.data.tricks import drawn_operations, keras_layers

    layer = keras_layers()[2]
    x = np.random.default_rng(1).random((4, 12, 12, 1)).astype(np.float32)
    before, drawn, calls = x.copy(), set(), []
    for seed in range(8):
        transformation = layer.get_random_transformation(x, training=True, seed=seed)
        drawn.update(int(i) for i in numpy(transformation["layer_idxes"]))
        ours = numpy(drawn_operations(layer, x, transformation))
        np.testing.assert_allclose(ours, _drawn_one_by_one(layer, x, transformation), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(numpy(drawn_operations(layer, x, transformation)), ours)  # draws unchanged
        np.testing.assert_array_equal(x, before)  # the images too
        if keras.backend.backend() != "torch":  # Keras' own layer computes all eleven, and agrees
            np.testing.assert_allclose(numpy(layer.transform_images(x, transformation)), ours, rtol=0, atol=1e-6)
        else:  # eager: count the operations computed
            for name in transformation["transforms"]:
                getattr(layer, name).transform_images = lambda images, *a, name=name: calls.append(name) or images
            drawn_operations(layer, x, transformation)
            for name in transformation["transforms"]:
                del getattr(layer, name).transform_images
            assert len(calls) == layer.num_ops
            calls.clear()
    assert len(drawn) > 3  # the seeds drew several operations


@pytest.mark.core
def test_randaugment_strength_is_keras_factor_and_runs_saved_before_it_had_keras_default():
    from kerascnn.config.options import upgrade
    from kerascnn.data.tricks import keras_layers

    weak = Tricks.of(FitConfig(randaugment=True, randaugment_strength=0.1))
    assert weak.randaugment_strength == 0.1 and weak.describe() == "randaugment 0.1"
    assert Tricks.of(FitConfig(randaugment=True)).describe() == "randaugment"
    layer = keras_layers(0.1)[2]
    assert layer.factor == (0, 0.1) and layer.random_rotation.factor == (0, 0.1)  # rotations of 0 to 36 degrees
    assert keras_layers()[2].factor == (0, 0.5)
    x = np.random.default_rng(2).random((8, 16, 16, 1)).astype(np.float32)
    rows, _ = mix_rows(weak, np.arange(8), K, 16, seed=0, epoch=0, batch=0)
    strong = numpy(apply(Tricks(randaugment=True, randaugment_strength=0.9), x, rows))
    assert numpy(apply(weak, x, rows)).shape == x.shape and not np.array_equal(numpy(apply(weak, x, rows)), strong)
    saved = {"arch": "lenet", "format": 2, "given": {}, "input_shape": [28, 28, 1], "randaugment": True}
    assert upgrade(saved)["randaugment_strength"] == 0.5


@pytest.mark.core
def test_mixed_accuracy_is_the_labels_weight_on_the_predicted_class():
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [0, 0, 5]], np.float32)  # predicts 0, 1, 2
    hard = np.eye(3, dtype=np.float32)[[0, 2, 2]]
    np.testing.assert_allclose(numpy(mixed_accuracy(hard, logits)), [1, 0, 1])
    mixed = np.array([[0.7, 0.3, 0], [0.6, 0.4, 0], [0.5, 0, 0.5]], np.float32)
    np.testing.assert_allclose(numpy(mixed_accuracy(mixed, logits)), [0.7, 0.4, 0.5], atol=1e-6)


@pytest.mark.parametrize("options, name", [({"mixup": -0.1}, "mixup"), ({"cutmix": -1}, "cutmix"),
                                           ({"label_smoothing": 1.0}, "label_smoothing"),
                                           ({"randaugment": "often"}, "randaugment"),
                                           *[({"randaugment": on, "randaugment_strength": s}, "randaugment_strength")
                                             for on, s in ((True, 0), (True, 1.5), (False, 0.2))]])
def test_bad_trick_values_are_one_clear_error(options, name):
    with pytest.raises(OptionError, match=name):
        FitConfig(**options)


def test_the_tf_data_path_mixes_as_the_jax_and_torch_paths_do():
    """The same seed gives the same partners, shares, boxes, RandAugment operations and labels on every backend
    (in the same order of images: the paths draw their shuffles differently)."""
    from kerascnn.data.tf_pipeline import make_training_pipeline
    from kerascnn.data.host import TrainingBatches

    x = np.random.default_rng(0).integers(0, 256, (40, SIZE, SIZE, 1)).astype(np.uint8)
    y = np.arange(40) % K
    tricks = Tricks(mixup=0.2, cutmix=1.0, label_smoothing=0.1, randaugment=True)
    stream, steps = make_training_pipeline(x, y, input_shape=(SIZE, SIZE, 1), mean=[0.0], std=[1.0], batch_size=16,
                                           epochs=2, seed=3, sampling="sequential", tricks=tricks, num_classes=K)
    host = TrainingBatches(x, y, batch_size=16, epochs=2, seed=3, sampling="sequential", tricks=tricks,
                           num_classes=K, prefetch=0)
    assert steps == host.steps == 3
    for (images, labels), ((raw, params), host_labels) in zip(stream, host):
        np.testing.assert_allclose(np.asarray(labels), host_labels, atol=1e-6)
        mixed = numpy(apply(tricks, raw.astype(np.float32) / 255, params[:, 1:]))  # params: "unused", then the rows
        np.testing.assert_allclose(np.asarray(images), mixed, atol=1e-6)


def test_a_run_with_every_trick_trains_resumes_its_loss_and_shows_its_batch(tmp_path):
    from kerascnn.analysis.preview import show_batch
    from kerascnn.training.fit import fit

    options = dict(dataset="digits", batch_size=64, train_size=256, activation="relu", pool="max", verbose=0,
                   mixup=0.2, cutmix=1.0, randaugment=True, label_smoothing=0.1, output=str(tmp_path))
    result = fit("lenet", epochs=1, **options)
    assert result.config["label_smoothing"] == 0.1 and result.config["randaugment"] is True
    assert 0 < result.history[0]["accuracy"] < 1 and np.isfinite(result.history[0]["loss"])
    model = storage.load_model(tmp_path / "lenet.last.keras")
    assert model.loss.get_config()["label_smoothing"] == 0.1  # resumed with the same loss
    resumed = fit("lenet", epochs=2, resume=True, **options)
    assert len(resumed.history) == 2
    shown_options = {k: v for k, v in options.items() if k not in ("verbose", "output", "activation", "pool", "dataset")}
    shown = show_batch("lenet", "digits", output=tmp_path / "batch.png", count=8, **shown_options)
    assert shown.labels.shape == (64, 10) and np.allclose(shown.labels.sum(axis=1), 1, atol=1e-5)
    assert (shown.labels.max(axis=1) < 1).any()  # some labels mixed


def test_caption_names_a_mixed_labels_classes_by_weight():
    from kerascnn.analysis.preview import caption

    names = [str(i) for i in range(4)]
    assert caption(np.array(2), names) == "2"
    assert caption(np.array([0, 0, 1.0, 0]), names) == "2"
    assert caption(np.array([0.38, 0, 0.62, 0]), names) == "2 62% + 0 38%"

"""kerascnn.data.device_transforms: the keras.ops transforms of the jax/torch input path
against the tf.data path's (Keras' layers run in TensorFlow), given the same
parameters. Core: run under tensorflow, jax and torch (tests/test_backend.py);
the comparisons skip where TensorFlow is not installed."""

import keras
import numpy as np
import pytest

from kerascnn.data import device_transforms
from kerascnn.data.sampling import GRAY_WEIGHTS

pytestmark = pytest.mark.core

# float32 bilinear sampling by another framework's kernels: pixels in [0, 1] agree to 1e-5 (measured
# about 1e-6); resizing with antialias goes through other filters in jax and torch: 2e-3 (measured below 1e-3).
EXACT, SAMPLED, RESIZED = 0.0, 1e-5, 2e-3


def images(n=6, size=28, channels=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.uint8)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def tf_layer(layer):
    """A Keras preprocessing layer computing in TensorFlow, as kerascnn.data.tf_augment runs it in tf.data."""
    pytest.importorskip("tensorflow")
    layer.backend.set_backend("tensorflow")
    return layer


def scaled(x):
    return x.astype(np.float32) / 255.0


def test_draw_params_are_a_pure_function_of_seed_epoch_and_batch():
    names = ("crop", "flip", "rotate", "translate")
    a = device_transforms.draw_params(names, 64, 28, seed=3, epoch=1, batch=5)
    assert a.shape == (64, len(device_transforms.param_columns(names))) == (64, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, device_transforms.draw_params(names, 64, 28, seed=3, epoch=1, batch=5))
    for other in ({"seed": 4, "epoch": 1, "batch": 5}, {"seed": 3, "epoch": 2, "batch": 5},
                  {"seed": 3, "epoch": 1, "batch": 6}):
        assert not np.array_equal(a, device_transforms.draw_params(names, 64, 28, **other))
    pad = device_transforms.crop_pad(28)
    assert pad == 3 and set(np.unique(a[:, :2])) <= set(range(2 * pad + 1)) and set(np.unique(a[:, 2])) == {0, 1}
    assert np.abs(a[:, 3]).max() <= device_transforms.MAX_DEGREES and np.abs(a[:, 4:]).max() <= 0.1 * 28
    assert device_transforms.draw_params((), 5, 28, 0, 0, 0).shape == (5, 1)  # a batch always carries a row


def test_crop_matches_keras_random_crop_image_by_image():
    x = scaled(images())
    params = device_transforms.draw_params(("crop",), len(x), 28, seed=1, epoch=0, batch=0)
    pad = device_transforms.crop_pad(28)
    ours = numpy(device_transforms.crop(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(params), pad))
    layer = tf_layer(keras.layers.RandomCrop(28, 28))
    padded = np.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    for i, (dy, dx) in enumerate(params.astype(int)):  # Keras' RandomCrop: one offset per batch
        theirs = np.asarray(layer.transform_images(padded[i:i + 1], (int(dy), int(dx)), training=True))
        np.testing.assert_array_equal(ours[i:i + 1], theirs)
    assert len({tuple(p) for p in params}) > 1  # the offsets do differ between images


def test_flip_matches_keras_random_flip():
    x = scaled(images())
    flags = np.array([[1], [0], [1], [1], [0], [0]], np.float32)
    ours = numpy(device_transforms.flip(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(flags)))
    layer = tf_layer(keras.layers.RandomFlip("horizontal"))
    import tensorflow as tf

    theirs = layer.transform_images(tf.constant(x), {"flips": tf.constant(flags.reshape(-1, 1, 1, 1) > 0.5),
                                                     "input_shape": x.shape}, training=True)
    np.testing.assert_array_equal(ours, np.asarray(theirs))


def test_rotate_matches_keras_random_rotation():
    x = scaled(images())
    degrees = np.linspace(-10, 10, len(x), dtype=np.float32)[:, None]
    ours = numpy(device_transforms.rotate(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(degrees)))
    layer = tf_layer(keras.layers.RandomRotation(10 / 360, fill_mode="constant"))
    import tensorflow as tf

    n = len(x)
    angle = tf.constant(degrees[:, 0])
    matrix = layer._compute_affine_matrix(center_x=0.5, center_y=0.5, angle=angle, translate_x=tf.zeros([n]),
                                          translate_y=tf.zeros([n]), scale=tf.ones([n]), shear_x=tf.zeros([n]),
                                          shear_y=tf.zeros([n]), height=28, width=28)
    theirs = layer.transform_images(tf.constant(x), {"angle": angle, "rotation_matrix": matrix, "image_height": 28,
                                                     "image_width": 28, "batch_size": n}, training=True)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=SAMPLED)
    assert np.abs(ours - x).max() > 0.1  # it did rotate


def test_translate_matches_keras_random_translation():
    x = scaled(images())
    shifts = np.random.default_rng(2).uniform(-2.8, 2.8, (len(x), 2)).astype(np.float32)
    ours = numpy(device_transforms.translate(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(shifts)))
    layer = tf_layer(keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"))
    import tensorflow as tf

    theirs = layer.transform_images(tf.constant(x), {"translations": tf.constant(shifts), "input_shape": x.shape},
                                    training=True)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=SAMPLED)
    assert np.abs(ours - x).max() > 0.1


@pytest.mark.parametrize("size, resize, channels", [(28, "resize", 1), (56, "resize", 1), (20, "resize", 3),
                                                    (32, "pad", 1), (32, "resize", 3)])
def test_preprocess_matches_tensorflows_image_ops(size, resize, channels):
    """Scaling, resizing (antialiased when shrinking) or padding, normalization, gray <-> RGB in keras.ops,
    against tf.image's resize and pad (what the tf.data path ran before it took these same functions)."""
    tf = pytest.importorskip("tensorflow")

    x = images(channels=3 if (size, channels) == (20, 3) else 1)
    mean, std = ([0.3, 0.4, 0.5], [0.2, 0.3, 0.25]) if x.shape[-1] == 3 else ([0.3], [0.25])
    ours = numpy(device_transforms.preprocess(x, (size, size, channels), mean, std, resize))
    scaled = tf.cast(tf.constant(x), tf.float32) / 255.0
    if resize == "pad":
        scaled = tf.image.resize_with_crop_or_pad(scaled, size, size)
    elif size != x.shape[1]:
        scaled = tf.image.resize(scaled, (size, size), antialias=size < x.shape[1])
    theirs = ((scaled - tf.constant(mean)) / tf.constant(std)).numpy()
    if theirs.shape[-1] == 1 and channels == 3:
        theirs = np.repeat(theirs, 3, axis=-1)
    elif theirs.shape[-1] == 3 and channels == 1:
        theirs = theirs @ np.asarray(GRAY_WEIGHTS, np.float32)[:, None]
    assert ours.shape == theirs.shape == (len(x), size, size, channels)
    tolerance = SAMPLED if size == 28 or resize == "pad" else RESIZED / min(std)
    np.testing.assert_allclose(ours, theirs, atol=tolerance)


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_flip_is_crop_then_flip_on_any_dtype(channels):
    x = images(channels=channels, size=32)
    params = device_transforms.draw_params(("crop", "flip"), len(x), 32, seed=3, epoch=1, batch=2)
    pad = device_transforms.crop_pad(32)
    assert 0 < params[:, 2].sum() < len(x)  # some images mirrored, some not
    for batch in (x, scaled(x)):
        tensor, p = keras.ops.convert_to_tensor(batch), keras.ops.convert_to_tensor(params)
        both = numpy(device_transforms.crop_flip(tensor, p[:, :2], p[:, 2:], pad))
        np.testing.assert_array_equal(both, numpy(device_transforms.flip(device_transforms.crop(tensor, p[:, :2], pad), p[:, 2:])))
        assert both.dtype == batch.dtype


def test_input_transform_crops_and_flips_the_bytes_as_it_would_the_scaled_image():
    x = images()
    names = ("crop", "flip")
    params = device_transforms.draw_params(names, len(x), 28, seed=0, epoch=0, batch=0)
    layer = device_transforms.InputTransform((28, 28, 1), [0.3], [0.25], augment=names)
    after = device_transforms.augment(keras.ops.convert_to_tensor(scaled(x)), keras.ops.convert_to_tensor(params), names,
                               layer.pad)
    np.testing.assert_allclose(numpy(layer(x, params, training=True)), (numpy(after) - 0.3) / 0.25, atol=1e-6)


def test_input_transform_augments_only_when_training():
    x = images()
    names = ("crop", "flip", "rotate", "translate")
    params = device_transforms.draw_params(names, len(x), 28, seed=0, epoch=0, batch=0)
    layer = device_transforms.InputTransform((28, 28, 1), [0.3], [0.25], augment=names)
    plain = numpy(layer(x, params, training=False))
    np.testing.assert_allclose(plain, (scaled(x) - 0.3) / 0.25, atol=1e-6)
    augmented = numpy(layer(x, params, training=True))
    assert augmented.shape == plain.shape and np.abs(augmented - plain).mean() > 0.1
    np.testing.assert_array_equal(augmented, numpy(layer(x, params, training=True)))  # no hidden randomness

"""GoogLeNet / Inception v1 (Szegedy et al., 2014) as d2l builds it: a
convolutional stem, nine Inception blocks of four parallel branches
(1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1) concatenated, global
average pooling and one dense layer; no auxiliary classifiers. Convolutions
start from He normal over the fan-out (`init="he"`), which learns faster
than Keras' Glorot default here (docs/zoo.md)."""

import keras
from keras import layers

from kerascnn.models.common import check_input_shape, check_width, conv_block, pooled_head, scaled

DEFAULT_SIZE = 96
MIN_SIZE = 32  # five stride-2 stages leave 1x1

# name: (1x1, (3x3 reduce, 3x3), (5x5 reduce, 5x5), pool projection);
# a None entry is a 3x3/2 max pooling between stages.
INCEPTIONS = (
    ("inception3a", (64, (96, 128), (16, 32), 32)),
    ("inception3b", (128, (128, 192), (32, 96), 64)),
    ("pool3", None),
    ("inception4a", (192, (96, 208), (16, 48), 64)),
    ("inception4b", (160, (112, 224), (24, 64), 64)),
    ("inception4c", (128, (128, 256), (24, 64), 64)),
    ("inception4d", (112, (144, 288), (32, 64), 64)),
    ("inception4e", (256, (160, 320), (32, 128), 128)),
    ("pool4", None),
    ("inception5a", (256, (160, 320), (32, 128), 128)),
    ("inception5b", (384, (192, 384), (48, 128), 128)),
)


def inception_block(x, c1, c2, c3, c4, *, name, activation="relu", batchnorm=False, init="glorot"):
    """Four parallel branches, concatenated along channels."""
    conv = dict(activation=activation, batchnorm=batchnorm, init=init)
    b1 = conv_block(x, c1, 1, name=f"{name}_1x1", **conv)
    b2 = conv_block(x, c2[0], 1, name=f"{name}_3x3_reduce", **conv)
    b2 = conv_block(b2, c2[1], 3, name=f"{name}_3x3", **conv)
    b3 = conv_block(x, c3[0], 1, name=f"{name}_5x5_reduce", **conv)
    b3 = conv_block(b3, c3[1], 5, name=f"{name}_5x5", **conv)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = conv_block(b4, c4, 1, name=f"{name}_pool_proj", **conv)
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def _encoder(x, *, width, activation, batchnorm, init):
    """The stem (conv1, pool1, conv2_reduce, conv2, pool2), then INCEPTIONS."""
    conv = dict(activation=activation, batchnorm=batchnorm, init=init)

    def w(channels):
        return scaled(channels, width)

    x = conv_block(x, w(64), 7, strides=2, name="conv1", **conv)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = conv_block(x, w(64), 1, name="conv2_reduce", **conv)
    x = conv_block(x, w(192), 3, name="conv2", **conv)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    for block, spec in INCEPTIONS:
        if spec is None:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=block)(x)
            continue
        c1, (r3, c3), (r5, c5), cp = spec
        x = inception_block(x, w(c1), (w(r3), w(c3)), (w(r5), w(c5)), w(cp), name=block, **conv)
    return x


def build_googlenet(
    *,
    input_shape=(96, 96, 1),
    num_classes=10,
    activation="relu",
    batchnorm=False,
    init="he",
    width=1.0,
    include_top=True,
    classifier_activation=None,
    name="googlenet",
):
    """Build GoogLeNet; `width` scales every branch."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family="googlenet")
    width = check_width(width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, width=width, activation=activation, batchnorm=batchnorm, init=init)
    if include_top:
        x = pooled_head(x, num_classes, classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)

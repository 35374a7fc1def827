"""AlexNet (Krizhevsky et al., 2012) as the seed lecture builds it for one
framework-neutral graph: five convolutions (11x11 stride 4 with padding 2,
5x5, three 3x3), overlapping 3x3/2 max pooling, two 4096-unit dense layers
with dropout. Channels 64-192-384-256-256, as torchvision's single-tower
version."""

import keras
from keras import layers

from kerascnn.models.common import check_input_shape, check_width, conv_block, dense_head, pooling_layer, scaled

DEFAULT_SIZE = 224
# conv1 -> pool1 -> pool2 -> pool5 must leave at least 1x1:
# floor((s + 4 - 11) / 4) + 1 >= 15.
MIN_SIZE = 63
CHANNELS = (64, 192, 384, 256, 256)


def _encoder(x, channels, *, activation, pool, batchnorm, init):
    """conv1 (11x11/4) -> pool1 -> conv2 (5x5) -> pool2 -> conv3..5 (3x3) -> pool5."""
    conv = dict(activation=activation, batchnorm=batchnorm, init=init)
    x = layers.ZeroPadding2D(2, name="conv1_pad")(x)
    x = conv_block(x, channels[0], 11, strides=4, padding="valid", name="conv1", **conv)
    x = pooling_layer(pool, 3, 2, name="pool1")(x)
    x = conv_block(x, channels[1], 5, name="conv2", **conv)
    x = pooling_layer(pool, 3, 2, name="pool2")(x)
    x = conv_block(x, channels[2], 3, name="conv3", **conv)
    x = conv_block(x, channels[3], 3, name="conv4", **conv)
    x = conv_block(x, channels[4], 3, name="conv5", **conv)
    return pooling_layer(pool, 3, 2, name="pool5")(x)


def build_alexnet(
    *,
    input_shape=(224, 224, 1),
    num_classes=10,
    activation="relu",
    pool="max",
    batchnorm=False,
    init="glorot",
    width=1.0,
    dense_units=4096,
    dropout=0.5,
    include_top=True,
    classifier_activation=None,
    name="alexnet",
):
    """Build AlexNet. `width` scales the conv channels; `dense_units` sets the
    width of fc1 and fc2."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family="alexnet")
    width = check_width(width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, [scaled(c, width) for c in CHANNELS], activation=activation, pool=pool, init=init,
                 batchnorm=batchnorm)
    if include_top:
        x = dense_head(x, num_classes, (dense_units, dense_units), activation=activation, batchnorm=batchnorm,
                       dropout=dropout, classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)

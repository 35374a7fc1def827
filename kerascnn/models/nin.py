"""Network in Network (Lin et al., 2013) as d2l builds it: NiN blocks (a
spatial convolution followed by two 1x1 convolutions), max pooling, and a
last NiN block with one channel per class, averaged globally instead of
dense layers. Batch normalization is on by default (`batchnorm=False` is
d2l's network): without it NiN learns on some seeds and not on others
(docs/zoo.md)."""

import keras
from keras import layers

from kerascnn.models.common import (check_input_shape, check_num_classes, check_width, conv_block, conv_head,
                                    pooling_layer, scaled)

DEFAULT_SIZE = 224
# conv1 (11x11 stride 4, no padding) -> three 3x3/2 poolings leave >= 1x1.
MIN_SIZE = 67

# (channels, kernel, stride, padding) of each NiN block before the classifier
BLOCKS = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))


def _nin_block(x, filters, kernel, strides, padding, *, name, activation, batchnorm, init="glorot"):
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = conv_block(x, filters, kernel, strides=strides, padding="valid", name=f"{name}_conv",
                   activation=activation, batchnorm=batchnorm, init=init)
    for i in (1, 2):
        x = conv_block(x, filters, 1, name=f"{name}_mlp{i}", activation=activation, batchnorm=batchnorm,
                       init=init)
    return x


def _encoder(x, *, width, activation, pool, batchnorm, init):
    """NiN blocks `nin1`..`nin3`, each followed by 3x3/2 pooling."""
    for b, (channels, kernel, strides, padding) in enumerate(BLOCKS, start=1):
        x = _nin_block(x, scaled(channels, width), kernel, strides, padding, name=f"nin{b}",
                       activation=activation, batchnorm=batchnorm, init=init)
        x = pooling_layer(pool, 3, 2, name=f"pool{b}")(x)
    return x


def build_nin(
    *,
    input_shape=(224, 224, 1),
    num_classes=10,
    activation="relu",
    pool="max",
    batchnorm=True,
    init="glorot",
    width=1.0,
    dropout=0.5,
    include_top=True,
    name="nin",
):
    """Build NiN. The head is the classifier NiN block (`classifier_*`) and
    the global average pooling that yields the logits."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family="nin")
    width = check_width(width)
    check_num_classes(num_classes)  # NiN checks it for the encoder alone too, unlike the other families

    def classifier_block(x, filters, *, name):
        return _nin_block(x, filters, 3, 1, 1, name=name, activation=activation, batchnorm=batchnorm, init=init)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, width=width, activation=activation, pool=pool, batchnorm=batchnorm, init=init)
    if include_top:
        x = conv_head(x, num_classes, classifier_block, dropout=dropout)
    return keras.Model(inputs, x, name=name)

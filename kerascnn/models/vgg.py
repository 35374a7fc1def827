"""VGG (Simonyan & Zisserman, 2014): blocks of 3x3 convolutions, each block
closed by 2x2 max pooling, then two dense layers. A variant is its block
list; `width` scales the channels (d2l trains VGG-11 at width 0.25).
Convolutions start from He normal over the fan-out (`init="he"`), as
torchvision's VGG does: with Keras' Glorot default VGG-16 does not learn
(docs/zoo.md)."""

import keras

from kerascnn.models.common import check_input_shape, check_width, conv_block, dense_head, pooling_layer, scaled

DEFAULT_SIZE = 224
MIN_SIZE = 32  # five 2x2 poolings

# (convolutions, channels) per block
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def _encoder(x, blocks, *, width, activation, pool, batchnorm, init):
    """Per block, its 3x3 convolutions `block<b>_conv<i>` and `block<b>_pool`."""
    for b, (convs, channels) in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            x = conv_block(x, scaled(channels, width), 3, name=f"block{b}_conv{i}", activation=activation,
                           batchnorm=batchnorm, init=init)
        x = pooling_layer(pool, 2, 2, name=f"block{b}_pool")(x)
    return x


def build_vgg(
    blocks,
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    activation="relu",
    pool="max",
    batchnorm=False,
    init="he",
    width=1.0,
    dense_units=4096,
    dropout=0.5,
    include_top=True,
    classifier_activation=None,
    name="vgg",
):
    """Build a VGG network from its (convolutions, channels) block list."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family=name)
    width = check_width(width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, blocks, width=width, activation=activation, pool=pool, batchnorm=batchnorm, init=init)
    if include_top:
        x = dense_head(x, num_classes, (dense_units, dense_units), activation=activation, batchnorm=batchnorm,
                       dropout=dropout, classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)


def build_vgg11(*, input_shape=(224, 224, 3), num_classes=1000, activation="relu", pool="max", batchnorm=False,
                init="he", width=1.0, dense_units=4096, dropout=0.5, include_top=True,
                classifier_activation=None, name="vgg11"):
    """VGG-11 (configuration A): 8 convolutions and 3 dense layers."""
    return build_vgg(VGG11, **locals())


def build_vgg16(*, input_shape=(224, 224, 3), num_classes=1000, activation="relu", pool="max", batchnorm=False,
                init="he", width=1.0, dense_units=4096, dropout=0.5, include_top=True,
                classifier_activation=None, name="vgg16"):
    """VGG-16 (configuration D): 13 convolutions and 3 dense layers."""
    return build_vgg(VGG16, **locals())


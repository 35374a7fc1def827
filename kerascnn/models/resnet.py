"""ResNet-18 (He et al., 2015): a 7x7 stem, four stages of two basic
residual blocks (two 3x3 convolutions with batch normalization), 1x1
projection shortcuts where the shape changes, global average pooling and
one dense layer. Convolutions carry no bias, as batch normalization follows
each; the parameter count is torchvision's resnet18."""

import keras
from keras import layers

from kerascnn.models.common import check_input_shape, check_width, conv_bn_act, pooled_head, scaled

DEFAULT_SIZE = 96
MIN_SIZE = 32  # stem and three strided stages leave 1x1

STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))  # (channels, blocks, first stride)


def _conv_bn(x, filters, kernel, *, name, strides=1, batchnorm=True, activation=None, init="glorot"):
    """`name_pad` (explicit, as torchvision pads), `name_conv`, `name_bn` with
    PyTorch's epsilon and, given an activation, `name_<activation>`."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return conv_bn_act(x, filters, kernel, strides=strides, use_bias=not batchnorm, conv_name=f"{name}_conv",
                       name=name, activation=activation, batchnorm=batchnorm, epsilon=1e-5, init=init)


def basic_block(x, filters, *, strides, name, activation="relu", batchnorm=True, init="glorot"):
    """Two 3x3 conv-BN layers plus a shortcut (a 1x1 projection when the
    stride or the width changes), as `conv2_block1_1_conv`, ..."""
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides=strides, name=f"{name}_0", batchnorm=batchnorm, init=init)
    else:
        shortcut = x
    y = _conv_bn(x, filters, 3, strides=strides, name=f"{name}_1", batchnorm=batchnorm, activation=activation,
                 init=init)
    y = _conv_bn(y, filters, 3, name=f"{name}_2", batchnorm=batchnorm, init=init)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation(activation, name=f"{name}_out")(y)


def _encoder(x, *, width, activation, batchnorm, init):
    """The stem (`conv1`, `pool1`), then the STAGES as `conv2`..`conv5`."""
    x = _conv_bn(x, scaled(64, width), 7, strides=2, name="conv1", batchnorm=batchnorm, activation=activation,
                 init=init)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for s, (channels, blocks, stride) in enumerate(STAGES, start=2):
        for b in range(1, blocks + 1):
            x = basic_block(x, scaled(channels, width), strides=stride if b == 1 else 1,
                            name=f"conv{s}_block{b}", activation=activation, batchnorm=batchnorm, init=init)
    return x


def build_resnet18(
    *,
    input_shape=(96, 96, 1),
    num_classes=10,
    activation="relu",
    batchnorm=True,
    init="glorot",
    width=1.0,
    include_top=True,
    classifier_activation=None,
    name="resnet18",
):
    """Build ResNet-18; `width` scales every stage."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family="resnet18")
    width = check_width(width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, width=width, activation=activation, batchnorm=batchnorm, init=init)
    if include_top:
        x = pooled_head(x, num_classes, classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)

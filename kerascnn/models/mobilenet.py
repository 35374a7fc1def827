"""MobileNet v1 (Howard et al., 2017): a strided 3x3 convolution, then
thirteen depthwise separable blocks (3x3 depthwise conv -> BN -> ReLU6 ->
1x1 pointwise conv -> BN -> ReLU6), global average pooling and one dense
layer. `width` is the paper's alpha; layer names and the parameter count
are those of keras.applications.MobileNet."""

import keras
from keras import layers

from kerascnn.models.common import GLOBAL_POOL, check_input_shape, check_width, conv_bn_act, pooled_head, scaled

DEFAULT_SIZE = 224
MIN_SIZE = 32

# (pointwise channels, stride) of depthwise separable blocks 1..13
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def depthwise_separable_block(x, filters, *, strides, block_id, activation="relu6", batchnorm=True,
                              depth_multiplier=1, init="glorot"):
    """`conv_dw_<id>` (depthwise 3x3) and `conv_pw_<id>` (pointwise 1x1)."""
    if strides == 1:
        padding = "same"
    else:
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
        padding = "valid"
    bn_act = dict(activation=activation, batchnorm=batchnorm, init=init)
    x = conv_bn_act(x, 3, conv=layers.DepthwiseConv2D, strides=strides, padding=padding,
                    depth_multiplier=depth_multiplier, use_bias=not batchnorm, name=f"conv_dw_{block_id}", **bn_act)
    return conv_bn_act(x, filters, 1, use_bias=not batchnorm, name=f"conv_pw_{block_id}", **bn_act)


def _encoder(x, *, width, activation, batchnorm, depth_multiplier, init):
    """`conv1` (3x3/2), then the depthwise separable BLOCKS 1..13."""
    x = conv_bn_act(x, scaled(32, width), 3, strides=2, padding="same", use_bias=not batchnorm, name="conv1",
                    activation=activation, batchnorm=batchnorm, init=init)
    for block_id, (filters, strides) in enumerate(BLOCKS, start=1):
        x = depthwise_separable_block(x, scaled(filters, width), strides=strides, block_id=block_id,
                                      activation=activation, batchnorm=batchnorm,
                                      depth_multiplier=depth_multiplier, init=init)
    return x


def build_mobilenet(
    *,
    input_shape=(224, 224, 3),
    num_classes=1000,
    activation="relu6",
    batchnorm=True,
    init="glorot",
    width=1.0,
    depth_multiplier=1,
    dropout=1e-3,
    include_top=True,
    classifier_activation=None,
    name="mobilenet",
):
    """Build MobileNet v1; `width` is alpha, the width multiplier."""
    check_input_shape(input_shape, min_size=MIN_SIZE, family="mobilenet")
    width = check_width(width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, width=width, activation=activation, batchnorm=batchnorm, depth_multiplier=depth_multiplier,
                 init=init)
    if include_top:
        x = pooled_head(x, num_classes, pool_name=GLOBAL_POOL, dropout=dropout,
                        classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)

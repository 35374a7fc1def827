"""LeNet-5 and the variants courses build from it.

The textbook network (LeCun et al., 1998, as d2l builds it for 28x28 inputs):
conv1 (padding keeps the size) -> pool1 -> conv2 (valid) -> pool2 -> flatten
-> fc1 (120) -> fc2 (84) -> logits. Every knob of the classic experiments is a
keyword: the activation, the pooling, the kernel size, the two conv widths,
batch normalization after each hidden activation, and conv1's padding
("valid" is the paper's LeNet-5: 32x32 in, 28x28x6 after C1).
"""

import keras

from kerascnn.config.choices import PADDINGS
from kerascnn.config.families import kernel_problem
from kerascnn.errors import KerasCNNError
from kerascnn.models.common import check_input_shape, conv_bn_act, dense_head, pooling_layer

DEFAULT_SIZE = 28
MIN_SIZE = 12  # 5x5 kernels: conv2 on 6x6 leaves 2x2 to pool


def _encoder(x, *, activation, pool, kernel, channels, batchnorm, init, padding):
    """conv1 (`padding`) -> pool1 -> conv2 (valid) -> pool2, with BN after
    each activation: BN(act(conv(x)))."""
    for i, (filters, padding) in enumerate(zip(channels, (padding, "valid")), start=1):
        x = conv_bn_act(x, filters, kernel, padding=padding, name=f"conv{i}", activation=activation,
                        batchnorm=batchnorm, order="act_bn", init=init)
        x = pooling_layer(pool, 2, 2, name=f"pool{i}")(x)
    return x


def _check_kernel_fits(kernel, padding, height, width):
    """conv1 keeps the size ("same") or shrinks it by kernel - 1 ("valid"),
    pool1 halves it, conv2 (valid) shrinks it by kernel - 1, and pool2 needs
    at least 2x2 to pool."""
    shrink = kernel - 1 if padding == "valid" else 0
    after_conv2 = (min(height, width) - shrink) // 2 - kernel + 1
    if after_conv2 < 2:
        need = 2 * (kernel + 1) + shrink
        raise KerasCNNError(
            f"kernel {kernel} does not fit a {height}x{width} input in LeNet"
            f"{' with padding valid' if shrink else ''}: conv2 would leave {max(after_conv2, 0)}x"
            f"{max(after_conv2, 0)}; use a smaller kernel or images of at least {need}x{need}"
        )


def build_lenet(
    activation="sigmoid",
    pool="avg",
    kernel=5,
    channels=(6, 16),
    batchnorm=False,
    *,
    padding="same",
    init="glorot",
    input_shape=(28, 28, 1),
    num_classes=10,
    dense_units=(120, 84),
    include_top=True,
    classifier_activation=None,
    name="lenet",
):
    """Build LeNet-5 as a flat functional model.

    Args:
        activation: hidden activation, any name Keras accepts
            ("sigmoid", "tanh", "relu", ...).
        pool: "avg" or "max" 2x2 pooling with stride 2.
        kernel: odd convolution kernel size (5, 7, 11, ...).
        channels: the widths of conv1 and conv2.
        batchnorm: put BatchNormalization after each hidden activation,
            f(x) = BN(activation(x)).
        padding: conv1's padding: "same" keeps the size (d2l's LeNet on
            28x28), "valid" shrinks it by kernel - 1 (the paper's LeNet-5 on
            32x32: 28x28x6 after C1). conv2 is always valid.
        init: the conv kernels' initializer: "glorot" (Keras' default) or
            "he" (He normal over the fan-out, as torchvision).
        input_shape: (height, width, channels) of the images.
        num_classes: number of classes of the classifier.
        dense_units: the widths of fc1 and fc2.
        include_top: False returns the encoder alone (ends at `pool2`).
        classifier_activation: None gives logits; "softmax" gives
            probabilities.
        name: the model's name.
    """
    kernel = int(kernel)
    if kernel_problem(kernel):
        raise KerasCNNError(f"kernel {kernel_problem(kernel)}, got {kernel}")
    channels = tuple(int(c) for c in channels)
    if len(channels) != 2 or min(channels) < 1:
        raise KerasCNNError(f"channels must be two positive widths such as 6,16, got {channels}")
    if padding not in PADDINGS:
        raise KerasCNNError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    height, width, _ = check_input_shape(input_shape, min_size=MIN_SIZE, family="lenet")
    _check_kernel_fits(kernel, padding, height, width)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _encoder(inputs, activation=activation, pool=pool, kernel=kernel, channels=channels, batchnorm=batchnorm,
                 init=init, padding=padding)
    if include_top:
        x = dense_head(x, num_classes, dense_units, activation=activation, batchnorm=batchnorm,
                       classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)

"""Pieces shared by every family: input checks, the conv -> BN -> activation
block, pooling, the heads and the encoder/head split."""

import keras
from keras import layers

from kerascnn.config.choices import INITS, POOLS
from kerascnn.errors import KerasCNNError

# Moving statistics follow the batches faster than Keras' default 0.99
# (this is PyTorch's momentum 0.1): short runs of a few hundred steps
# otherwise evaluate with statistics still near their initial values.
BN_MOMENTUM = 0.9

# Keras' default; ResNet passes PyTorch's 1e-5 to match torchvision.
BN_EPSILON = 1e-3


def check_input_shape(input_shape, *, min_size, family):
    """Return (height, width, channels) or raise one clear error."""
    try:
        height, width, channels = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise KerasCNNError(f"input_shape must be (height, width, channels), got {input_shape!r}") from None
    if channels not in (1, 3):
        raise KerasCNNError(f"{family} takes 1- or 3-channel images, got {channels} channels")
    if min(height, width) < min_size:
        raise KerasCNNError(
            f"{family} needs images of at least {min_size}x{min_size}, got {height}x{width}"
        )
    return height, width, channels


def check_width(width):
    if not width > 0:
        raise KerasCNNError(f"width must be a positive multiplier such as 0.25 or 1, got {width}")
    return float(width)


def scaled(channels, width):
    """Channels times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def check_num_classes(num_classes):
    num_classes = int(num_classes)
    if num_classes < 2:
        raise KerasCNNError(f"num_classes must be at least 2, got {num_classes}")
    return num_classes


def pooling_layer(pool, size, strides, name, padding="valid"):
    if pool == "avg":
        return layers.AveragePooling2D(size, strides=strides, padding=padding, name=name)
    if pool == "max":
        return layers.MaxPooling2D(size, strides=strides, padding=padding, name=name)
    raise KerasCNNError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")


def activation_name(activation):
    return activation if isinstance(activation, str) else getattr(activation, "__name__", "act")


def conv_initializer(init):
    """A convolution kernel's initializer: "glorot" is Keras' default (Glorot
    uniform); "he" is He normal over the fan-out, as torchvision initializes
    VGG's and ResNet's convolutions (kaiming_normal_, mode="fan_out")."""
    if init == "glorot":
        return "glorot_uniform"
    if init == "he":
        return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    raise KerasCNNError(f"init must be one of {', '.join(INITS)}, got {init!r}")


def conv_bn_act(x, *conv_args, name, activation=None, batchnorm=False, order="bn_act", epsilon=BN_EPSILON,
                conv=layers.Conv2D, conv_name=None, init="glorot", **conv_options):
    """A convolution (`conv_name`, default `name`), its batch normalization
    (`name_bn`) and its activation, in one of two orders:

    - "bn_act": conv -> BN -> an Activation layer `name_<activation>`;
      activation None leaves it out (ResNet's second conv and shortcut).
    - "act_bn": the activation inside the conv, then BN: BN(act(conv(x))),
      LeNet's f(x) = BN(sigmoid(x)).

    `conv_args` and `conv_options` go to `conv` (Conv2D or DepthwiseConv2D),
    whose kernel starts from `init` (see conv_initializer).
    """
    if order not in ("bn_act", "act_bn"):
        raise ValueError(f"order must be 'bn_act' or 'act_bn', got {order!r}")
    if order == "act_bn":
        conv_options["activation"] = activation
    kernel = "depthwise_initializer" if conv is layers.DepthwiseConv2D else "kernel_initializer"
    conv_options.setdefault(kernel, conv_initializer(init))
    x = conv(*conv_args, name=conv_name or name, **conv_options)(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=epsilon, name=f"{name}_bn")(x)
    if order == "bn_act" and activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation_name(activation)}")(x)
    return x


def conv_block(x, filters, kernel, *, name, strides=1, padding="same", activation="relu", batchnorm=False,
               use_bias=None, init="glorot"):
    """The plain networks' convolution (AlexNet, VGG, NiN, GoogLeNet): Conv2D
    with its activation; with batchnorm, Conv2D -> BN -> activation as
    `name`, `name_bn`, `name_<activation>`, the bias dropped by default."""
    # Without BN the activation stays inside the Conv2D: one layer per
    # convolution, as the papers draw these networks.
    return conv_bn_act(x, filters, kernel, strides=strides, padding=padding,
                       use_bias=not batchnorm if use_bias is None else use_bias, name=name,
                       activation=activation, batchnorm=batchnorm, order="bn_act" if batchnorm else "act_bn",
                       init=init)


def dense_block(x, units, *, name, activation="relu", batchnorm=False, dropout=0.0):
    """Dense with its activation, then BN and dropout when asked: `name`,
    `name_bn`, `name_dropout`."""
    x = layers.Dense(units, activation=activation, name=name)(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


# The heads. Each head's first layer has one of these names, and the split
# is found by name: names are what a model loaded from a .keras file keeps.
FLATTEN = "flatten"  # dense_head
AVG_POOL = "avg_pool"  # pooled_head
GLOBAL_POOL = "global_pool"  # pooled_head, MobileNet's name as in keras.applications
CLASSIFIER_DROPOUT = "classifier_dropout"  # conv_head
HEAD_STARTS = (FLATTEN, AVG_POOL, GLOBAL_POOL, CLASSIFIER_DROPOUT)


def classifier(x, num_classes, classifier_activation=None):
    """The last layer of every dense-topped model, named `logits` (or
    `predictions` with an activation, as in keras.applications)."""
    num_classes = check_num_classes(num_classes)
    name = "logits" if classifier_activation is None else "predictions"
    return layers.Dense(num_classes, activation=classifier_activation, name=name)(x)


def dense_head(x, num_classes, units, *, activation, batchnorm=False, dropout=0.0, classifier_activation=None):
    """Flatten -> one dense block per entry of `units` (`fc1`, `fc2`, ...)
    -> classifier: LeNet, AlexNet and VGG."""
    x = layers.Flatten(name=FLATTEN)(x)
    for i, width in enumerate(units, start=1):
        x = dense_block(x, width, name=f"fc{i}", activation=activation, batchnorm=batchnorm, dropout=dropout)
    return classifier(x, num_classes, classifier_activation)


def pooled_head(x, num_classes, *, pool_name=AVG_POOL, dropout=None, classifier_activation=None):
    """Global average pooling (`pool_name`, one of HEAD_STARTS) -> dropout
    (`dropout`, unless None) -> classifier: GoogLeNet, ResNet, MobileNet."""
    if pool_name not in HEAD_STARTS:  # head_start would not find this head
        raise ValueError(f"pool_name must be one of {HEAD_STARTS}, got {pool_name!r}")
    x = layers.GlobalAveragePooling2D(name=pool_name)(x)
    if dropout is not None:
        x = layers.Dropout(dropout, name="dropout")(x)
    return classifier(x, num_classes, classifier_activation)


def conv_head(x, num_classes, block, *, dropout):
    """Dropout -> `block(x, filters, name="classifier")`, a conv block with
    one channel per class -> global average pooling as the `logits`: NiN,
    whose logits are averaged feature maps rather than a dense layer."""
    x = layers.Dropout(dropout, name=CLASSIFIER_DROPOUT)(x)
    x = block(x, check_num_classes(num_classes), name="classifier")
    return layers.GlobalAveragePooling2D(name="logits")(x)


def head_start(model):
    """Index of the first head layer in `model.layers` (len(layers) if the
    model is an encoder only)."""
    for i, layer in enumerate(model.layers):
        if layer.name in HEAD_STARTS:
            return i
    return len(model.layers)


def split_encoder_head(model):
    """The model's layers as (encoder_layers, head_layers)."""
    i = head_start(model)
    return model.layers[:i], model.layers[i:]


def apply_l2(model, l2):
    """Add an L2 penalty `l2 * sum(w**2)` on the kernels of every conv and
    dense layer of a built model (the seed report's "L2" run), `l2` as
    FitConfig checked it (at least 0). The regularizer goes into each
    layer's config too, so it is saved and survives loading."""
    import keras

    if not l2:
        return model
    reg = keras.regularizers.L2(float(l2))
    for layer in model.layers:
        # DepthwiseConv2D keeps its kernel in `kernel` but regularizes it by `depthwise_regularizer`
        attr = "depthwise_regularizer" if isinstance(layer, keras.layers.DepthwiseConv2D) else "kernel_regularizer"
        if hasattr(layer, attr) and getattr(layer, "kernel", None) is not None:
            setattr(layer, attr, reg)  # for the saved config
            layer.kernel.regularizer = reg  # for model.losses
    return model

"""Pieces shared by every family: input checks, pooling, the classifier and
the encoder/head split."""

from keras import layers

from kerascnn.choices import POOLS
from kerascnn.errors import KerasCNNError

# Moving statistics follow the batches faster than Keras' default 0.99
# (this is PyTorch's momentum 0.1): short runs of a few hundred steps
# otherwise evaluate with statistics still near their initial values.
BN_MOMENTUM = 0.9

# The head of every model starts at the layer that turns feature maps into a
# vector, or earlier at a layer named "classifier_*" (NiN's classifier is a
# conv block); everything before it is the encoder.
HEAD_START_TYPES = ("Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D")
HEAD_PREFIX = "classifier"


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


def pooling_layer(pool, size, strides, name, padding="valid"):
    if pool == "avg":
        return layers.AveragePooling2D(size, strides=strides, padding=padding, name=name)
    if pool == "max":
        return layers.MaxPooling2D(size, strides=strides, padding=padding, name=name)
    raise KerasCNNError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")


def classifier(x, num_classes, classifier_activation=None):
    """The last layer of every model, named `logits` (or `predictions` with
    an activation, as in keras.applications)."""
    num_classes = int(num_classes)
    if num_classes < 2:
        raise KerasCNNError(f"num_classes must be at least 2, got {num_classes}")
    name = "logits" if classifier_activation is None else "predictions"
    return layers.Dense(num_classes, activation=classifier_activation, name=name)(x)


def head_start(model):
    """Index of the first head layer in `model.layers` (len(layers) if the
    model is an encoder only)."""
    for i, layer in enumerate(model.layers):
        if type(layer).__name__ in HEAD_START_TYPES or layer.name.startswith(HEAD_PREFIX):
            return i
    return len(model.layers)


def split_encoder_head(model):
    """The model's layers as (encoder_layers, head_layers)."""
    i = head_start(model)
    return model.layers[:i], model.layers[i:]


def scaled(channels, width):
    """Channels times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def check_width(width):
    if not width > 0:
        raise KerasCNNError(f"width must be a positive multiplier such as 0.25 or 1, got {width}")
    return float(width)


def conv_block(x, filters, kernel, *, name, strides=1, padding="same", activation="relu", batchnorm=False,
               use_bias=None):
    """Conv2D with its activation; with batchnorm, Conv2D -> BN -> activation
    as `name`, `name_bn`, `name_<activation>`."""
    if not batchnorm:
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation=activation,
                             use_bias=True if use_bias is None else use_bias, name=name)(x)
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                      use_bias=False if use_bias is None else use_bias, name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation_name(activation)}")(x)


def dense_block(x, units, *, name, activation="relu", batchnorm=False, dropout=0.0):
    x = layers.Dense(units, activation=activation, name=name)(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def activation_name(activation):
    return activation if isinstance(activation, str) else getattr(activation, "__name__", "act")


def apply_l2(model, l2):
    """Add an L2 penalty `l2 * sum(w**2)` on the kernels of every conv and
    dense layer of a built model (the seed report's "L2" run). The
    regularizer goes into each layer's config too, so it is saved and
    survives loading."""
    import keras

    if not l2:
        return model
    if l2 < 0:
        raise KerasCNNError(f"--l2 must be at least 0, got {l2}")
    reg = keras.regularizers.L2(float(l2))
    for layer in model.layers:
        for attr, var in (("kernel_regularizer", "kernel"), ("depthwise_regularizer", "depthwise_kernel")):
            if hasattr(layer, attr) and getattr(layer, var, None) is not None:
                setattr(layer, attr, reg)
                getattr(layer, var).regularizer = reg
    return model

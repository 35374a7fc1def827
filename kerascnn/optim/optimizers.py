"""Optimizers by name, with the learning rates that suit each by default."""

from kerascnn.config.choices import DEFAULT_LR, OPTIMIZERS
from kerascnn.errors import KerasCNNError


def make_optimizer(name, lr=None, *, momentum=0.9, beta1=0.9, beta2=0.999, weight_decay=None):
    """A Keras optimizer from its short name.

    `lr` is a rate, or a schedule of the step count (a Keras
    LearningRateSchedule, see kerascnn.optim.schedules). `momentum` applies to
    "momentum" and "nesterov" (and rmsprop's momentum stays 0);
    `beta1`/`beta2` to adam and adamw; `weight_decay` to every optimizer
    (decoupled, as Keras applies it), with AdamW's Keras default of 0.004
    when not given.
    """
    import keras

    if name not in DEFAULT_LR:
        raise KerasCNNError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if lr is None:
        lr = DEFAULT_LR[name]
    elif not callable(lr):  # a schedule passes as it is
        lr = float(lr)
        if lr <= 0:
            raise KerasCNNError(f"learning rate must be positive, got {lr}")
    common = {"learning_rate": lr}
    if weight_decay is not None:
        common["weight_decay"] = float(weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(**common)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=momentum, nesterov=name == "nesterov", **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(**common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(**common)
    if name == "adam":
        return keras.optimizers.Adam(beta_1=beta1, beta_2=beta2, **common)
    return keras.optimizers.AdamW(beta_1=beta1, beta_2=beta2, **common)

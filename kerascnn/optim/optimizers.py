"""Optimizers by name, with the learning rates that suit each by default."""

from kerascnn.config.choices import DEFAULT_LR


def make_optimizer(name, lr=None, *, momentum=0.9, beta1=0.9, beta2=0.999, weight_decay=None):
    """A Keras optimizer from its short name (one of OPTIMIZERS, as FitConfig
    checks it).

    `lr` is a rate, or a schedule of the step count (a Keras
    LearningRateSchedule, see kerascnn.optim.schedules); None is the name's
    DEFAULT_LR. `momentum` applies to "momentum" and "nesterov" (and
    rmsprop's momentum stays 0); `beta1`/`beta2` to adam and adamw;
    `weight_decay` to every optimizer (decoupled, as Keras applies it), with
    AdamW's Keras default of 0.004 when not given.
    """
    import keras

    if lr is None:
        lr = DEFAULT_LR[name]
    elif not callable(lr):  # a schedule passes as it is
        lr = float(lr)
    common = {"learning_rate": lr}
    if weight_decay is not None:
        common["weight_decay"] = float(weight_decay)
    makers = {
        "sgd": lambda: keras.optimizers.SGD(**common),
        "momentum": lambda: keras.optimizers.SGD(momentum=momentum, **common),
        "nesterov": lambda: keras.optimizers.SGD(momentum=momentum, nesterov=True, **common),
        "adagrad": lambda: keras.optimizers.Adagrad(**common),
        "rmsprop": lambda: keras.optimizers.RMSprop(**common),
        "adam": lambda: keras.optimizers.Adam(beta_1=beta1, beta_2=beta2, **common),
        "adamw": lambda: keras.optimizers.AdamW(beta_1=beta1, beta_2=beta2, **common),
    }
    return makers[name]()

"""What a user can choose, as plain data: datasets, optimizers, schedules,
samplings, augmentations, compilation and distribution modes, backends, and
each architecture family's sizes, options and training defaults.

Nothing here imports Keras or TensorFlow, so options are checked, listed in
`--help` and resolved before either starts. The builders in
`kerascnn.models` are the truth about the families; tests/test_choices.py
checks this table against them.
"""

import dataclasses

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}

# Plain SGD and AdaGrad need larger steps than the adaptive methods.
DEFAULT_LR = {
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.05,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adamw": 1e-3,
}
OPTIMIZERS = tuple(DEFAULT_LR)
# Decoupled weight decay when none is given: Keras' AdamW default; none for the others.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.004}

# Schedules that set the rate at each epoch's start (callbacks), and those that are a function of the
# optimizer's step count (kerascnn.optim.schedules: saved inside the model, so a resumed run continues them).
EPOCH_SCHEDULES = ("constant", "step", "exponential", "cosine", "plateau")
STEP_SCHEDULES = ("onecycle",)
SCHEDULES = EPOCH_SCHEDULES + STEP_SCHEDULES
# (decay_rate, decay_after) defaults per schedule; step is the seed report's
# "multiply the rate by 0.7 every epoch after epoch 10".
SCHEDULE_DEFAULTS = {
    "constant": (None, None),
    "step": (0.7, 10),
    "exponential": (0.9, 0),
    "cosine": (None, 0),
    "plateau": (0.5, 2),
    "onecycle": (None, None),
}
# One-cycle as PyTorch's OneCycleLR (cosine, two phases) with its defaults, but fastai's share of rising steps:
# from lr / DIV_FACTOR up to lr over the first PCT_START of the steps, then down to lr / (DIV_FACTOR * FINAL_DIV).
ONECYCLE = {"pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4}

# How `lr_find` picks a rate from its sweep (fastai's suggestion functions steep and valley).
LR_FIND_RULES = {
    "steepest": "steepest descent of the smoothed loss",
    "valley": "valley rule: within the longest descent of the smoothed loss",
}

SAMPLINGS = ("shuffle", "sequential", "bootstrap")

# `kerascnn explain`: two class activation maps of a convolution, two gradients of the pixels.
EXPLAIN_METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad")

TRANSFORMS = {
    "crop": "random crop after zero padding by 1/8 of the image side (4 px at 32)",
    "flip": "horizontal flip with probability 1/2",
    "rotate": "rotation by up to 10 degrees either way",
    "translate": "translation by up to 10% of the side either way",
}

JIT_MODES = ("auto", "on", "off")
DATA_ON_DEVICE = ("auto", "on", "off")
DISTRIBUTE = ("mirrored", "multi-worker", "data-parallel")
BACKENDS = ("tensorflow", "jax", "torch")
POOLS = ("avg", "max")
INITS = ("glorot", "he")
PADDINGS = ("same", "valid")  # LeNet's conv1: "valid" is the paper's LeNet-5 (32x32 in, 28x28 after C1)
RESIZE_MODES = ("resize", "pad")  # how images reach the size a model takes


@dataclasses.dataclass(frozen=True)
class Family:
    """An architecture as `--arch` names it: the input sizes it takes
    (`default_size` is the textbook size, None meaning the data's own size),
    the options its builder takes with their defaults, and the optimizer,
    learning rate and batch size it trains well with."""

    name: str
    default_size: int
    min_size: int
    options: dict
    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 64
    warmup: float = 0  # epochs of linear learning-rate warm-up

    def takes(self, option):
        return option in self.options


_CONV = {"activation": "relu", "pool": "max", "batchnorm": False, "init": "glorot", "width": 1.0}
FAMILIES = {f.name: f for f in (
    Family("lenet", None, 12, {"activation": "sigmoid", "pool": "avg", "kernel": 5, "channels": (6, 16),
                               "batchnorm": False, "padding": "same", "init": "glorot", "dense_units": (120, 84)},
           batch_size=256),
    Family("alexnet", 224, 63, {**_CONV, "dense_units": 4096, "dropout": 0.5}),
    # VGG and GoogLeNet start as torchvision starts them (He normal, fan-out) and at a lower rate: with
    # Glorot and 1e-3 VGG-16 stays at chance; docs/zoo.md has the measurements (benchmarks/defaults.py).
    Family("vgg11", 224, 32, {**_CONV, "init": "he", "dense_units": 4096, "dropout": 0.5}, lr=3e-4),
    Family("vgg16", 224, 32, {**_CONV, "init": "he", "dense_units": 4096, "dropout": 0.5}, lr=1e-4),
    # NiN without batch norm learns on some seeds and not others (68% and 39% after 2 epochs); with it, every time.
    Family("nin", 224, 67, {**_CONV, "batchnorm": True, "dropout": 0.5}, batch_size=32),
    Family("googlenet", 96, 32, {"activation": "relu", "batchnorm": False, "init": "he", "width": 1.0},
           lr=3e-4, batch_size=32),
    Family("resnet18", 96, 32, {"activation": "relu", "batchnorm": True, "init": "glorot", "width": 1.0}),
    Family("mobilenet", 224, 32, {"activation": "relu6", "batchnorm": True, "init": "glorot", "width": 1.0,
                                  "depth_multiplier": 1, "dropout": 1e-3}, batch_size=32),
)}
ARCH_NAMES = tuple(FAMILIES)


def family_defaults(option, attribute=None):
    """How a default differs by family, for help texts: "lenet: sigmoid,
    mobilenet: relu6, others: relu". `option` names a builder option, or
    `attribute` a Family field such as "batch_size"."""
    values = {name: getattr(f, attribute) if attribute else f.options[option]
              for name, f in FAMILIES.items() if attribute or f.takes(option)}
    shown = {name: _show(v) for name, v in values.items()}
    counts = {v: list(shown.values()).count(v) for v in shown.values()}
    common = max(counts, key=counts.get)
    parts = [f"{name}: {v}" for name, v in shown.items() if v != common]
    parts.append(f"others: {common}" if parts else common)
    others = [name for name in FAMILIES if name not in values]
    only = "" if not others else f" (not {'/'.join(others)})" if len(others) < len(values) else \
        f" ({'/'.join(values)} only)"
    return ", ".join(parts) + only


def _show(value):
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def kernel_problem(kernel):
    """What is wrong with `kernel` as a LeNet convolution size (None if nothing): the
    kernels keep a centre pixel, so they are odd."""
    if kernel < 1 or kernel % 2 == 0:
        return "must be a positive odd size such as 5, 7 or 11"
    return None

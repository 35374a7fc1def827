"""The architecture families as `--arch` names them, as plain data: each
family's input sizes, the options its builder takes with their defaults,
and the optimizer, learning rate and batch size it trains well with.

`Family` is the one description of a family: kerascnn.models adds only the
builders (`kerascnn.models.BUILDERS`). Nothing here imports Keras, so
FitConfig checks and resolves a family's options before Keras starts;
tests/test_families.py checks this table against the builders.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Family:
    """An architecture as `--arch` names it: the input sizes it takes
    (`default_size` is the textbook size, None meaning the data's own size),
    the options its builder takes with their defaults (its keyword
    arguments beyond the input, head and name), and the optimizer, learning
    rate and batch size it trains well with."""

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

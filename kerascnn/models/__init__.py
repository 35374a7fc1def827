"""The model zoo: one module per family and a registry of `--arch` names."""

import dataclasses
import inspect

from kerascnn.config.choices import FAMILIES, Family
from kerascnn.errors import KerasCNNError
from kerascnn.models.common import head_start, split_encoder_head
from kerascnn.models.alexnet import build_alexnet
from kerascnn.models.googlenet import build_googlenet
from kerascnn.models.lenet import build_lenet
from kerascnn.models.mobilenet import build_mobilenet
from kerascnn.models.nin import build_nin
from kerascnn.models.resnet import build_resnet18
from kerascnn.models.vgg import build_vgg, build_vgg11, build_vgg16


BUILDERS = {
    "lenet": build_lenet,
    "alexnet": build_alexnet,
    "vgg11": build_vgg11,
    "vgg16": build_vgg16,
    "nin": build_nin,
    "googlenet": build_googlenet,
    "resnet18": build_resnet18,
    "mobilenet": build_mobilenet,
}


@dataclasses.dataclass(frozen=True)
class Arch(Family):
    """A registered architecture: its family's data (kerascnn.config.choices:
    sizes, options and training defaults) and its builder."""

    builder: callable = None

    def knobs(self):
        """Keyword arguments the builder accepts beyond the input settings."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in ("input_shape", "num_classes", "name")]


ARCHS = {name: Arch(**{f.name: getattr(family, f.name) for f in dataclasses.fields(family)},
                    builder=BUILDERS[name])
         for name, family in FAMILIES.items()}


def get_arch(name):
    try:
        return ARCHS[name]
    except KeyError:
        raise KerasCNNError(f"unknown architecture {name!r}; choose one of: {', '.join(sorted(ARCHS))}") from None


def build_model(arch, *, input_shape, num_classes, **options):
    """Build a registered architecture by name.

    Options left as None take the builder's default; an option the family
    does not have is an error rather than silently ignored.
    """
    spec = get_arch(arch)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(spec.knobs()))
    if unknown:
        raise KerasCNNError(
            f"{arch} does not take {', '.join(unknown)}; its options are: {', '.join(spec.knobs())}"
        )
    return spec.builder(input_shape=tuple(input_shape), num_classes=num_classes, name=arch, **options)


__all__ = ["ARCHS", "Arch", "build_alexnet", "build_googlenet", "build_lenet", "build_mobilenet", "build_model",
           "build_nin", "build_resnet18", "build_vgg", "build_vgg11", "build_vgg16", "get_arch", "head_start",
           "split_encoder_head"]

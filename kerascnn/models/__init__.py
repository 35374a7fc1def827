"""The model zoo: one module per family and a registry of `--arch` names."""

import dataclasses
import inspect

from kerascnn.errors import KerasCNNError
from kerascnn.models.common import head_start, split_encoder_head
from kerascnn.models import alexnet, googlenet, lenet, mobilenet, nin, resnet, vgg
from kerascnn.models.alexnet import build_alexnet
from kerascnn.models.googlenet import build_googlenet
from kerascnn.models.lenet import build_lenet
from kerascnn.models.mobilenet import build_mobilenet
from kerascnn.models.nin import build_nin
from kerascnn.models.resnet import build_resnet18
from kerascnn.models.vgg import build_vgg, build_vgg11, build_vgg16


@dataclasses.dataclass(frozen=True)
class Arch:
    """A registered architecture: its builder, the input sizes it takes
    (`default_size` is the textbook size; None means the data's own size)
    and the optimizer settings and batch size it trains well with by default."""

    name: str
    builder: callable
    default_size: int
    min_size: int
    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 64

    def knobs(self):
        """Keyword arguments the builder accepts beyond the input settings."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in ("input_shape", "num_classes", "name")]


ARCHS = {a.name: a for a in (
    Arch("lenet", build_lenet, default_size=None, min_size=lenet.MIN_SIZE, batch_size=256),
    Arch("alexnet", build_alexnet, alexnet.DEFAULT_SIZE, alexnet.MIN_SIZE),
    Arch("vgg11", build_vgg11, vgg.DEFAULT_SIZE, vgg.MIN_SIZE),
    Arch("vgg16", build_vgg16, vgg.DEFAULT_SIZE, vgg.MIN_SIZE),
    Arch("nin", build_nin, nin.DEFAULT_SIZE, nin.MIN_SIZE, batch_size=32),
    Arch("googlenet", build_googlenet, googlenet.DEFAULT_SIZE, googlenet.MIN_SIZE, batch_size=32),
    Arch("resnet18", build_resnet18, resnet.DEFAULT_SIZE, resnet.MIN_SIZE),
    Arch("mobilenet", build_mobilenet, mobilenet.DEFAULT_SIZE, mobilenet.MIN_SIZE, batch_size=32),
)}


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

"""The model zoo: one module per family and a registry of `--arch` names."""

import dataclasses
import inspect

from kerascnn.errors import KerasCNNError
from kerascnn.models.common import head_start, split_encoder_head
from kerascnn.models.lenet import build_lenet


@dataclasses.dataclass(frozen=True)
class Arch:
    """A registered architecture: its builder and the input sizes it takes."""

    name: str
    builder: callable
    default_size: int
    min_size: int

    def knobs(self):
        """Keyword arguments the builder accepts beyond the input settings."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in ("input_shape", "num_classes", "name")]


ARCHS = {
    "lenet": Arch("lenet", build_lenet, default_size=28, min_size=12),
}


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


__all__ = ["ARCHS", "Arch", "build_lenet", "build_model", "get_arch", "head_start", "split_encoder_head"]

"""The model zoo: one module per family, and its builder by `--arch` name
(each family's data, its Family, is kerascnn.config.families')."""

import inspect

from kerascnn.config.families import FAMILIES
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


# The architectures by `--arch` name, each its Family (kerascnn.config.families); kerascnn.ARCHS.
ARCHS = FAMILIES
# What a builder may take beyond its family's options and the input: include_top (False: the encoder alone)
# and classifier_activation (not NiN, whose logits are its last block's pooled output).
HEAD_OPTIONS = ("include_top", "classifier_activation")


def get_arch(name):
    """The Family of the architecture `name`."""
    try:
        return ARCHS[name]
    except KeyError:
        raise KerasCNNError(f"unknown architecture {name!r}; choose one of: {', '.join(sorted(ARCHS))}") from None


def build_model(arch, *, input_shape, num_classes, **options):
    """Build a registered architecture by name.

    Options left as None take the builder's default; an option the family
    does not have is an error rather than silently ignored.
    """
    family, builder = get_arch(arch), BUILDERS[arch]
    taken = [*family.options, *(k for k in HEAD_OPTIONS if k in inspect.signature(builder).parameters)]
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise KerasCNNError(f"{arch} does not take {', '.join(unknown)}; its options are: {', '.join(taken)}")
    return builder(input_shape=tuple(input_shape), num_classes=num_classes, name=arch, **options)


__all__ = ["ARCHS", "BUILDERS", "HEAD_OPTIONS", "build_alexnet", "build_googlenet", "build_lenet", "build_mobilenet",
           "build_model", "build_nin", "build_resnet18", "build_vgg", "build_vgg11", "build_vgg16", "get_arch",
           "head_start", "split_encoder_head"]

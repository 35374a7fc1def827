"""The Keras-free table of families agrees with the builders it describes."""

import inspect
import sys

import pytest

from kerascnn.config import families

INPUTS = ("input_shape", "num_classes", "name")


@pytest.mark.parametrize("arch", families.ARCH_NAMES)
def test_family_matches_its_builder(arch):
    from kerascnn.models import BUILDERS, HEAD_OPTIONS

    builder = BUILDERS[arch]
    family = families.FAMILIES[arch]
    params = inspect.signature(builder).parameters
    assert {k: p.default for k, p in params.items() if k not in INPUTS + HEAD_OPTIONS} == family.options
    module = sys.modules[builder.__module__]
    assert family.min_size == module.MIN_SIZE
    assert family.default_size == (None if arch == "lenet" else module.DEFAULT_SIZE)


def test_every_family_has_a_builder():
    from kerascnn.models import ARCHS, BUILDERS

    assert tuple(BUILDERS) == families.ARCH_NAMES and ARCHS is families.FAMILIES


def test_defaults_for_help_texts():
    assert families.family_defaults("activation") == "lenet: sigmoid, mobilenet: relu6, others: relu"
    assert families.family_defaults("kernel") == "5 (lenet only)"
    assert families.family_defaults("padding") == "same (lenet only)"
    assert families.family_defaults(None, "batch_size") == \
        "lenet: 256, nin: 32, googlenet: 32, mobilenet: 32, others: 64"

"""The Keras-free table of choices agrees with the builders it describes."""

import inspect
import subprocess
import sys

import pytest

from kerascnn.config import choices
from tests.conftest import REPO

INPUTS = ("input_shape", "num_classes", "name", "include_top", "classifier_activation")


@pytest.mark.parametrize("arch", choices.ARCH_NAMES)
def test_family_matches_its_builder(arch):
    from kerascnn.models import BUILDERS

    builder = BUILDERS[arch]
    family = choices.FAMILIES[arch]
    params = inspect.signature(builder).parameters
    assert {k: p.default for k, p in params.items() if k not in INPUTS} == family.options
    module = sys.modules[builder.__module__]
    assert family.min_size == module.MIN_SIZE
    assert family.default_size == (None if arch == "lenet" else module.DEFAULT_SIZE)


def test_registry_is_the_table():
    from kerascnn.models import ARCHS

    assert tuple(ARCHS) == choices.ARCH_NAMES
    for name, arch in ARCHS.items():
        family = choices.FAMILIES[name]
        assert (arch.default_size, arch.min_size, arch.batch_size, arch.optimizer, arch.lr) == \
            (family.default_size, family.min_size, family.batch_size, family.optimizer, family.lr)


def test_defaults_for_help_texts():
    assert choices.family_defaults("activation") == "lenet: sigmoid, mobilenet: relu6, others: relu"
    assert choices.family_defaults("kernel") == "5 (lenet only)"
    assert choices.family_defaults("padding") == "same (lenet only)"
    assert choices.family_defaults(None, "batch_size") == \
        "lenet: 256, nin: 32, googlenet: 32, mobilenet: 32, others: 64"


def test_every_choice_is_known_where_it_is_used():
    from kerascnn.data.datasets import load_dataset
    from kerascnn.data.sampling import epoch_order
    from kerascnn.optim.schedules import schedule_function, step_schedule

    assert set(choices.SCHEDULES) == set(choices.EPOCH_SCHEDULES) | set(choices.STEP_SCHEDULES)
    for name in choices.EPOCH_SCHEDULES:
        assert schedule_function(name, 0.1, 3)(0) == pytest.approx(0.1)
    for name in choices.STEP_SCHEDULES:
        assert float(step_schedule(name, 0.1, 30)(29)) < float(step_schedule(name, 0.1, 30)(0)) < 0.1
    for sampling in choices.SAMPLINGS:
        assert len(epoch_order(5, 0, sampling=sampling)) == 5
    assert load_dataset("digits").image_shape == (28, 28, 1)


def test_choices_and_config_import_no_keras():
    code = ("import sys, kerascnn.config.choices, kerascnn.config.options, kerascnn.cli.commands, kerascnn.training.fit; "
            "sys.exit(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules) or 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

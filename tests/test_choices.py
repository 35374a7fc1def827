"""The Keras-free table of choices agrees with the code that uses it."""

import subprocess
import sys

import pytest

from kerascnn.config import choices
from tests.conftest import REPO


def test_every_choice_is_known_where_it_is_used():
    from kerascnn.data.datasets import load_dataset
    from kerascnn.data.sampling import epoch_order
    from kerascnn.data.sources import CLASS_NAMES
    from kerascnn.optim.schedules import schedule_function, step_schedule

    assert set(choices.SCHEDULES) == set(choices.EPOCH_SCHEDULES) | set(choices.STEP_SCHEDULES)
    for name in choices.EPOCH_SCHEDULES:
        assert schedule_function(name, 0.1, 3)(0) == pytest.approx(0.1)
    for name in choices.STEP_SCHEDULES:
        assert float(step_schedule(name, 0.1, 30)(29)) < float(step_schedule(name, 0.1, 30)(0)) < 0.1
    for sampling in choices.SAMPLINGS:
        assert len(epoch_order(5, 0, sampling=sampling)) == 5
    assert load_dataset("digits").image_shape == (28, 28, 1)
    assert set(CLASS_NAMES) == set(choices.DATASETS)


def test_choices_and_config_import_no_keras():
    code = ("import sys, kerascnn.config.choices, kerascnn.config.families, kerascnn.config.options, "
            "kerascnn.cli.commands, kerascnn.training.fit; "
            "sys.exit(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules) or 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

"""kerascnn.data.sampling: one epoch order and one steps rule for every
backend, and the gray weights."""

import math

import numpy as np
import pytest

from kerascnn.data import sampling
from kerascnn.data.sampling import GRAY_WEIGHTS, epoch_order, steps_per_epoch

pytestmark = pytest.mark.core


def test_sampling_orders():
    seq = np.asarray(epoch_order(100, 3, sampling="sequential"))
    np.testing.assert_array_equal(seq, np.arange(100))
    shuffled = [np.asarray(epoch_order(100, e, seed=1)) for e in (0, 1)]
    for order in shuffled:
        np.testing.assert_array_equal(np.sort(order), np.arange(100))  # a permutation
    assert not np.array_equal(shuffled[0], shuffled[1])  # a fresh order every epoch
    np.testing.assert_array_equal(np.asarray(epoch_order(100, 1, seed=1)), shuffled[1])  # a function of the epoch
    boot = np.asarray(epoch_order(1000, 0, seed=1, sampling="bootstrap"))
    assert len(boot) == 1000 and boot.min() >= 0 and boot.max() < 1000
    unique = len(np.unique(boot))
    assert unique < 1000  # drawn with replacement: repeats
    assert abs(unique / 1000 - (1 - 1 / math.e)) < 0.05  # about 63.2% distinct, as bootstrap gives


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    a = sampling.epoch_order(100, 3, seed=1)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    np.testing.assert_array_equal(a, sampling.epoch_order(100, 3, seed=1))
    assert not np.array_equal(a, sampling.epoch_order(100, 4, seed=1))
    assert not np.array_equal(a, sampling.epoch_order(100, 3, seed=2))
    np.testing.assert_array_equal(sampling.epoch_order(10, 5, sampling="sequential"), np.arange(10))
    boot = sampling.epoch_order(1000, 0, seed=1, sampling="bootstrap")
    assert len(boot) == 1000 and len(np.unique(boot)) < 1000 and boot.max() < 1000


def test_the_epoch_order_is_the_one_runs_saved_before_kept_on_jax_and_torch():
    """Runs saved under jax and torch before the one order resume exactly:
    the order is the numpy one they trained with (these values were drawn
    with it before the change)."""
    np.testing.assert_array_equal(epoch_order(10, 0, seed=0), [9, 2, 1, 6, 0, 8, 5, 3, 7, 4])
    np.testing.assert_array_equal(epoch_order(10, 2, seed=7), epoch_order(10, 2, seed=7))


def test_steps_per_epoch_is_one_rule():
    assert steps_per_epoch(100, 32) == 4  # the last batch short
    assert steps_per_epoch(96, 32) == 3
    assert steps_per_epoch(37, 12, multiple=2) == 3  # 1 left over 2 devices: dropped
    assert steps_per_epoch(38, 12, multiple=2) == 4  # 2 left: a batch of 2
    assert steps_per_epoch(5, 8, multiple=4) == 1


def test_the_gray_weights_are_pillows():
    """RGB -> gray is ITU-R 601-2 luma, as Pillow's convert("L") computes it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    theirs = np.asarray(Image.fromarray(rgb).convert("L"), np.float64)
    ours = rgb.astype(np.float64) @ np.asarray(GRAY_WEIGHTS)
    assert np.abs(ours - theirs).max() <= 0.5 + 1e-9  # Pillow rounds; the weights are the same
    assert sampling.GRAY_WEIGHTS == (0.299, 0.587, 0.114) and math.isclose(sum(GRAY_WEIGHTS), 1.0)

"""What every backend's input path shares, in numpy: the order an epoch
visits the training set (`epoch_order`, a pure function of seed and epoch),
the number of batches in an epoch (`steps_per_epoch`, one rule for every
backend and strategy), and the weights of gray conversion (`GRAY_WEIGHTS`).
"""

import numpy as np

from kerascnn.config.choices import SAMPLINGS
from kerascnn.errors import KerasCNNError

# The version of the epoch order a run's record keeps ("epoch_order"). 1: a record without it, when tensorflow drew its
# own order (TensorFlow's stateless RNG) and jax and torch this one; 2: this one on every backend.
EPOCH_ORDER = 2

# RGB -> gray: ITU-R 601-2 luma, the weights of Pillow's `convert("L")`.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def epoch_order(n, epoch, *, seed=0, sampling="shuffle"):
    """The order in which epoch `epoch` (from 0) visits `n` training
    samples: a permutation ("shuffle"), 0..n-1 ("sequential"), or n draws
    with replacement ("bootstrap"); int64, a pure function of (seed, epoch)."""
    if sampling not in SAMPLINGS:
        raise KerasCNNError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    if sampling == "sequential":
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED])
    if sampling == "bootstrap":
        return rng.integers(0, n, size=n, dtype=np.int64)
    return rng.permutation(n).astype(np.int64)


def steps_per_epoch(n, batch_size, multiple=1):
    """Batches in an epoch of `n` images: the last one may be short; split
    over `multiple` devices (--distribute data-parallel) it keeps a multiple
    of them, or goes when fewer are left."""
    full, rest = divmod(n, batch_size)
    return full + (rest - rest % multiple > 0)

"""Rows of a memory-mapped array, read only when asked for: how a folder's
images (kerascnn.data.folders' cache) reach training without being copied
into memory, so that a folder larger than memory still trains.

`Rows(base, index)` stands for `base[index]` and reads it a batch at a
time: indexing it with an int, a slice or an index array returns those
images as a numpy array; `take(index)` is a subset, still unread (how the
validation split and `--train-size` keep it lazy). `np.asarray` reads it
all, for what needs it whole (`--data-on-device`, the NumPy LeNet-5).
"""

import numpy as np


class Rows:
    """`base[index]` (base an (N, ...) array, typically an np.memmap),
    read only by the rows indexed."""

    def __init__(self, base, index=None):
        self.base = base
        self.index = np.arange(len(base)) if index is None else np.asarray(index, np.int64)

    @property
    def shape(self):
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def ndim(self):
        return self.base.ndim

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        return self.size * self.base.dtype.itemsize

    def __len__(self):
        return len(self.index)

    def __getitem__(self, key):
        """The rows `key` selects (an int, a slice or an index array) read
        into a numpy array, in the order asked."""
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        if isinstance(key, slice) and (len(rows) < 2 or (np.diff(rows) == 1).all()):
            return np.asarray(self.base[rows[0]:rows[-1] + 1] if len(rows) else self.base[:0])
        order = np.argsort(rows, kind="stable")  # read the file forwards, then put the rows in the order asked
        out = np.empty((len(rows), *self.base.shape[1:]), self.base.dtype)
        out[order] = self.base[rows[order]]
        return out

    def take(self, key):
        """The subset `key` selects, unread (a Rows)."""
        return Rows(self.base, self.index[key])

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def __repr__(self):
        return f"Rows({len(self)} of {len(self.base)}, shape={self.shape}, dtype={self.dtype})"


def take(x, index):
    """`x[index]`: a Rows stays unread (Rows.take), an array is indexed."""
    return x.take(index) if isinstance(x, Rows) else x[index]


def is_lazy(x):
    """Whether `x` is read only as indexed (a Rows), not an array in memory."""
    return isinstance(x, Rows)

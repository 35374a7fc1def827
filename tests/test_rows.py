"""kerascnn.data.rows: rows of a memory-mapped array read only as indexed, the same images as indexing the array."""

import numpy as np
import pytest

from kerascnn.data.rows import Rows, is_lazy, take

pytestmark = pytest.mark.core


@pytest.fixture
def base(tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(50, 4, 4, 3))
    x[:] = np.random.default_rng(0).integers(0, 256, x.shape, dtype=np.uint8)
    x.flush()
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def test_rows_read_what_indexing_the_array_reads(base):
    index = np.array([7, 3, 3, 40, 12, 0, 49])
    rows = Rows(base, index)
    expected = np.asarray(base)[index]
    assert rows.shape == expected.shape and rows.dtype == np.uint8 and rows.ndim == 4 and len(rows) == 7
    assert rows.nbytes == expected.nbytes and rows.size == expected.size
    np.testing.assert_array_equal(rows[2], expected[2])
    np.testing.assert_array_equal(rows[1:5], expected[1:5])
    np.testing.assert_array_equal(rows[::-2], expected[::-2])
    np.testing.assert_array_equal(rows[np.array([6, 0, 3])], expected[[6, 0, 3]])  # in the order asked
    np.testing.assert_array_equal(np.asarray(rows), expected)
    assert isinstance(rows[1:3], np.ndarray) and not isinstance(rows[1:3], np.memmap)
    np.testing.assert_array_equal(Rows(base)[10:20], np.asarray(base)[10:20])
    assert Rows(base)[5:5].shape == (0, 4, 4, 3)


def test_a_subset_stays_unread(base):
    rows = Rows(base, np.arange(10, 30))
    subset = take(rows, np.array([5, 1, 19]))
    assert is_lazy(subset) and subset.base is base
    np.testing.assert_array_equal(subset[:], np.asarray(base)[[15, 11, 29]])
    plain = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(take(plain, [4, 0]), plain[[4, 0]])
    assert not is_lazy(plain)

"""Row-number helpers of :mod:`asebytes_nodes.indexing`."""

from __future__ import annotations

import numpy as np
import pytest

from asebytes_nodes.indexing import distinct


@pytest.mark.parametrize("size", [0, 1, 2, 31, 1000])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64])
def test_distinct_is_np_unique(size: int, dtype: type) -> None:
    values = np.random.default_rng(size).integers(-50, 50, size).astype(dtype)
    got = distinct(values)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, np.unique(values))


def test_distinct_leaves_its_input_alone() -> None:
    values = np.array([3, 1, 3, 2])
    assert distinct(values).tolist() == [1, 2, 3]
    assert values.tolist() == [3, 1, 3, 2]

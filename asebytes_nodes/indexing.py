"""Turn user indices (int, negative int, slice, list, numpy array) into checked row numbers.

Backends only ever see non-negative ``numpy.int64`` arrays inside ``range(length)``.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import RowIndexError

__all__ = ["IndexArray", "distinct", "normalize_index", "normalize_indices", "is_key_index"]

IndexArray = npt.NDArray[np.int64]


def distinct(values: npt.ArrayLike) -> np.ndarray:
    """The sorted distinct values of a 1-D array: ``np.unique`` without its first call's cost
    (numpy 2.4 imports ``numpy.ma`` there, 5-9 ms in a fresh process: a DataLoader worker's
    first batch or a cold first frame paid it)."""
    values = np.asarray(values).ravel()
    if len(values) > 64:  # runs of one value (a frame's rows in one chunk) are sorted as one
        first = np.empty(len(values), bool)
        first[0] = True
        np.not_equal(values[1:], values[:-1], out=first[1:])
        values = values[first]
    values = np.sort(values)
    keep = np.empty(len(values), bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _out_of_range(index: Any, length: int) -> RowIndexError:
    """The error for row ``index`` of ``length`` rows, saying which indices are valid."""
    if length == 0:
        return RowIndexError(f"row index {index} is out of range: the store is empty (0 rows)")
    rows = "1 row" if length == 1 else f"{length} rows"
    return RowIndexError(f"row index {index} is out of range for {rows} (valid: {-length} to {length - 1})")


def normalize_index(index: Any, length: int) -> int:
    """One row number in ``range(length)``; negative indices count from the end."""
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(
            f"row indices must be integers, got {type(index).__name__}"
        ) from None
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise _out_of_range(index, length)
    return i


def normalize_indices(index: Any, length: int) -> IndexArray:
    """A checked ``int64`` array of row numbers for a slice, sequence or numpy array.

    Boolean arrays of the right length select rows (numpy semantics).
    """
    if isinstance(index, slice):
        return np.arange(*index.indices(length), dtype=np.int64)
    if isinstance(index, range):
        arr = np.asarray(index, dtype=np.int64)
    else:
        arr = np.asarray(index)
        if arr.dtype == bool:
            if arr.shape != (length,):
                raise RowIndexError(
                    f"boolean mask has shape {arr.shape}; expected ({length},) for {length} rows"
                )
            return np.flatnonzero(arr).astype(np.int64)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind not in "iu":
            got = f"{type(index).__name__} {index!r}" if arr.ndim == 0 else f"an array of dtype {arr.dtype}"
            raise TypeError(f"row indices must be integers, got {got}")
        if arr.ndim != 1:
            raise TypeError(f"row index arrays must be one-dimensional, got shape {arr.shape}")
        # a list gave a new array; a caller's array is copied, so the rows never change under us
        arr = arr.astype(np.int64, copy=arr is index)
    if arr.size == 0:
        return arr
    low, high = int(arr.min()), int(arr.max())  # two reductions, no temporary masks
    if low < -length or high >= length:
        bad = (arr < -length) | (arr >= length)
        raise _out_of_range(int(arr[np.argmax(bad)]), length)  # the first one, as given
    return np.where(arr < 0, arr + length, arr) if low < 0 else arr


def is_key_index(index: Any) -> bool:
    """True for a column key (str) or a list/tuple of column keys."""
    if isinstance(index, str):
        return True
    return (
        isinstance(index, (list, tuple))
        and len(index) > 0
        and all(isinstance(k, str) for k in index)
    )

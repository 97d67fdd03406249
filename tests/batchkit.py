"""Rows and batch comparisons shared by the LMDB batch tests (templates, tables, kept rows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from asebytes_nodes import LMDBBackend
from asebytes_nodes.backends import _lmdb_batch

KEYS = ["arrays.positions", "arrays.numbers", "calc.energy", "calc.forces"]


def batch_row(rng: np.random.Generator, n: int, i: int, **extra: Any) -> dict[str, Any]:
    """A row of ``n`` atoms with random numbers, positions, energy and forces (drawn in that
    order), ``info.index`` = ``i``, and the ``extra`` keys."""
    return {
        "arrays.numbers": rng.integers(1, 30, n),
        "arrays.positions": rng.normal(size=(n, 3)),
        "info.index": i,
        "calc.energy": float(rng.normal()),
        "calc.forces": rng.normal(size=(n, 3)),
        **extra,
    }


def assert_same_batch(fast: dict[str, Any], slow: dict[str, Any]) -> None:
    """The same keys in the same order, each an array of the same dtype, shape and values."""
    assert list(fast) == list(slow)
    for key in slow:
        assert isinstance(fast[key], np.ndarray), key
        assert fast[key].dtype == slow[key].dtype, key
        assert fast[key].shape == slow[key].shape, key
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def template_batch(
    backend: LMDBBackend, indices: Any, keys: Any = None, atoms: Any = None
) -> dict[str, Any] | None:
    """The batch the row templates give (``_lmdb_batch.read_batch``, no rows kept), or None
    where they cannot serve it."""
    with backend._txn() as txn:
        rows = np.asarray(indices, np.int64)
        return _lmdb_batch.read_batch(
            txn, backend._seal, rows, keys, atoms, backend._damaged, backend._decode, 0
        )

"""Scalar columns stacked without Python values (``read_column_array``) equal the values.

Matrix: H5MD and LMDB (the backends that have it); scalar keys of Python float, int, bool
and numpy float32, int8, bool scalars; rows all, shuffled with repeats, one; with caches and
without: ``to_numpy`` gives exactly
``np.asarray(to_list())`` (dtype and values), ``to_list`` keeps Python and numpy scalar types;
a key some rows lack still raises naming them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from asebytes_nodes import ASEIO
from asebytes_nodes.errors import MissingValueError

KEYS = {
    "info.f": lambda i: float(i) / 3,
    "info.i": lambda i: i * 7 - 100,
    "info.b": lambda i: i % 3 == 0,
    "info.f32": lambda i: np.float32(i) / 7,
    "info.i8": lambda i: np.int8(i % 100),
    "info.nb": lambda i: np.bool_(i % 2),
}


@pytest.fixture(params=[".h5", ".lmdb"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    frames = []
    for i in range(50):
        atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]])
        atoms.info.update({key.split(".")[1]: make(i) for key, make in KEYS.items()})
        if i != 17:
            atoms.info["some"] = float(i)
        frames.append(atoms)
    path = tmp_path / f"x{request.param}"
    with ASEIO(path) as db:
        db.extend(frames)
    return path


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20])
def test_stacked_columns_equal_the_values(store: Path, cache_bytes: int) -> None:
    with ASEIO(store, readonly=True, cache_bytes=cache_bytes) as db:
        for rows in (slice(None), [30, 2, 30, 0], [9]):
            for key, make in KEYS.items():
                column = db[rows][key]
                values = column.to_list()
                expected = (
                    [make(i) for i in range(50)][rows] if isinstance(rows, slice) else [make(i) for i in rows]
                )
                assert values == expected and [type(v) for v in values] == [type(v) for v in expected], key
                stacked = column.to_numpy()
                reference = np.asarray(values)
                assert stacked.dtype == reference.dtype, key
                np.testing.assert_array_equal(stacked, reference)
                assert db.backend.read_column_array(key, np.arange(3)) is not None
        assert db[[16, 18]]["info.some"].to_numpy().tolist() == [16.0, 18.0]
        assert db.backend.read_column_array("info.some", np.arange(50)) is None
        with pytest.raises(MissingValueError, match="17"):
            db["info.some"].to_numpy()

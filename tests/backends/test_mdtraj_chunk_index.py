"""MDTraj files: a chunk HDF5's index no longer finds is an error, never fill values (issue 12).

A flipped bit in a key of the v1 B-tree of ``/coordinates`` makes HDF5 read 91 frames as zeros
with no error (checked below with h5py alone). Matrix: random rows, the whole file, the positions
column, a second read of the same rows (the error stays), ``check()``; the undamaged file reads
exactly and ``check()`` is empty; every other chunk still reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import hdf5kit  # noqa: E402
from faultkit import flip_bit  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402

COORDS = "/coordinates"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int, int]:
    """(good file, damaged copy, first and last row of the chunk the index no longer finds)."""
    folder = tmp_path_factory.mktemp("mdtraj-index")
    good = hdf5kit.build(folder / "good.h5", "mdtraj", 300)
    bad = folder / "bad.h5"
    shutil.copy(good, bad)
    offset, row = hdf5kit.btree_key(bad, COORDS, 1)
    flip_bit(bad, offset + 4, 4)
    with h5py.File(bad, "r") as f:  # what HDF5 alone gives: fill values, no error
        step = f[COORDS].chunks[0]
        assert not f[COORDS][row].any()
    return good, bad, row, row + step - 1


def test_rows_of_a_chunk_the_index_loses_are_an_error(files: tuple[Path, Path, int, int]) -> None:
    good, bad, first, last = files
    with ASEIO(good, readonly=True) as ok, ASEIO(bad, readonly=True) as db:
        assert np.array_equal(db[0].positions, ok[0].positions)  # another chunk reads exactly
        for _ in range(2):  # and the error does not go away on a second try
            with pytest.raises(StoreCorruptedError, match=f"/coordinates rows {first}-{last}"):
                db[first + 1]
        with pytest.raises(StoreCorruptedError, match="chunk index"):
            list(db)
        with pytest.raises(StoreCorruptedError, match="chunk index"):
            db["arrays.positions"].to_list()
        problems = db.backend.check()
        assert len(problems) == 1 and f"/coordinates rows {first}-{last}" in problems[0]


def test_an_undamaged_file_reads_exactly_and_checks_clean(files: tuple[Path, Path, int, int]) -> None:
    good, _, first, _ = files
    with ASEIO(good, readonly=True) as db:
        assert db.backend.check() == []
        atoms = db[first + 1]
    with h5py.File(good, "r") as f:
        assert np.allclose(atoms.positions, f[COORDS][first + 1] * 10.0)  # nm on disk

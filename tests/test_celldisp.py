"""A non-zero ``celldisp`` round-trips exactly on every writable backend (issue 13, item 4).

Matrix: memory, LMDB, Zarr, H5MD; frames with and without a cell displacement in one store;
read back through a fresh handle. A zero displacement adds no key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule

from asebytes_nodes import ASEIO, atoms_to_dict


def frames() -> list:
    shifted = bulk("Cu", cubic=True)
    shifted.set_celldisp([0.25, -1.5, 3.0])
    column = bulk("Si")
    column._celldisp = np.array([[1.0], [2.0], [3.0]])  # ASE's own (3, 1) layout
    return [molecule("H2O"), shifted, column, bulk("Si")]


def test_zero_displacement_adds_no_key() -> None:
    assert "celldisp" not in atoms_to_dict(molecule("H2O"))
    assert atoms_to_dict(frames()[1])["celldisp"].tolist() == [0.25, -1.5, 3.0]
    column = molecule("H2O")
    column._celldisp = np.array([[1.0], [2.0], [3.0]])  # ASE's own (3, 1) layout
    assert atoms_to_dict(column)["celldisp"].shape == (3, 1)


@pytest.mark.parametrize("target", ["memory://", "x.lmdb", "x.zarr", "x.h5"])
def test_celldisp_round_trip(tmp_path: Path, target: str) -> None:
    db = ASEIO(target if "://" in target else tmp_path / target)
    db.extend(frames())
    if "://" not in target:
        db.close()
        db = ASEIO(tmp_path / target, readonly=True)
    for expected, got in zip(frames(), db, strict=True):
        assert got.get_celldisp().shape == expected.get_celldisp().shape
        np.testing.assert_array_equal(got.get_celldisp(), expected.get_celldisp())
        np.testing.assert_array_equal(got.positions, expected.positions)
    assert "celldisp" not in db.keys(0) and "celldisp" in db.keys(1)

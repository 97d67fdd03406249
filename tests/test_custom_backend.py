"""A user backend with only __len__ and read_rows works with every view.

It is seeded with rows built by ``atoms_to_dict`` and kept in a plain list, so the
read contract checks ASEIO's default batch, column, key and schema paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from ase import Atoms

from asebytes_nodes import ASEIO, ReadableBackend, ReadOnlyError, atoms_to_dict
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory


class ListBackend(ReadableBackend):
    """The smallest readable backend a user can write."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        picked = [{k: v for k, v in self.rows[int(i)].items() if keys is None or k in keys} for i in indices]
        return [{k: v.copy() if hasattr(v, "copy") else v for k, v in row.items()} for row in picked]


class ListStore(StoreFactory):
    def seed(self, frames: list[Atoms]) -> None:
        import copy

        self.rows = [copy.deepcopy(atoms_to_dict(a)) for a in frames]

    def open(self, readonly: bool = False) -> ListBackend:
        return ListBackend(self.rows)


class TestCustomBackendContract(ReadableContract):
    @pytest.fixture
    def store(self) -> StoreFactory:
        return ListStore()


def test_custom_backend_is_read_only() -> None:
    from ase.build import molecule

    db = ASEIO(ListBackend([atoms_to_dict(molecule("H2O"))]))
    assert db[0].get_chemical_formula() == "H2O"
    with pytest.raises(ReadOnlyError):
        db.append(molecule("H2O"))


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("arrays.positions", np.zeros((2, 3)), "'arrays.positions' 2"),
        ("arrays.momenta", np.zeros((5, 3)), "'arrays.momenta' 5"),
        ("calc.forces", np.zeros((4, 3)), "'calc.forces' 4"),
    ],
)
def test_a_row_whose_per_atom_values_disagree_is_named(key: str, value: np.ndarray, named: str) -> None:
    """Such a row became Atoms with 3 numbers and 2 positions (ase.Atoms itself refuses it)."""
    from ase.build import molecule

    from asebytes_nodes import StoreCorruptedError

    good = atoms_to_dict(molecule("H2O"))
    db = ASEIO(ListBackend([good, {**good, key: value}]))
    assert db[0].get_chemical_formula() == "H2O"
    for read in (lambda: db[1], lambda: list(db), lambda: db[[0, 1]].to_list()):
        with pytest.raises(StoreCorruptedError, match=f"row 1: .*{named}"):
            read()

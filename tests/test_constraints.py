"""Constraints ASE cannot rebuild are refused at write and named at read (issue 13, item 5).

Matrix: a user-defined ``FixConstraint`` subclass (stored by ``todict()``, unknown to
``dict2constraint``) written to memory, LMDB, Zarr and H5MD: the whole ``extend`` is refused
with an error naming the frame and the constraint, and the store keeps its frames; a row that
holds such a constraint (written by another tool, here straight through the backend) raises
an error naming the row and the class on ``db[i]`` and on iteration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import molecule
from ase.constraints import FixAtoms, FixConstraint

from asebytes_nodes import ASEIO, InvalidDataError, StoreCorruptedError, atoms_to_dict


class PinFirst(FixConstraint):
    """A user's own constraint: ASE's dict2constraint does not know it."""

    def adjust_positions(self, atoms, new):  # noqa: ANN001
        new[0] = atoms.positions[0]

    def todict(self) -> dict:
        return {"name": "PinFirst", "kwargs": {}}


TARGETS = ["memory://", "x.lmdb", "x.zarr", "x.h5"]


def open_store(tmp_path: Path, target: str) -> ASEIO:
    return ASEIO(target if "://" in target else tmp_path / target)


@pytest.mark.parametrize("target", TARGETS)
def test_unrebuildable_constraint_refused_before_writing(tmp_path: Path, target: str) -> None:
    db = open_store(tmp_path, target)
    kept = molecule("H2O")
    kept.set_constraint(FixAtoms([0]))
    db.extend([kept])
    bad = molecule("CH4")
    bad.set_constraint([FixAtoms([1]), PinFirst()])
    with pytest.raises(InvalidDataError, match=r"frame 1: constraint 1 \(PinFirst\) cannot be rebuilt"):
        db.extend([molecule("NH3"), bad])
    assert len(db) == 1
    assert [type(c).__name__ for c in db[0].constraints] == ["FixAtoms"]


@pytest.mark.parametrize("target", ["memory://", "x.lmdb"])
def test_stored_unrebuildable_constraint_names_the_row(tmp_path: Path, target: str) -> None:
    db = open_store(tmp_path, target)
    frames = [molecule("H2O"), molecule("CH4")]
    db.extend(frames)
    row = atoms_to_dict(frames[1])
    row["constraints"] = [{"name": "PinFirst", "kwargs": {}}]  # as another tool might write it
    db.backend.set_rows([1], [row])
    with pytest.raises(StoreCorruptedError, match=r"row 1: a stored constraint of class 'PinFirst'"):
        db[1]
    with pytest.raises(StoreCorruptedError, match=r"row 1: a stored constraint of class 'PinFirst'"):
        list(db)
    assert db[0].get_chemical_formula() == "H2O"


@pytest.mark.parametrize("target", TARGETS)
def test_constraint_naming_a_missing_atom_is_refused(tmp_path: Path, target: str) -> None:
    """ASE takes FixAtoms([7]) on 3 atoms and fails only when it applies it (on a later
    read and relax): every write path refuses it, naming the frame and the atom."""
    from ase.constraints import FixBondLength, FixCom, Hookean

    db = open_store(tmp_path, target)
    kept = molecule("H2O")
    kept.set_constraint([FixAtoms([2]), FixCom(), Hookean(0, 1, 1.0, 1.5)])  # in range, or no indices
    db.extend([kept])
    bad = molecule("H2O")
    bad.set_constraint(FixAtoms([7]))
    refused = r"frame 1: constraint 0 \(FixAtoms\) refers to atom 7 .* 3 atoms"
    with pytest.raises(InvalidDataError, match=refused):
        db.extend([molecule("NH3"), bad])
    bad.set_constraint(FixBondLength(0, -4))
    with pytest.raises(InvalidDataError, match=r"refers to atom -4 but the frame has 3 atoms"):
        db[0] = bad
    with pytest.raises(InvalidDataError, match=r"constraint 0 \(FixAtoms\) refers to atom 3 .* 3 atoms"):
        db.update(0, constraints=[FixAtoms([0, 3])])
    assert len(db) == 1
    assert [type(c).__name__ for c in db[0].constraints] == ["FixAtoms", "FixCom", "Hookean"]
    db.update(0, constraints=[FixAtoms([1])])
    assert db[0].constraints[0].get_indices().tolist() == [1]

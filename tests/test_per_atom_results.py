"""ASE's per-atom calculator results are per-atom columns on every backend (issue 13, item 6).

Matrix: every output ASE declares with a leading ``natoms`` axis (``ase.outputs``) against
:data:`~asebytes_nodes.backends._keys.PER_ATOM_CALC`; ``born_effective_charges`` on frames of
different atom counts written to memory, LMDB, Zarr and H5MD, read back exactly, described as
per-atom by ``schema``, and visible to znh5md in our H5MD file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.outputs import all_outputs

from asebytes_nodes import ASEIO
from asebytes_nodes.backends._keys import PER_ATOM_CALC


def test_every_per_atom_output_of_ase_is_listed() -> None:
    per_atom = {n: out.shapespec[1:] for n, out in all_outputs.items() if out.shapespec[:1] == ("natoms",)}
    assert per_atom, "ase.outputs lists no per-atom output: the test checks nothing"
    for name, tail in per_atom.items():
        assert name in PER_ATOM_CALC, f"ASE's per-atom result {name!r} is not in PER_ATOM_CALC"
        assert tuple(tail) in PER_ATOM_CALC[name], f"{name}: ASE's shape (natoms, *{tail}) not allowed"


def frames() -> list:
    out = []
    for k, name in enumerate(("H2O", "CH4", "C2H6")):
        atoms = molecule(name)
        bec = np.random.default_rng(k).normal(size=(len(atoms), 3, 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(k), born_effective_charges=bec)
        out.append(atoms)
    return out


@pytest.mark.parametrize("target", ["memory://", "x.lmdb", "x.zarr", "x.h5"])
def test_born_effective_charges_are_per_atom(tmp_path: Path, target: str) -> None:
    written = frames()
    db = ASEIO(target if "://" in target else tmp_path / target)
    db.extend(written)
    if "://" not in target:  # a fresh handle reads what the file holds
        db.close()
        db = ASEIO(tmp_path / target, readonly=True)
    info = db.schema["calc.born_effective_charges"]
    assert info.per_atom and info.shape == (-1, 3, 3) and info.dtype == "float64"
    for expected, got in zip(written, db, strict=True):
        np.testing.assert_array_equal(
            got.calc.results["born_effective_charges"], expected.calc.results["born_effective_charges"]
        )


def test_znh5md_sees_born_effective_charges(tmp_path: Path) -> None:
    znh5md = pytest.importorskip("znh5md")
    ASEIO(tmp_path / "x.h5").extend(frames())
    for expected, got in zip(frames(), znh5md.IO(tmp_path / "x.h5")[:], strict=True):
        np.testing.assert_array_equal(
            got.calc.results["born_effective_charges"], expected.calc.results["born_effective_charges"]
        )

"""Frames that exercise the flat data model, and an exact comparison of Atoms.

Used by the contract suite and available to third-party backend authors.
"""

from __future__ import annotations

import cmath
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixBondLength, FixCartesian, FixedLine, FixedPlane

__all__ = ["FRAME_KINDS", "assert_atoms_equal", "assert_values_equal", "make_frames"]


def _with_calc(atoms: Atoms, **results: Any) -> Atoms:
    atoms.calc = SinglePointCalculator(atoms)
    atoms.calc.results.update(results)
    return atoms


def _ethanol(i: int) -> Atoms:
    rng = np.random.default_rng(i)
    atoms = molecule("CH3CH2OH")
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    _with_calc(
        atoms,
        energy=float(rng.normal()),
        forces=rng.normal(size=(9, 3)),
        stress=rng.normal(size=6),
    )
    atoms.info.update(
        smiles="CCO",
        index=i,
        converged=bool(i % 2),
        weights=[1, 2.5, "x"],
        meta={"source": "test", "nested": {"n": i, "ok": True}},
        pair=(1, "two"),
        count=np.int32(7),
        temperature=np.float32(300.5),
        missing=None,
    )
    return atoms


def _all_results() -> Atoms:
    atoms = molecule("H2O")
    n = len(atoms)
    return _with_calc(
        atoms,
        energy=-14.2,
        free_energy=-14.3,
        forces=np.arange(3 * n, dtype=float).reshape(n, 3),
        stress=np.arange(6, dtype=float),
        energies=np.array([-5.0, -4.6, -4.6]),
        stresses=np.ones((n, 6)),
        magmom=1.5,
        magmoms=np.array([0.5, 0.5, 0.5]),
        dipole=np.array([0.1, 0.2, 0.3]),
        charges=np.array([-0.8, 0.4, 0.4]),
        custom_score=np.float64(0.25),
    )


def _special_values() -> Atoms:
    atoms = molecule("CH4")
    _with_calc(atoms, energy=float("nan"), forces=np.full((5, 3), np.inf))
    atoms.info.update(nan=float("nan"), inf=float("-inf"), zero=0, false=False, empty="")
    atoms.info["dotted.name.key"] = "dots stay in the name"
    return atoms


def _arrays() -> Atoms:
    atoms = molecule("CH3OH")
    n = len(atoms)
    atoms.set_momenta(np.linspace(0, 1, 3 * n).reshape(n, 3))
    atoms.set_masses(np.arange(1, n + 1, dtype=float))
    atoms.set_tags(np.arange(n))
    atoms.set_initial_charges(np.linspace(-1, 1, n))
    atoms.set_initial_magnetic_moments(np.linspace(0, 2, n))
    atoms.new_array("custom_f32", np.ones((n, 2), dtype=np.float32))
    atoms.new_array("labels", np.array([f"a{i}" for i in range(n)]))
    atoms.new_array("flags", np.arange(n) % 2 == 0)
    return atoms


def _periodic(i: int) -> Atoms:
    rng = np.random.default_rng(100 + i)
    atoms = bulk("Cu", "fcc", a=3.6).repeat((1 + i % 3, 1, 1))
    atoms.set_cell(atoms.cell.array + rng.normal(0, 0.1, (3, 3)), scale_atoms=True)
    atoms.pbc = [True, False, True]
    n = len(atoms)
    return _with_calc(atoms, energy=-3.5 * n, forces=rng.normal(size=(n, 3)), stress=rng.normal(size=6))


def _constrained() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.set_constraint(
        [
            FixAtoms(indices=[0, 1]),
            FixBondLength(2, 3),
            FixedLine(4, [0, 0, 1]),
            FixedPlane(5, [1, 0, 0]),
            FixCartesian(6, mask=[True, False, True]),
        ]
    )
    return atoms


def _single_atom() -> Atoms:
    return _with_calc(Atoms("Ar", positions=[[0.1, 0.2, 0.3]]), energy=-0.01)


FRAME_KINDS: dict[str, Any] = {
    "ethanol": lambda: [_ethanol(i) for i in range(4)],
    "no_calculator": lambda: [molecule("H2O"), molecule("NH3")],
    "all_calc_results": lambda: [_all_results()],
    "special_values": lambda: [_special_values()],
    "per_atom_arrays": lambda: [_arrays()],
    "periodic_variable_n": lambda: [_periodic(i) for i in range(5)],
    "constraints": lambda: [_constrained()],
    "empty_and_single": lambda: [Atoms(), _single_atom(), Atoms(cell=[2, 2, 2], pbc=True)],
    "keys_on_some_frames": lambda: [_ethanol(0), molecule("H2O"), _special_values(), _arrays()],
}


def make_frames(kind: str) -> list[Atoms]:
    """Fresh frames of one kind from :data:`FRAME_KINDS`."""
    return list(FRAME_KINDS[kind]())


def assert_values_equal(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of stored values: same types, dtypes, shapes; NaN equals NaN."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{where}: {a!r} != {b!r}"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{where}: {a} != {b}"
        return
    assert type(a) is type(b), f"{where}: type {type(a).__name__} != {type(b).__name__} ({a!r}, {b!r})"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_values_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for j, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_values_equal(x, y, f"{where}[{j}]")
    elif isinstance(a, (float, complex, np.inexact)) and cmath.isnan(a):
        assert cmath.isnan(b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_atoms_equal(a: Atoms, b: Atoms, where: str = "frame") -> None:
    """Exact equality of two frames as the flat data model sees them."""
    assert set(a.arrays) == set(b.arrays), f"{where}: arrays {sorted(a.arrays)} != {sorted(b.arrays)}"
    for name in a.arrays:
        assert_values_equal(a.arrays[name], b.arrays[name], f"{where} arrays.{name}")
    assert_values_equal(a.cell.array, b.cell.array, f"{where} cell")
    assert_values_equal(np.asarray(a.pbc), np.asarray(b.pbc), f"{where} pbc")
    assert_values_equal(dict(a.info), dict(b.info), f"{where} info")
    if a.calc is None or not a.calc.results:
        assert b.calc is None, f"{where}: expected no calculator, got {b.calc!r}"
    else:
        assert isinstance(b.calc, SinglePointCalculator), f"{where}: calculator {b.calc!r}"
        assert_values_equal(dict(a.calc.results), dict(b.calc.results), f"{where} calc")
    assert_values_equal(
        [c.todict() for c in a.constraints], [c.todict() for c in b.constraints], f"{where} constraints"
    )

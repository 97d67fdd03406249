"""The flat data model: exact round trips, calculator behaviour, constraints, checks.

Matrix: every frame kind of the reference set x (atoms_to_dict -> dict_to_atoms),
plus ASE's own behaviours the loaded objects must keep.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import InvalidDataError, UnknownKeyError, atoms_to_dict, dict_to_atoms
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_atoms_equal, make_frames
from asebytes_nodes.validation import validate_row


@pytest.mark.parametrize("kind", sorted(FRAME_KINDS))
def test_round_trip(kind: str) -> None:
    for atoms in make_frames(kind):
        assert_atoms_equal(atoms, dict_to_atoms(atoms_to_dict(atoms)), kind)


def test_namespace_layout() -> None:
    atoms = make_frames("all_calc_results")[0]
    atoms.info["n"] = 1
    row = atoms_to_dict(atoms)
    assert {"arrays.numbers", "arrays.positions", "cell", "pbc", "info.n"} <= set(row)
    assert {f"calc.{k}" for k in atoms.calc.results} <= set(row)
    assert "constraints" not in row


def test_calculator_like_ase() -> None:
    atoms = make_frames("all_calc_results")[0]
    loaded = dict_to_atoms(atoms_to_dict(atoms))
    assert isinstance(loaded.calc, SinglePointCalculator)
    assert loaded.get_potential_energy() == -14.2
    assert loaded.get_magnetic_moment() == 1.5
    np.testing.assert_array_equal(loaded.get_charges(), atoms.calc.results["charges"])
    loaded.positions[0] += 0.5
    with pytest.raises(PropertyNotImplementedError):
        loaded.get_forces()
    assert dict_to_atoms(atoms_to_dict(molecule("H2O"))).calc is None


def _variants(atoms: Atoms) -> dict[str, Atoms]:
    """``atoms`` unchanged and changed in each way ASE's compare_atoms looks at (or does not)."""
    out = {"same": atoms.copy()}
    out["moved by 1e-12"] = atoms.copy()
    out["moved by 1e-12"].positions[0, 0] += 1e-12
    out["numbers"] = atoms.copy()
    out["numbers"].numbers[0] = 3
    out["cell"] = atoms.copy()
    out["cell"].cell[0, 0] += 1.0
    out["pbc"] = atoms.copy()
    out["pbc"].pbc = [True, False, True]
    out["charges added"] = atoms.copy()
    out["charges added"].set_initial_charges(np.zeros(len(atoms)))
    out["momenta (not compared by ASE)"] = atoms.copy()
    out["momenta (not compared by ASE)"].set_momenta(np.ones((len(atoms), 3)))
    out["-0.0 for 0.0"] = atoms.copy()
    out["-0.0 for 0.0"].positions[out["-0.0 for 0.0"].positions == 0.0] = -0.0
    return out


@pytest.mark.parametrize("nan", [False, True])
def test_state_check_answers_as_ases(nan: bool) -> None:
    """Loaded frames answer ``check_state`` (every get_potential_energy/get_forces asks it)
    exactly as ASE's own SinglePointCalculator does, for unchanged and changed atoms; NaN
    positions (which ASE counts as a change) included."""
    atoms = molecule("H2O", vacuum=2.0)
    atoms.positions[1, 1] = 0.0
    if nan:
        atoms.positions[2, 0] = np.nan
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=np.ones((3, 3)))
    loaded = dict_to_atoms(atoms_to_dict(atoms))
    ase_calc = SinglePointCalculator(loaded, energy=-1.5, forces=np.ones((3, 3)))
    for name, other in _variants(loaded).items():
        assert sorted(loaded.calc.check_state(other)) == sorted(ase_calc.check_state(other)), name
    if nan:
        with pytest.raises(PropertyNotImplementedError):
            loaded.get_potential_energy()
    else:
        assert loaded.get_potential_energy() == -1.5
        loaded.positions[0, 2] += 1e-9
        with pytest.raises(PropertyNotImplementedError):
            loaded.get_forces()


def test_loaded_calculator_pickles_as_ases() -> None:
    """Pickled or deep-copied, a loaded frame's calculator is a plain SinglePointCalculator
    (a process without this package unpickles it) with the same results."""
    import copy
    import pickle

    atoms = make_frames("all_calc_results")[0]
    loaded = dict_to_atoms(atoms_to_dict(atoms))
    for again in (pickle.loads(pickle.dumps(loaded)), copy.deepcopy(loaded)):
        assert type(again.calc) is SinglePointCalculator
        assert again.get_potential_energy() == loaded.get_potential_energy()
        np.testing.assert_array_equal(again.get_forces(), loaded.get_forces())
    assert b"asebytes_nodes" not in pickle.dumps(loaded.calc)


def test_stale_results_are_dropped_like_ase() -> None:
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    atoms.positions[0] += 1.0  # the results no longer describe this configuration
    assert "calc.energy" not in atoms_to_dict(atoms)


def test_live_calculator_results_are_kept() -> None:
    atoms = molecule("H2O", vacuum=3.0)
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    loaded = dict_to_atoms(atoms_to_dict(atoms))
    assert loaded.get_potential_energy() == energy


def test_round_trip_agrees_with_ase_jsonio() -> None:
    """Both round trips used in the benchmark give the same structure (speed is measured there)."""
    from ase.io.jsonio import decode, encode

    atoms = make_frames("ethanol")[0]
    assert np.array_equal(decode(encode(atoms)).positions, dict_to_atoms(atoms_to_dict(atoms)).positions)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(UnknownKeyError, match="'energy'"):
        dict_to_atoms({"energy": 1.0})
    with pytest.raises(UnknownKeyError, match="'calc.'"):
        validate_row({"calc.": 1.0})


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"arrays.positions": np.zeros((3, 2))}, r"'arrays.positions' has shape \(3, 2\)"),
        ({"arrays.numbers": [1, 1], "arrays.positions": np.zeros((3, 3))}, "has 3 rows but the frame has 2"),
        ({"cell": np.zeros((2, 3))}, r"'cell' has shape \(2, 3\)"),
        ({"pbc": [True, False]}, r"'pbc' has shape \(2,\)"),
        ({"calc.stress": np.zeros(5)}, r"'calc.stress' has shape \(5,\)"),
        ({"constraints": "FixAtoms"}, "list of ASE constraints or their dicts"),
    ],
)
def test_validate_row_names_the_problem(row: dict, match: str) -> None:
    with pytest.raises(InvalidDataError, match=match):
        validate_row(row, where="row 0")


def test_validate_row_partial_update_checks_atom_count() -> None:
    with pytest.raises(InvalidDataError, match="4 rows but the frame has 3"):
        validate_row({"calc.forces": np.zeros((4, 3))}, n_atoms=3)
    assert validate_row({"calc.forces": np.zeros((3, 3))}, n_atoms=3)["calc.forces"].shape == (3, 3)


def test_atoms_to_dict_refuses_non_atoms() -> None:
    with pytest.raises(InvalidDataError, match="expected ase.Atoms, got dict"):
        atoms_to_dict({})  # type: ignore[arg-type]


def test_empty_atoms() -> None:
    loaded = dict_to_atoms(atoms_to_dict(Atoms()))
    assert len(loaded) == 0 and loaded.positions.shape == (0, 3)

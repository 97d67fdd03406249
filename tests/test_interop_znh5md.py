"""Files written by znh5md read back as znh5md reads them (issue 13, items 1-3).

Matrix: frames with and without a calculator, with and without velocities, of 3 to 8 atoms
(the ones carrying results or velocities smaller than the largest frame), stress on some
frames; each frame read by ours is compared with ``znh5md.IO(path)[i]`` (velocities, forces,
stress, energy, positions, numbers, cell, pbc; a result znh5md does not give is absent in ours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO, H5MDBackend

znh5md = pytest.importorskip("znh5md")


def frames() -> list[Atoms]:
    rng = np.random.default_rng(3)
    water = Atoms("H2O", positions=np.eye(3))
    water.set_velocities(np.full((3, 3), 0.5))  # ASE velocity units; znh5md labels them Angstrom/fs
    water.calc = SinglePointCalculator(water, energy=-1.25, forces=rng.normal(size=(3, 3)),
                                       stress=rng.normal(size=6))
    ethane = molecule("C2H6")  # the largest frame: no calculator, no velocities
    ethane.cell, ethane.pbc = 8.0 * np.eye(3), True
    methane = molecule("CH4")
    methane.set_velocities(rng.normal(size=(5, 3)))
    methane.calc = SinglePointCalculator(methane, energy=2.5, forces=rng.normal(size=(5, 3)))
    again = water.copy()
    again.calc = SinglePointCalculator(again, **water.calc.results)
    return [water, ethane, methane, again]


def results(atoms: Atoms) -> dict[str, np.ndarray]:
    return {} if atoms.calc is None else {k: np.asarray(v) for k, v in atoms.calc.results.items()}


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "zn.h5"
    znh5md.IO(path).extend(frames())
    return path


def test_values_read_as_znh5md_reads_them(written: Path) -> None:
    reference = znh5md.IO(written)
    db = ASEIO(written, readonly=True)
    assert len(db) == len(reference)
    for i, ours in enumerate(db):
        theirs = reference[i]
        np.testing.assert_array_equal(ours.numbers, theirs.numbers)
        np.testing.assert_array_equal(ours.positions, theirs.positions)
        np.testing.assert_array_equal(ours.cell.array, theirs.cell.array)
        np.testing.assert_array_equal(ours.pbc, theirs.pbc)
        assert ours.has("momenta") == theirs.has("momenta"), f"frame {i}: velocities"
        if theirs.has("momenta"):
            np.testing.assert_allclose(ours.get_velocities(), theirs.get_velocities(), rtol=1e-12)
        got, expected = results(ours), results(theirs)
        assert sorted(got) == sorted(expected), f"frame {i}: results {sorted(got)} != {sorted(expected)}"
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"frame {i} {key}")


def test_velocity_label_is_not_converted(written: Path) -> None:
    db = ASEIO(written, readonly=True)
    np.testing.assert_allclose(db[0].get_velocities(), np.full((3, 3), 0.5), rtol=1e-12)


def test_frame_without_calculator_has_none(written: Path) -> None:
    db = ASEIO(written, readonly=True)
    assert db[1].calc is None
    assert "calc.energy" not in db.keys(1) and "calc.forces" not in db.keys(1)
    assert "calc.stress" not in db.keys(2)  # methane has energy and forces but no stress


def test_forces_of_smaller_frames_are_read(written: Path) -> None:
    backend = H5MDBackend(written, readonly=True)
    assert backend.skipped == {}
    assert "calc.forces" in ASEIO(backend).columns
    expected = frames()
    db = ASEIO(written, readonly=True)
    np.testing.assert_array_equal(db[2].get_forces(), expected[2].get_forces())
    np.testing.assert_array_equal(db[3].get_forces(), expected[3].get_forces())


def test_other_writers_keep_unit_conversion(tmp_path: Path) -> None:
    """The same velocity label written by another program is converted: 1 Angstrom/fs is
    1/ase.units.fs in ASE's velocity unit."""
    import h5py
    from ase import units

    path = tmp_path / "other.h5"
    znh5md.IO(path).extend([frames()[0]])
    with h5py.File(path, "a") as f:
        f["h5md/creator"].attrs["name"] = "some-md-code"
    db = ASEIO(path, readonly=True)
    np.testing.assert_allclose(db[0].get_velocities(), np.full((3, 3), 0.5 / units.fs), rtol=1e-12)
    assert db.backend.format_info()["creator"]["name"] == "some-md-code"  # the writer it names


def test_charges_are_read_as_their_origin_tag_says(tmp_path: Path) -> None:
    """znh5md files calculator charges as particles/<g>/charge tagged "calc" (initial charges as
    initial_charges): they were read as initial charges, and the real ones then dropped."""
    water = molecule("H2O")
    water.set_initial_charges([0.4, -0.2, -0.2])
    water.calc = SinglePointCalculator(water, energy=-1.0, charges=np.array([0.9, -0.45, -0.45]))
    bare = molecule("H2O")
    bare.calc = SinglePointCalculator(bare, energy=-2.0, charges=np.array([0.8, -0.4, -0.4]))
    path = tmp_path / "charges.h5"
    znh5md.IO(path).extend([water, bare])
    theirs = znh5md.IO(path)[:]
    db = ASEIO(path, readonly=True)
    assert db.backend.skipped == {}
    for ours, want in zip(db, theirs, strict=True):
        np.testing.assert_array_equal(ours.calc.results["charges"], want.calc.results["charges"])
        np.testing.assert_array_equal(ours.get_initial_charges(), want.get_initial_charges())
    assert db[1].get_initial_charges().tolist() == [0.0, 0.0, 0.0]


def test_a_frame_without_atoms_has_no_per_atom_results(tmp_path: Path) -> None:
    """znh5md reads a 0-atom frame without forces or custom arrays (their padding is all there
    is); we gave it (0, 3) forces and a (0,) array, and every conversion carried them."""
    water = molecule("H2O")
    water.arrays["extra"] = np.arange(3.0)
    water.calc = SinglePointCalculator(water, energy=-1.0, forces=np.ones((3, 3)))
    empty = Atoms()
    empty.calc = SinglePointCalculator(empty, energy=0.5)
    path = tmp_path / "empty.h5"
    znh5md.IO(path).extend([water, empty])
    theirs = znh5md.IO(path)[1]
    ours = ASEIO(path, readonly=True)[1]
    assert sorted(ours.arrays) == sorted(theirs.arrays) == ["numbers", "positions"]
    assert ours.calc.results == theirs.calc.results == {"energy": 0.5}
    assert ASEIO(path, readonly=True)[0].arrays["extra"].tolist() == [0.0, 1.0, 2.0]

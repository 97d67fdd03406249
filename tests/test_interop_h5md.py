"""H5MD interop, both ways, with the programs of the field and their real files.

Test matrix
-----------
* our files read by znh5md (positions, numbers, cell, pbc, energy, forces, stress, momenta; fixed
  and variable atom counts) and by MDAnalysis' H5MD reader with its defaults (positions,
  velocities, box);
* files written here by znh5md, MDAnalysis' H5MDWriter and pyh5md, read by ours;
* what H5MD allows, written with h5py: fixed-length strings, uint64 steps, an ``id`` fill value,
  NaN padding with float species, several particle groups; and what it refuses: pre-1.0 and 2.x
  versions, no version, unknown units, 2-D boxes;
* every file in ``../shared/realdata/h5md/``, checked against plain h5py reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk
from ase.units import fs, kJ, mol

h5py = pytest.importorskip("h5py")

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    FormatVersionError,
    StoreCorruptedError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from asebytes_nodes.backends.h5md import H5MDBackend  # noqa: E402
from asebytes_nodes.registry import resolve_backend  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "h5md"
KJ_MOL = kJ / mol  # eV
PS = 1000 * fs  # ASE time units per ps


def _frames_with_momenta() -> list[Any]:
    frames = make_frames("ethanol") + make_frames("periodic_variable_n")
    rng = np.random.default_rng(3)
    for atoms in frames:
        atoms.set_momenta(rng.normal(size=(len(atoms), 3)))
    return frames


def _assert_same_structure_and_results(a: Any, b: Any) -> None:
    """Numbers, positions, cell, pbc, energy, forces and stress are exactly equal."""
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell.array, b.cell.array)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert a.get_potential_energy() == b.get_potential_energy()
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    np.testing.assert_array_equal(a.get_stress(), b.get_stress())


# -- our files in other programs -----------------------------------------------------------------
def test_znh5md_reads_our_files(tmp_path: Path) -> None:
    znh5md = pytest.importorskip("znh5md")
    path = tmp_path / "ours.h5"
    frames = _frames_with_momenta()
    ASEIO(path).extend(frames)
    got = znh5md.IO(path)[:]
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        _assert_same_structure_and_results(a, b)
        np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())
    assert got[0].info["smiles"] == "CCO" and got[3].info["index"] == 3


def test_mdanalysis_reads_our_files(tmp_path: Path) -> None:
    pytest.importorskip("MDAnalysis")
    from MDAnalysis.coordinates.H5MD import H5MDReader

    path = tmp_path / "ours.h5md"
    frames = _frames_with_momenta()
    ASEIO(path).extend(frames)
    reader = H5MDReader(str(path))  # convert_units=True, its default
    assert reader.units == {"time": "fs", "length": "Angstrom", "velocity": "Angstrom/ps", "force": None}
    assert reader.n_frames == len(frames)
    for atoms, ts in zip(frames, reader, strict=True):
        n = len(atoms)
        np.testing.assert_allclose(ts.positions[:n], atoms.positions, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ts.velocities[:n], atoms.get_velocities() * PS, rtol=1e-5, atol=1e-5)
        if atoms.pbc.any():
            np.testing.assert_allclose(ts.dimensions, atoms.cell.cellpar(), rtol=1e-5)
    reader.close()


def test_mdanalysis_universe_opens_our_trajectory_group(tmp_path: Path) -> None:
    """What the README says: group="trajectory" in a file named *.h5md opens as
    ``MDAnalysis.Universe(path)``, without a topology."""
    mda = pytest.importorskip("MDAnalysis")
    frames = [bulk("Cu", cubic=True), bulk("Cu", cubic=True)]
    frames[1].positions += 0.25
    path = tmp_path / "ours.h5md"
    ASEIO(path, group="trajectory").extend(frames)
    universe = mda.Universe(str(path))
    assert len(universe.trajectory) == 2 and universe.atoms.n_atoms == 4
    for atoms, ts in zip(frames, universe.trajectory, strict=True):
        np.testing.assert_allclose(ts.positions, atoms.positions, rtol=1e-6, atol=1e-6)


# -- their files in ours -------------------------------------------------------------------------
def test_znh5md_files_open_in_ours(tmp_path: Path) -> None:
    znh5md = pytest.importorskip("znh5md")
    path = tmp_path / "znh5md.h5"
    frames = make_frames("periodic_variable_n") + make_frames("ethanol")
    for atoms in frames[5:]:  # what znh5md can store (not tuples, not numpy scalars)
        atoms.info = {key: atoms.info[key] for key in ("smiles", "index", "meta")}
    znh5md.IO(path).extend(frames)
    db = ASEIO(path, readonly=True)
    assert len(db) == len(frames)
    for a, b in zip(frames, db, strict=True):
        _assert_same_structure_and_results(a, b)
    assert db[5].info["smiles"] == "CCO"  # znh5md's JSON text, decoded
    assert db[5].info["meta"] == {"source": "test", "nested": {"n": 0, "ok": True}}
    with pytest.raises(UnsupportedOperationError, match="written by another program.*new file"):
        ASEIO(path).extend(frames[:1])


def test_mdanalysis_files_open_in_ours(tmp_path: Path) -> None:
    mda = pytest.importorskip("MDAnalysis")
    from MDAnalysis.coordinates.memory import MemoryReader

    rng = np.random.default_rng(2)
    n, count = 5, 4
    pos, vel, frc = (rng.normal(size=(count, n, 3)).astype(np.float32) for _ in range(3))
    dims = np.array([[10, 11, 12, 90, 90, 90], [10, 11, 12, 80, 90, 100]] * 2, np.float32)
    universe = mda.Universe.empty(n, trajectory=True, velocities=True, forces=True)
    universe.load_new(pos, format=MemoryReader, velocities=vel, forces=frc, dimensions=dims, dt=0.5)
    path = tmp_path / "mda.h5md"
    units = {
        "timeunit": "ps",
        "lengthunit": "Angstrom",
        "velocityunit": "Angstrom/ps",
        "forceunit": "kJ/(mol*Angstrom)",
    }
    with mda.Writer(str(path), n_atoms=n, format="H5MD", author="Bob", **units) as writer:
        for _ in universe.trajectory:
            writer.write(universe)
    db = ASEIO(path, readonly=True)
    assert len(db) == count
    for i, atoms in enumerate(db):
        np.testing.assert_allclose(atoms.positions, pos[i])
        np.testing.assert_allclose(atoms.get_velocities(), vel[i] / PS, rtol=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), frc[i] * KJ_MOL, rtol=1e-6)
        np.testing.assert_allclose(atoms.cell.cellpar(), dims[i], rtol=1e-5)
        assert atoms.pbc.all() and atoms.info["step"] == i and atoms.info["time"] == pytest.approx(500.0 * i)


def test_pyh5md_files_open_in_ours(tmp_path: Path) -> None:
    pyh5md = pytest.importorskip("pyh5md")
    rng = np.random.default_rng(1)
    n, count = 4, 6
    positions, velocities = rng.normal(size=(count, n, 3)), rng.normal(size=(count // 2, n, 3))
    path = tmp_path / "pyh5md.h5"
    with pyh5md.File(str(path), "w", author="Alice", creator="pyh5md-test") as f:
        part = f.particles_group("atoms")
        part.create_box(
            dimension=3,
            boundary=["periodic", "periodic", "none"],
            store="fixed",
            data=np.array([10.0, 11.0, 12.0]),
        )  # a cuboid box, fixed in time
        pyh5md.element(part, "species", store="fixed", data=np.array([1, 8, 1, 6], np.int32))
        position = pyh5md.element(part, "position", store="time", shape=(n, 3), dtype=np.float64, time=True)
        velocity = pyh5md.element(
            part,
            "velocity",
            store="linear",
            shape=(n, 3),
            dtype=np.float64,
            step=20,
            step_offset=10,
            time=0.2,
            time_offset=0.1,
        )  # every other frame
        energy = pyh5md.element(
            f.require_group("observables"),
            "potential_energy",
            store="time",
            shape=(),
            dtype=np.float64,
            time=True,
        )
        for i in range(count):
            position.append(positions[i], step=10 * i, time=0.05 * i)
            energy.append(-1.5 * i, step=10 * i, time=0.05 * i)
            if i % 2:
                velocity.append(velocities[i // 2])
        position.value.attrs["unit"] = "nm"
        position.time.attrs["unit"] = "ps"
    db = ASEIO(path, readonly=True)
    assert len(db) == count
    for i, atoms in enumerate(db):
        np.testing.assert_array_equal(atoms.numbers, [1, 8, 1, 6])
        np.testing.assert_allclose(atoms.positions, positions[i] * 10)  # nm
        np.testing.assert_array_equal(atoms.cell.array, np.diag([10.0, 11.0, 12.0]))
        assert atoms.pbc.tolist() == [True, True, False]
        assert atoms.get_potential_energy() == -1.5 * i
        assert atoms.info["step"] == 10 * i and atoms.info["time"] == pytest.approx(50.0 * i)
        if i % 2:
            np.testing.assert_allclose(atoms.get_velocities(), velocities[i // 2])
        else:
            assert "momenta" not in atoms.arrays  # not sampled at this step
    assert db["arrays.momenta"].to_list()[0] is None


# -- what the specification allows, and what it refuses ------------------------------------------
def _write_h5md(path: Path, version: Any = (1, 1), fixed: bool = False, **groups: dict[str, Any]) -> None:
    """A minimal H5MD file written with h5py: ``groups`` maps particle groups to their elements."""
    text = (lambda s: np.bytes_(s)) if fixed else (lambda s: s)
    with h5py.File(path, "w") as f:
        h5md = f.create_group("h5md")
        if version is not None:
            h5md.attrs["version"] = np.array(version)
        h5md.create_group("author").attrs["name"] = text("h5py test")
        creator = h5md.create_group("creator")
        creator.attrs["name"], creator.attrs["version"] = text("handmade"), text("0")
        for group, elements in groups.items():
            box = f.create_group(f"particles/{group}/box")
            box.attrs["dimension"] = elements.pop("dimension", 3)
            boundary = elements.pop("boundary", ["periodic", "periodic", "periodic"])
            box.attrs["boundary"] = np.array(boundary, "S8") if fixed else boundary
            for name, value in elements.items():
                f[f"particles/{group}/{name}"] = value


def test_fixed_length_strings_and_uint64_steps(tmp_path: Path) -> None:
    path = tmp_path / "fixed.h5"
    positions = np.arange(24.0).reshape(2, 4, 3)
    _write_h5md(
        path,
        fixed=True,
        atoms={
            "boundary": ["periodic", "none", "periodic"],
            "position/value": positions,
            "position/step": np.array([0, 2**40], np.uint64),
            "species": np.array([1, 1, 8, 8], np.int16),
            "box/edges": np.diag([3.0, 4.0, 5.0]),
        },
    )
    db = ASEIO(path, readonly=True)
    assert [a.info["step"] for a in db] == [0, 2**40]
    assert db[1].pbc.tolist() == [True, False, True]
    np.testing.assert_array_equal(db[1].positions, positions[1])
    assert db[1].numbers.dtype == np.int64 and db[1].get_chemical_formula() == "H2O2"


def test_a_time_unit_we_do_not_know_leaves_the_times_as_written(tmp_path: Path) -> None:
    path = tmp_path / "reduced.h5"  # reduced units (HAL's MD, LAMMPS lj): the file opens, times unscaled
    _write_h5md(
        path,
        atoms={
            "position/value": np.arange(24.0).reshape(2, 4, 3),
            "position/step": np.array([0, 5]),
            "position/time": np.array([0.0, 0.25]),
            "species": np.array([1, 1, 8, 8]),
        },
    )
    with h5py.File(path, "a") as f:
        f["particles/atoms/position/time"].attrs["unit"] = "tau"
    with pytest.warns(UserWarning, match=r"particles/atoms/position/time in 'tau' -> info\.time"):
        db = ASEIO(path, readonly=True)
        times = [a.info["time"] for a in db]
    assert times == [0.0, 0.25]
    assert [a.info["step"] for a in db] == [0, 5]


def test_id_fill_value_marks_absent_particles(tmp_path: Path) -> None:
    path = tmp_path / "id.h5"
    ids = np.array([[0, 1, 2, -1], [0, -1, 2, 3]])
    _write_h5md(
        path,
        atoms={
            "position/value": np.arange(24.0).reshape(2, 4, 3),
            "species/value": np.array([[1, 6, 8, 0], [1, 0, 8, 7]]),
        },
    )
    with h5py.File(path, "a") as f:
        ds = f.create_dataset("particles/atoms/id/value", shape=ids.shape, dtype=np.int64, fillvalue=-1)
        ds[...] = ids
    db = ASEIO(path, readonly=True)
    assert [a.get_chemical_symbols() for a in db] == [["H", "C", "O"], ["H", "O", "N"]]
    np.testing.assert_array_equal(db[1].positions, np.arange(12.0, 24.0).reshape(4, 3)[[0, 2, 3]])
    np.testing.assert_array_equal(db[1].arrays["id"], [0, 2, 3])


def test_nan_padding_with_float_species(tmp_path: Path) -> None:
    path = tmp_path / "nan.h5"
    positions = np.full((2, 3, 3), np.nan)
    positions[0], positions[1, :2] = 1.0, 2.0
    _write_h5md(
        path,
        atoms={"position/value": positions, "species/value": np.array([[1.0, 1.0, 8.0], [1.0, 1.0, np.nan]])},
    )
    db = ASEIO(path, readonly=True)
    assert [len(a) for a in db] == [3, 2] and db[1].numbers.tolist() == [1, 1]
    assert db["arrays.positions"].to_ragged().values.shape == (5, 3)


def test_several_particle_groups(tmp_path: Path) -> None:
    path = tmp_path / "groups.h5"
    _write_h5md(
        path, solvent={"position/value": np.zeros((2, 3, 3))}, solute={"position/value": np.ones((2, 1, 3))}
    )
    assert H5MDBackend.list_groups(path) == ["solute", "solvent"]
    with pytest.raises(UnknownKeyError, match="2 particle groups \\(solute, solvent\\).*group="):
        ASEIO(path, readonly=True)
    assert len(ASEIO(path, readonly=True, group="solute")[0]) == 1


@pytest.mark.parametrize(
    ("version", "error", "match"),
    [
        ((0, 9), FormatVersionError, "version 0.9 predates H5MD 1.0"),
        ((2, 0), FormatVersionError, "version 2.0 is newer"),
        (None, StoreCorruptedError, "no 'version' attribute"),
    ],
)
def test_unsupported_versions_are_refused(tmp_path: Path, version: Any, error: type, match: str) -> None:
    path = tmp_path / "v.h5"
    _write_h5md(path, version=version, atoms={"position/value": np.zeros((1, 2, 3))})
    with pytest.raises(error, match=match):
        ASEIO(path, readonly=True)


def test_unknown_units_and_2d_boxes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.h5"
    _write_h5md(path, atoms={"position/value": np.zeros((1, 2, 3))})
    with h5py.File(path, "a") as f:
        f["particles/atoms/position/value"].attrs["unit"] = "furlong"
    with pytest.raises(StoreCorruptedError, match="position/value: cannot convert its unit.*furlong"):
        ASEIO(path, readonly=True)
    flat = tmp_path / "flat.h5"
    _write_h5md(
        flat, atoms={"dimension": 2, "boundary": ["none", "none"], "position/value": np.zeros((1, 2, 2))}
    )
    with pytest.raises(UnsupportedOperationError, match="2-dimensional box"):
        ASEIO(flat, readonly=True)


# -- real files ----------------------------------------------------------------------------------
def _realdata(name: str) -> Path:
    path = REALDATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (real third-party files live in ../shared/realdata/)")
    return path


def _check_cu(path: Path, backend: H5MDBackend) -> None:
    """The early ZnH5MD files: forces as 'forces', momenta as 'momentum', float species."""
    db = ASEIO(backend)
    with h5py.File(path, "r") as f:
        particles = f["particles/atoms"]
        assert len(db) == 20
        for i in (0, 7, 19):
            atoms = db[i]
            np.testing.assert_array_equal(atoms.positions, particles["position/value"][i])
            np.testing.assert_array_equal(atoms.numbers, particles["species/value"][i].astype(int))
            np.testing.assert_array_equal(atoms.cell.array, particles["box/edges/value"][i])
            np.testing.assert_array_equal(atoms.get_forces(), particles["forces/value"][i])
            np.testing.assert_array_equal(atoms.arrays["momenta"], particles["momentum/value"][i])
            assert atoms.get_potential_energy() == f["observables/atoms/energy/value"][i]
            assert atoms.pbc.all() and atoms.info["time"] == f["particles/atoms/position/time"][i]


def test_realdata_mdanalysis_cu() -> None:
    path = _realdata("mdanalysis_cu.h5md")
    backend = H5MDBackend(path, readonly=True)
    _check_cu(path, backend)
    assert backend.skipped == {}


def test_realdata_mdanalysis_cu_malformed() -> None:
    """MDAnalysis refuses this file, but its extra ``observables/energy`` is a time-independent
    observable, which H5MD 1.1 allows; the group's own energy observable takes precedence."""
    path = _realdata("mdanalysis_cu_malformed.h5md")
    backend = H5MDBackend(path, readonly=True)
    _check_cu(path, backend)
    assert backend.skipped == {
        "observables/energy": "gives calc.energy, already read from observables/atoms/energy"
    }


@pytest.mark.parametrize("name", ["mdanalysis_test.h5md", "zarrtraj_COORDINATES_SYNTHETIC_H5MD.h5md"])
def test_realdata_mdanalysis_writer(name: str) -> None:
    path = _realdata(name)
    db = ASEIO(path, readonly=True)
    with h5py.File(path, "r") as f:
        particles = f["particles/trajectory"]
        assert len(db) == 5
        for i, atoms in enumerate(db):
            assert len(atoms) == 5 and not atoms.numbers.any()  # no species element
            np.testing.assert_array_equal(atoms.positions, particles["position/value"][i])
            np.testing.assert_array_equal(atoms.cell.array, particles["box/edges/value"][i])
            forces, velocities = (
                particles[f"{name}/value"][i].astype(float) for name in ("force", "velocity")
            )
            np.testing.assert_allclose(atoms.get_forces(), forces * KJ_MOL, rtol=1e-14)
            np.testing.assert_allclose(atoms.get_velocities(), velocities / PS, rtol=1e-14)
            np.testing.assert_array_equal(atoms.info["occupancy"], f["observables/occupancy/value"][i])
            assert atoms.info["time"] == pytest.approx(1000 * particles["position/time"][i])


def test_realdata_zarrtraj_varied_steps() -> None:
    """Velocity and force sampled at other steps than position, scalar steps with offsets,
    observables with and without steps, group and global ones."""
    varied = ASEIO(_realdata("zarrtraj_COORDINATES_VARIED_STEPS_H5MD.h5md"), readonly=True)
    synthetic = ASEIO(_realdata("zarrtraj_COORDINATES_SYNTHETIC_H5MD.h5md"), readonly=True)
    assert len(varied) == 5 and varied["info.step"].to_list() == [0, 1, 2, 3, 4]
    for i, (a, b) in enumerate(zip(varied, synthetic, strict=True)):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        assert ("momenta" in a.arrays) == (i < 3)  # velocity at steps 0, 1, 2
        if i < 3:
            np.testing.assert_array_equal(a.arrays["momenta"], b.arrays["momenta"])
        assert (a.calc is not None) == (i > 0)  # force at steps 1 to 4 (offset 1)
        if i:
            np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        np.testing.assert_array_equal(a.info["obsv3"], [4, 6, 8])  # no steps: time-independent
    assert varied["info.obsv1"].to_list() == [None, 4, None, 6, None]  # steps 1, 3, 5 (offset 1)
    assert varied["info.obsv2"].to_list() == [None, 4, None, 6, None]


def test_realdata_zarrmd_reads_as_its_h5md_twin() -> None:
    """zarrtraj's H5MD-in-Zarr-v2 copy of the varied-steps file gives the very same frames as the
    HDF5 file, and stays read-only whatever ``readonly`` says."""
    pytest.importorskip("zarr")
    path = REALDATA.parent / "zarrmd" / "COORDINATES_VARIED_STEPS_ZARRMD.zarrmd"
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real third-party files live in ../shared/realdata/)")
    twin_path = _realdata("zarrtraj_COORDINATES_VARIED_STEPS_H5MD.h5md")
    twin = ASEIO(twin_path, readonly=True)
    db = ASEIO(path)
    assert len(db) == len(twin) == 5
    for i, (a, b) in enumerate(zip(db, twin, strict=True)):
        assert_atoms_equal(a, b, f"frame {i}")
    backend, twin_backend = H5MDBackend(path, readonly=False), H5MDBackend(twin_path, readonly=True)
    assert [backend.columns(i) for i in range(5)] == [twin_backend.columns(i) for i in range(5)]
    assert backend.skipped == twin_backend.skipped and backend.check() == twin_backend.check()
    before = sorted((p.relative_to(path), p.stat().st_mtime_ns) for p in path.rglob("*"))
    with pytest.raises(UnsupportedOperationError, match="another program"):
        backend.extend([{"arrays.numbers": np.ones(5, np.int64)}])
    with pytest.raises(UnsupportedOperationError, match="another program"):
        db.extend([twin[0]])
    assert sorted((p.relative_to(path), p.stat().st_mtime_ns) for p in path.rglob("*")) == before


@pytest.mark.parametrize(
    "name", ["vmdplugin_halmd_binary_mixture.h5", "vmdplugin_halmd_timedependent_box.h5"]
)
def test_realdata_halmd(name: str) -> None:
    """HAL's MD (H5MD 1.0): fixed-length strings, uint64 steps, two groups, time-independent species,
    time-dependent mass, a box that is fixed, or time-dependent without steps."""
    path = _realdata(name)
    with pytest.raises(UnknownKeyError, match="2 particle groups \\(A, B\\)"):
        ASEIO(path, readonly=True)
    with h5py.File(path, "r") as f:
        for group, count in (("A", 128), ("B", 32)):
            backend = H5MDBackend(path, readonly=True, particles_group=group)
            db = ASEIO(backend)
            particles = f[f"particles/{group}"]
            edges = particles["box/edges"]
            assert len(db) == 2
            for i, atoms in enumerate(db):
                assert len(atoms) == count and atoms.pbc.all()
                np.testing.assert_array_equal(atoms.numbers, particles["species"][:])
                np.testing.assert_array_equal(atoms.positions, particles["position/value"][i])
                masses = particles["mass/value"][i]
                np.testing.assert_array_equal(atoms.get_masses(), masses)
                np.testing.assert_allclose(
                    atoms.get_momenta(), particles["velocity/value"][i] * masses[:, None]
                )
                cell = edges[:] if isinstance(edges, h5py.Dataset) else edges["value"][i]
                np.testing.assert_array_equal(atoms.cell.array, cell)
                assert atoms.info["step"] == particles["position/step"][i]
                row = 50 * i  # observables every 1000 steps, frames at steps 0 and 50000
                observables = f[f"observables/{group}"]
                assert (
                    atoms.info["potential_energy"] == observables["potential_energy/value"][row]
                )  # per particle
                np.testing.assert_array_equal(
                    atoms.info["center_of_mass_velocity"], observables["center_of_mass_velocity/value"][row]
                )
                assert atoms.info["particle_number"] == count and atoms.calc is None
            assert backend.skipped["observables/temperature"].startswith("gives info.temperature")


def test_realdata_znh5md_draft() -> None:
    """znh5md's v0.3 draft: no units, a cuboid box per frame, energy of shape (T, 1) whose steps
    repeat (so matched by index)."""
    path = _realdata("znh5md_v03draft_cu.h5")
    db = ASEIO(path, readonly=True)
    with h5py.File(path, "r") as f:
        particles = f["particles/atoms"]
        assert len(db) == 10
        for i, atoms in enumerate(db):
            np.testing.assert_array_equal(atoms.numbers, particles["species/value"][i])
            np.testing.assert_array_equal(atoms.positions, particles["position/value"][i])
            np.testing.assert_array_equal(atoms.cell.array, np.diag(particles["box/edges/value"][i]))
            np.testing.assert_array_equal(atoms.get_forces(), particles["forces/value"][i])
            assert atoms.get_potential_energy() == f["observables/atoms/energy/value"][i, 0]


@pytest.mark.parametrize(
    ("name", "group", "problems"),
    [
        ("mdanalysis_test.h5md", None, []),
        ("mdanalysis_cu.h5md", None, ["h5md/creator: no 'version' attribute"]),
        (
            "vmdplugin_halmd_timedependent_box.h5",
            "A",
            ["particles/A/box/edges: a time-dependent element without 'step'"],
        ),
        ("znh5md_v03draft_cu.h5", None, ["observables/atoms/energy: its steps do not increase"]),
    ],
)
def test_realdata_conformance(name: str, group: str | None, problems: list[str]) -> None:
    """``check()`` names where real files depart from H5MD (they still open, see above)."""
    assert H5MDBackend(_realdata(name), readonly=True, particles_group=group).check() == problems


def test_every_realdata_file_is_covered() -> None:
    if not REALDATA.exists():
        pytest.skip(f"{REALDATA} is absent")
    covered = {
        "mdanalysis_cu.h5md",
        "mdanalysis_cu_malformed.h5md",
        "mdanalysis_test.h5md",
        "zarrtraj_COORDINATES_SYNTHETIC_H5MD.h5md",
        "zarrtraj_COORDINATES_VARIED_STEPS_H5MD.h5md",
        "vmdplugin_halmd_binary_mixture.h5",
        "vmdplugin_halmd_timedependent_box.h5",
        "znh5md_v03draft_cu.h5",
    }
    assert {p.name for p in REALDATA.iterdir()} == covered
    assert {resolve_backend(REALDATA / name).name for name in covered} == {"h5md"}  # .h5 files by content

"""The contract suite on the H5MD backend, plus its layout promises: H5MD 1.1 elements and units,
padding and species, name clashes, options, refused and failed writes, handles across processes.

What other programs make of our files, and ours of theirs, is in ``tests/test_interop_h5md.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

h5py = pytest.importorskip("h5py")

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    FormatVersionError,
    InvalidDataError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from asebytes_nodes.backends._hdf5_journal import seal  # noqa: E402
from asebytes_nodes.backends.h5md import H5MDBackend, sniff  # noqa: E402
from asebytes_nodes.testing.contract import StoreFactory, WritableContract  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402
from asebytes_nodes.testing.properties import PropertyContract  # noqa: E402
from asebytes_nodes.testing.stateful import StatefulContract  # noqa: E402


class H5MDStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> H5MDBackend:
        return H5MDBackend(self.path, readonly=readonly)


class TestH5MDContract(WritableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return H5MDStore(tmp_path / "frames.h5")


class TestH5MDProperties(PropertyContract, StatefulContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], StoreFactory]:
        return lambda: H5MDStore(tmp_path / f"{uuid.uuid4().hex}.h5")


def _same_object(a: Any, b: Any) -> bool:
    return bool(h5py.h5o.get_info(a.id).addr == h5py.h5o.get_info(b.id).addr)


def test_h5md_layout(tmp_path: Path) -> None:
    path = tmp_path / "layout.h5md"
    frames = make_frames("ethanol") + make_frames("periodic_variable_n")
    with ASEIO(path, author_name="Jane Doe", author_email="jane@example.org", timestep=2.0) as db:
        db.extend(frames)
    with h5py.File(path, "r") as f:
        assert f["h5md"].attrs["version"].tolist() == [1, 1]
        assert f["h5md/author"].attrs["name"] == "Jane Doe"
        assert f["h5md/author"].attrs["email"] == "jane@example.org"
        assert f["h5md/creator"].attrs["name"] == "asebytes-nodes"
        box = f["particles/atoms/box"]
        assert box.attrs["dimension"] == 3
        assert h5py.check_string_dtype(box.attrs.get_id("boundary").dtype).length is None  # variable-length
        assert list(box.attrs["boundary"]) == ["none", "none", "none"]  # the first frame's pbc
        width = max(len(a) for a in frames)
        position = f["particles/atoms/position"]
        assert position["value"].shape == (9, width, 3)
        assert position["value"].attrs["unit"] == "Angstrom"
        assert position["time"][:].tolist() == [2.0 * i for i in range(9)]
        assert position["step"][:].tolist() == list(range(9))
        for element in ("species", "box/edges", "forces", "box/pbc"):
            assert _same_object(f[f"particles/atoms/{element}/step"], position["step"])
        assert _same_object(f["observables/atoms/energy/time"], position["time"])
        assert f["particles/atoms/box/edges/value"].shape == (9, 3, 3)
        assert f["particles/atoms/forces/value"].attrs["unit"] == "eV Angstrom-1"
        assert f["observables/atoms/energy/value"].attrs["unit"] == "eV"
        assert f["observables/atoms/stress/value"].attrs["unit"] == "eV Angstrom-3"
        assert f["particles/atoms/forces"].attrs["ASE_ENTRY_ORIGIN"] == "calc"
        assert f["observables/atoms/smiles/value"].asstr()[0] == "CCO"
        species = f["particles/atoms/species/value"][:]  # frames differ in atom count: NaN padding
        assert species.dtype == np.float64 and np.isnan(species[4, len(frames[4]) :]).all()
        assert f["parameters/asebytes_nodes/atoms/n_atoms"][:].tolist() == [len(a) for a in frames]
        assert np.isnan(f["particles/atoms/position/value"][4, len(frames[4]) :]).all()


def test_species_stay_integer_until_counts_differ(tmp_path: Path) -> None:
    path = tmp_path / "species.h5"
    db = ASEIO(path)
    db.extend(make_frames("ethanol"))
    with h5py.File(path, "r") as f:
        assert f["particles/atoms/species/value"].dtype == np.int64
    db.extend(make_frames("periodic_variable_n"))
    with h5py.File(path, "r") as f:
        species = f["particles/atoms/species/value"]
        assert species.dtype == np.float64 and species[0, :9].tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
        assert "species/value.replaced" not in f["particles/atoms"]
    for a, b in zip(make_frames("ethanol") + make_frames("periodic_variable_n"), ASEIO(path), strict=True):
        assert_atoms_equal(a, b)


def test_clashing_names_and_odd_keys(tmp_path: Path) -> None:
    atoms = make_frames("ethanol")[0]
    atoms.arrays["forces"] = np.arange(27.0).reshape(9, 3)  # next to calc.forces
    atoms.arrays["velocity"] = np.ones((9, 3))  # the name of an H5MD element we derive
    atoms.info["a/b"] = 1.5
    atoms.info["energy"] = "info, not calc"
    path = tmp_path / "clash.h5"
    ASEIO(path).extend([atoms])
    assert_atoms_equal(atoms, ASEIO(path)[0])
    with h5py.File(path, "r") as f:
        particles, observables = f["particles/atoms"], f["observables/atoms"]
        np.testing.assert_array_equal(particles["forces/value"][0], atoms.get_forces())
        np.testing.assert_array_equal(particles["arrays.forces/value"][0], atoms.arrays["forces"])
        assert "arrays.velocity" in particles and "info.a%2Fb" in observables
        assert observables["energy/value"][0] == atoms.get_potential_energy()


def test_velocity_is_derived_from_momenta(tmp_path: Path) -> None:
    from ase.units import fs

    frames = make_frames("per_atom_arrays")
    path = tmp_path / "v.h5"
    db = ASEIO(path)
    db.extend(frames)
    expected = frames[0].get_velocities() * 1000 * fs
    with h5py.File(path, "r") as f:
        velocity = f["particles/atoms/velocity"]
        assert velocity["value"].attrs["unit"] == "Angstrom ps-1"
        assert velocity.attrs["ASE_ENTRY_ORIGIN"] == "info"  # so znh5md keeps the exact momenta
        np.testing.assert_allclose(velocity["value"][0], expected)
    db.update(0, arrays={"masses": np.full(len(frames[0]), 2.0)})
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(
            f["particles/atoms/velocity/value"][0], frames[0].get_momenta() / 2 * 1000 * fs
        )
    assert "velocity" not in " ".join(ASEIO(path).columns)


@pytest.mark.parametrize(("compression", "opts"), [("gzip", 9), ("lzf", None), (None, None)])
def test_compression(tmp_path: Path, compression: str | None, opts: int | None) -> None:
    path = tmp_path / "c.h5"
    with ASEIO(path, compression=compression, compression_opts=opts) as db:
        db.extend(make_frames("ethanol"))
    with h5py.File(path, "r") as f:
        value = f["particles/atoms/position/value"]
        assert (value.compression, value.compression_opts) == (compression, opts)
    assert_atoms_equal(make_frames("ethanol")[3], ASEIO(path)[3])
    with pytest.raises(ValueError, match="unknown compression 'zstd'.*'gzip', 'lzf' or None"):
        H5MDBackend(tmp_path / "x.h5", compression="zstd")


def test_refused_write_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    frames = make_frames("ethanol")
    ASEIO(path).extend(frames[:2])
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    bad = make_frames("ethanol")[2]
    bad.info["index"] = object()  # stored as int: the column would be retyped, then cannot encode it
    with pytest.raises(InvalidDataError, match=r"frame 1: key 'info.index': value of type object cannot"):
        ASEIO(path).extend([frames[2], bad])
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_failure_while_writing_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.h5"
    frames = make_frames("ethanol") + make_frames("periodic_variable_n")
    ASEIO(path).extend(frames[:3])
    real = h5py.Dataset.__setitem__
    calls = []

    def failing(self: Any, key: Any, value: Any) -> None:
        calls.append(self.name)
        if len(calls) == 6:
            raise OSError("disk full (simulated)")
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", failing)
    with pytest.raises(OSError, match="simulated"):
        ASEIO(path).extend(frames[3:])  # grows the atom axis and turns species float on the way
    monkeypatch.undo()
    again = ASEIO(path, readonly=True)
    assert len(again) == 3
    for a, b in zip(frames[:3], again, strict=True):
        assert_atoms_equal(a, b)
    with h5py.File(path, "r") as f:
        assert f["particles/atoms/position/value"].shape == (3, 9, 3)
        assert f["particles/atoms/species/value"].dtype == np.int64
    ASEIO(path).extend(frames[3:])  # the store takes the same frames afterwards
    for a, b in zip(frames, ASEIO(path), strict=True):
        assert_atoms_equal(a, b)


def test_reading_never_changes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ro.h5"
    ASEIO(path).extend(make_frames("ethanol"))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    for readonly in (True, False):
        db = ASEIO(path, readonly=readonly)
        db[:].to_list()
        db["calc.energy"].to_numpy()
        db.close()
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_sniff_and_errors(tmp_path: Path) -> None:
    ours = tmp_path / "ours.h5"
    ASEIO(ours).extend(make_frames("ethanol")[:1])
    text, plain, missing = tmp_path / "t.h5", tmp_path / "plain.h5", tmp_path / "missing.h5"
    text.write_text("not hdf5")
    with h5py.File(plain, "w") as f:
        f["coordinates"] = np.zeros((2, 3))
    assert sniff(ours) and not sniff(text) and not sniff(plain) and not sniff(missing)
    assert type(ASEIO(ours).backend) is H5MDBackend
    with pytest.raises(StoreCorruptedError, match="cannot open as HDF5"):
        H5MDBackend(text)
    with pytest.raises(StoreCorruptedError, match="without an /h5md group"):
        H5MDBackend(plain)
    with pytest.raises(StoreNotFoundError, match="missing.h5"):
        H5MDBackend(missing, readonly=True)
    assert len(H5MDBackend(missing)) == 0 and not missing.exists()  # created by the first write


def test_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.h5"
    ASEIO(path).extend(make_frames("ethanol")[:1])
    with h5py.File(path, "a") as f:
        group = f["parameters/asebytes_nodes/atoms"]
        text = group.attrs["asebytes_nodes"].replace('"version": 2', '"version": 7')
        seal(group.attrs, "asebytes_nodes", json.loads(text))  # a consistent record of a newer layout
    with pytest.raises(FormatVersionError, match="layout version 7"):
        ASEIO(path)


def test_check_and_format_info(tmp_path: Path) -> None:
    path = tmp_path / "k.h5"
    ASEIO(path).extend(make_frames("keys_on_some_frames"))
    backend = H5MDBackend(path, readonly=True)
    info = backend.format_info()
    assert info["format"] == "asebytes_nodes.h5md" and info["version"] == 2 and info["h5md"] == "1.1"
    assert info["creator"]["name"] == "asebytes-nodes" and info["particles_group"] == "atoms"
    assert backend.check() == []
    backend.close()
    with h5py.File(path, "a") as f:  # what a writer killed mid-way, or a careless tool, leaves
        f["particles/atoms/forces/value"].resize(5, axis=0)
        del f["particles/atoms/box"].attrs["boundary"]
        del f["observables/atoms/energy/step"]
    problems = H5MDBackend(path, readonly=True).check()
    assert "particles/atoms/box: needs the attributes 'dimension' and 'boundary'" in problems
    assert "observables/atoms/energy: a time-dependent element without 'step'" in problems
    assert any(
        p.startswith("particles/atoms/forces/value: shape (5, 9, 3), 'calc.forces' needs") for p in problems
    )


def test_particle_groups(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    ASEIO(path, group="solvent").extend(make_frames("no_calculator"))
    ASEIO(path, particles_group="solute").extend(make_frames("ethanol"))  # H5MD's name for group=
    assert H5MDBackend.list_groups(path) == ["solute", "solvent"]
    assert len(ASEIO(path, group="solvent")) == 2
    assert len(ASEIO(path, particles_group="solute")) == 4
    assert len(ASEIO(path)) == 0  # the default store, not written yet: apart from both
    with pytest.raises(StoreNotFoundError, match="no particle group 'atoms'.*solute, solvent.*group="):
        ASEIO(path, readonly=True)  # read-only, an empty default store would hide both groups
    alone = tmp_path / "alone.h5"
    ASEIO(alone, group="trajectory").extend(make_frames("ethanol")[:1])  # the group MDAnalysis opens
    with pytest.raises(StoreNotFoundError, match="no particle group 'atoms'; it has: trajectory"):
        ASEIO(alone, readonly=True)
    with pytest.raises(StoreNotFoundError, match="g.h5 has no particle group 'gas'.*solute, solvent"):
        ASEIO(path, group="gas", readonly=True)
    with pytest.raises(StoreNotFoundError, match="missing.h5: no such H5MD file.*group 'gas'"):
        H5MDBackend(tmp_path / "missing.h5", group="gas", readonly=True)
    for bad in ("a/b", "", "..", "tr ain"):
        with pytest.raises(InvalidDataError, match="invalid group name"):
            H5MDBackend(path, group=bad)
    with pytest.raises(InvalidDataError, match="same option"):
        H5MDBackend(path, group="solute", particles_group="solvent")


def test_groups_beside_the_default_store(tmp_path: Path) -> None:
    """The default store (``particles/atoms``) and two groups in one file: each has its own length,
    keys, schema and column table; writing one group leaves the others as they were."""
    path = tmp_path / "d.h5"
    default, train, test = (
        make_frames("ethanol"),
        make_frames("periodic_variable_n"),
        make_frames("no_calculator"),
    )
    ASEIO(path, group="train").extend(train[:1])  # a group first: the default store stays apart
    assert len(ASEIO(path)) == 0
    ASEIO(path).extend(default)
    with h5py.File(path, "r") as f:
        table = f["parameters/asebytes_nodes/atoms"].attrs["asebytes_nodes"]
        positions = f["particles/atoms/position/value"][()]
    ASEIO(path, group="train").extend(train[1:3])
    ASEIO(path, group="test").extend(test)
    ASEIO(path, group="train").extend(train[3:])  # append to a group beside others
    ASEIO(path, group="test")[0] = test[1]  # replace in place in a group
    test[0] = test[1]
    with h5py.File(path, "r") as f:
        assert f["parameters/asebytes_nodes/atoms"].attrs["asebytes_nodes"] == table
        assert np.array_equal(f["particles/atoms/position/value"][()], positions, equal_nan=True)
        assert {"atoms", "train", "test"} <= set(f["particles"]) and "train" in f["observables"]
    assert H5MDBackend.list_groups(path) == ["test", "train"] == ASEIO.list_groups(path)
    for group, frames in ((None, default), ("atoms", default), ("train", train), ("test", test)):
        db = ASEIO(path, readonly=True) if group is None else ASEIO(path, group=group, readonly=True)
        assert len(db) == len(frames)
        for atoms, expected in zip(db, frames, strict=True):
            assert_atoms_equal(expected, atoms)
        db.close()
    plain, grouped = H5MDBackend(path, readonly=True), H5MDBackend(path, group="train", readonly=True)
    assert "calc.forces" in plain.keys() and "calc.forces" not in H5MDBackend(path, group="test").keys()
    assert plain.schema()["arrays.positions"] == grouped.schema()["arrays.positions"]
    assert grouped.format_info()["particles_group"] == "train" and grouped.check() == []
    assert grouped.cache_record()["group"] == "train" and "group" not in plain.cache_record()
    clone = pickle.loads(pickle.dumps(grouped))
    assert clone.particles_group == "train" and len(clone) == len(train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5", "d.h5.lock"]  # one lock per file
    assert H5MDBackend.side_files(path) == [tmp_path / "d.h5.lock", tmp_path / "d.h5-journal"]


def test_pickle_reopens_and_forked_children_read(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    frames = make_frames("periodic_variable_n")
    ASEIO(path).extend(frames)
    db = ASEIO(path, readonly=True)
    assert len(db) == 5  # the parent holds an open handle when forking
    clone = pickle.loads(pickle.dumps(db.backend))
    assert_atoms_equal(frames[2], ASEIO(clone)[2])
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        energies = pool.map(_energy, [(db, i) for i in range(5)])
    assert energies == [a.get_potential_energy() for a in frames]
    assert_atoms_equal(frames[4], db[4])  # the parent's handle still works


def _energy(args: tuple[ASEIO, int]) -> float:
    db, i = args
    return float(db[i].get_potential_energy())


def test_appends_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    ASEIO(path).extend(make_frames("ethanol")[:2])
    reader = ASEIO(path, readonly=True)
    assert len(reader) == 2
    reader.close()  # HDF5's lock: no other process writes a file this one has open
    ctx = multiprocessing.get_context("fork")
    process = ctx.Process(target=_append, args=(str(path),))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    reader = ASEIO(path, readonly=True)
    assert len(reader) == 4
    assert reader[3].info["index"] == 3


def _append(path: str) -> None:
    ASEIO(path).extend(make_frames("ethanol")[2:])


def test_handles_in_one_process_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    writer = ASEIO(path)
    writer.extend(make_frames("ethanol")[:1])
    reader = ASEIO(path, readonly=True)
    assert len(reader) == 1
    writer.extend(make_frames("ethanol")[1:])  # a read-only handle open in this process is fine
    assert len(reader) == 4 and reader[3].info["index"] == 3
    writer.update(0, info={"index": 10})
    assert reader["info.index"].to_list() == [10, 1, 2, 3]
    assert os.path.getsize(path) > 0


def test_threads_appending_through_separate_handles(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    frames = make_frames("ethanol")

    def append(tag: int) -> None:
        db = ASEIO(path)
        for step in range(4):
            batch = make_frames("ethanol")[:2]
            for atoms in batch:
                atoms.info["index"] = 100 * tag + step
            db.extend(batch)

    seen: list[int] = []

    def read() -> None:  # reads while the handle is swapped for writes: never a half-done store
        db = ASEIO(path)
        for _ in range(40):
            if len(db):
                np.testing.assert_array_equal(db[-1].positions, frames[1].positions)
            seen.append(len(db))

    ASEIO(path).extend(frames[:2])
    errors: list[BaseException] = []

    def guarded(target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # surfaced below: a thread's exception would only warn
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(append, tag)) for tag in range(3)]
    threads.append(threading.Thread(target=guarded, args=(read,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    db = ASEIO(path, readonly=True)
    assert len(db) == 26 and len(seen) == 40 and seen == sorted(seen)
    expected = [0, 1] + [100 * tag + step for tag in range(3) for step in range(4) for _ in range(2)]
    assert sorted(db["info.index"].to_list()) == sorted(expected)
    np.testing.assert_array_equal(db[25].positions, frames[1].positions)


def test_empty_frames_and_atom_free_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    ASEIO(path).extend([Atoms(), molecule("H2O"), Atoms()])
    got = ASEIO(path)
    assert [len(a) for a in got] == [0, 3, 0]


def test_a_value_of_another_scalar_type_retypes_the_column_never_converted(tmp_path: Path) -> None:
    """Issues 19/20: an H5MD column holds one exact type; a value of another type (a float or a
    str among EMT's np.float64 energies) turns the column into an encoded one, as one extend of
    the same values does, and every value reads back as written (details: test_h5md_widen.py)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", cubic=True)
    atoms.calc = EMT()
    atoms.get_forces()  # EMT's energy is np.float64
    db = ASEIO(tmp_path / "s.h5")
    db.extend([atoms, atoms])
    stored = atoms.calc.results["energy"]
    for value in (-1.0, "7", None, np.float64(-1.0)):
        db.update(0, calc={"energy": value})
        got = ASEIO(tmp_path / "s.h5", readonly=True)["calc.energy"].to_list()
        assert [type(v) for v in got] == [type(value), np.float64] and got[1] == stored
        assert got[0] == value
    assert db.backend.check() == []

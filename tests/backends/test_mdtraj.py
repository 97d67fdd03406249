"""The MDTraj HDF5 backend: the contract suite, real MDTraj files, and files that mdtraj opens.

The contract runs with the data capabilities an MDTraj file lacks turned off (one atom count and
topology per file, float32 storage, a fixed set of keys), on frames the format holds: values
dyadic in nm/ps/kJ/mol, so float32 storage is exact and every comparison is exact.

Test matrix
-----------
* real files: each ``../shared/realdata/mdtraj_hdf5/*.h5`` against ``mdtraj.load`` (positions,
  cell, time, element symbols); reading leaves its bytes unchanged;
* our files in mdtraj: ``mdtraj.load`` (positions, unit cell, elements, names, time) and
  ``HDF5TrajectoryFile.read`` (velocities, energies, temperature, lambda in MDTraj's units);
* a hand-written third-party file (variable-length topology, every optional dataset);
* the contract (:class:`WritableContract`) on representable frames; here besides: isolated and
  named-topology round trips, string columns, a read in a forked child;
* writes: every kind of frame that does not fit is refused and the file is unchanged;
  ``db[i] =``, ``update``; read-only handles; no insert, delete or drop; sniffing and the registry.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

h5py = pytest.importorskip("h5py")

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    FormatVersionError,
    InvalidDataError,
    ReadOnlyError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from asebytes_nodes.backends._base import READ_ONLY_MESSAGE  # noqa: E402
from asebytes_nodes.backends._mdtraj import MDTrajBackend, sniff  # noqa: E402
from asebytes_nodes.registry import resolve_backend  # noqa: E402
from asebytes_nodes.rows import atoms_to_dict  # noqa: E402
from asebytes_nodes.testing.contract import StoreFactory, WritableContract  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal  # noqa: E402
from asebytes_nodes.testing.properties import PropertyContract  # noqa: E402
from asebytes_nodes.testing.stateful import StatefulContract  # noqa: E402

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "mdtraj_hdf5"
REAL_FILES = sorted(REALDATA.glob("*.h5")) if REALDATA.is_dir() else []
KJ_MOL = units.kJ / units.mol  # 0.010364269574711572 eV
NM_PS = units.nm / (1000 * units.fs)  # nm/ps in ASE velocity units


def frames(n: int = 5, *, periodic: bool = True, names: bool = False) -> list[Atoms]:
    """Ethanol frames whose values survive float32 in MDTraj's units exactly."""
    out = []
    for i in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions = np.round(atoms.positions / 0.15625) * 0.15625 + 0.625 * i  # k/64 nm
        if periodic:
            atoms.cell, atoms.pbc = np.diag([10.0, 12.5, 15.0 + 2.5 * i]), True
        atoms.set_velocities(np.arange(27).reshape(9, 3) / 8 * NM_PS)
        if names:
            atoms.new_array("atom_names", np.array(["C1", "C2", "O", "H1", "H2", "H3", "H4", "H5", "HO"]))
            atoms.new_array("residue_names", np.array(["ETH"] * 6 + ["OH"] * 3))
            atoms.new_array("residue_ids", np.array([1] * 6 + [2] * 3))
        # info keys in the order the backend returns them (sorted): info dicts compare with order
        atoms.info.update(
            {"kinetic_energy": 2.5 * KJ_MOL, "lambda": 0.25, "temperature": 300.25, "time": 0.5 * i}
        )
        atoms.calc = SinglePointCalculator(atoms, energy=(i - 2) * 0.75 * KJ_MOL)
        out.append(atoms)
    return out


def write(path: Path, images: list[Atoms]) -> ASEIO:
    db = ASEIO(path, backend="mdtraj")
    db.extend(images)
    return ASEIO(path, readonly=True)


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "traj.h5"


class MDTrajStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, images: list[Atoms]) -> None:
        ASEIO(self.path, backend="mdtraj").extend(images)

    def open(self, readonly: bool = False) -> MDTrajBackend:
        return MDTrajBackend(self.path, readonly=readonly)


class MDTrajCapabilities:
    holds_variable_atoms = False
    holds_exact_float64 = False  # float32 in nm, ps, kJ/mol: 1.5 eV reads 1.49999997
    holds_any_keys = False


class TestMDTrajContract(MDTrajCapabilities, WritableContract):
    @pytest.fixture
    def store(self, path: Path) -> StoreFactory:
        return MDTrajStore(path)

    def frames(self, kind: str) -> list[Atoms] | None:
        return {"ethanol": frames(4), "periodic_variable_n": frames(5)}.get(kind) or super().frames(kind)


class TestMDTrajProperties(MDTrajCapabilities, PropertyContract, StatefulContract):
    """Random frames mostly carry what the format cannot hold: those writes must be refused whole."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Any:
        return lambda: MDTrajStore(tmp_path / f"{time.monotonic_ns()}.h5")


# -- real files and mdtraj -------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_FILES, reason=f"real MDTraj files not found at {REALDATA}")
@pytest.mark.parametrize("real", REAL_FILES, ids=lambda p: p.name)
def test_real_file_matches_mdtraj(real: Path, tmp_path: Path) -> None:
    mdtraj = pytest.importorskip("mdtraj")
    pytest.importorskip("tables", reason="mdtraj reads HDF5 through PyTables")
    copy = tmp_path / real.name
    copy.write_bytes(real.read_bytes())
    before = digest(copy)
    db = ASEIO(copy)
    assert sniff(copy) and isinstance(db.backend, MDTrajBackend)
    traj = mdtraj.load(str(real))
    assert len(db) == traj.n_frames
    np.testing.assert_array_equal(db["arrays.positions"].to_numpy(), traj.xyz.astype(float) * 10)
    np.testing.assert_array_equal(db["info.time"].to_numpy(), traj.time)
    symbols = [a.element.symbol for a in traj.topology.atoms]
    assert db[-1].get_chemical_symbols() == symbols
    assert db[0].arrays["atom_names"].tolist() == [a.name for a in traj.topology.atoms]
    assert db[0].arrays["residue_names"].tolist() == [a.residue.name for a in traj.topology.atoms]
    cells = db["cell"].to_numpy()
    if traj.unitcell_vectors is None:
        assert not cells.any() and not db["pbc"].to_numpy().any()
    else:
        np.testing.assert_allclose(cells, traj.unitcell_vectors * 10, atol=1e-5)
        assert db["pbc"].to_numpy().all()
    db.close()
    assert digest(copy) == before


def test_mdtraj_opens_our_file(path: Path) -> None:
    mdtraj = pytest.importorskip("mdtraj")
    pytest.importorskip("tables", reason="mdtraj reads HDF5 through PyTables")
    images = frames(names=True)
    write(path, images)
    traj = mdtraj.load(str(path))
    np.testing.assert_array_equal(traj.xyz * 10, [a.positions for a in images])
    np.testing.assert_array_equal(traj.unitcell_lengths * 10, [a.cell.lengths() for a in images])
    np.testing.assert_array_equal(traj.unitcell_angles, np.full((5, 3), 90.0))
    np.testing.assert_array_equal(traj.time, [a.info["time"] for a in images])
    assert [a.element.symbol for a in traj.topology.atoms] == images[0].get_chemical_symbols()
    assert [a.name for a in traj.topology.atoms] == images[0].arrays["atom_names"].tolist()
    assert [r.name for r in traj.topology.residues] == ["ETH", "OH"]
    with mdtraj.formats.HDF5TrajectoryFile(str(path)) as f:
        data = f.read()
    np.testing.assert_array_equal(data.velocities[2], np.arange(27).reshape(9, 3) / 8)
    np.testing.assert_array_equal(data.potentialEnergy, [-1.5, -0.75, 0.0, 0.75, 1.5])
    np.testing.assert_array_equal(data.kineticEnergy, np.full(5, 2.5))
    np.testing.assert_array_equal(data.temperature, np.full(5, 300.25))
    np.testing.assert_array_equal(data.alchemicalLambda, np.full(5, 0.25))


def test_third_party_file_units_and_variable_length_topology(path: Path) -> None:
    top = {"chains": [{"index": 0, "residues": [{"index": 0, "name": "HOH", "resSeq": 0, "atoms": [
        {"index": 1, "name": "H1", "element": "H"}, {"index": 0, "name": "O", "element": "O"},
        {"index": 2, "name": "EP", "element": "VS"}]}]}], "bonds": [[0, 1]]}
    with h5py.File(path, "w") as f:
        f.attrs.update(conventions="Pande", conventionVersion="1.1")  # variable-length strings
        f.create_dataset("topology", data=np.array([json.dumps(top)], dtype=h5py.string_dtype()))
        for name, shape, unit in [("coordinates", (2, 3, 3), "angstroms"), ("velocities", (2, 3, 3), None),
                                  ("potentialEnergy", (2,), "kilocalories_per_mole"),
                                  ("cell_lengths", (2, 3), None), ("cell_angles", (2, 3), "degrees")]:
            ds = f.create_dataset(name, data=np.full(shape, 90 if name == "cell_angles" else 1, np.float32))
            if unit:
                ds.attrs["units"] = unit
        f["cell_lengths"][1] = f["cell_angles"][1] = 0.0  # some writers leave zeros for "no box"
    db = ASEIO(path)
    assert db[0].numbers.tolist() == [8, 1, 0] and db[0].arrays["residue_ids"].tolist() == [0] * 3
    np.testing.assert_array_equal(db[0].positions, np.ones((3, 3)))
    np.testing.assert_allclose(db[0].get_velocities(), np.ones((3, 3)) * NM_PS, rtol=1e-15)
    assert db[1].get_potential_energy() == units.kcal / units.mol
    assert db[0].pbc.all() and db[0].cell.cellpar().tolist() == [10, 10, 10, 90, 90, 90]
    assert not db[1].pbc.any() and not db[1].cell.any()
    with pytest.raises(UnsupportedOperationError, match="'coordinates' has a fixed size"):
        db.extend([db[0]])  # datasets written without maxshape cannot grow


# -- beyond the contract -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["isolated", "names"])
def test_round_trip(path: Path, kind: str) -> None:
    images = frames(periodic=kind != "isolated", names=kind == "names")
    db = write(path, images)
    for i, (expected, got) in enumerate(zip(images, db, strict=True)):
        assert_atoms_equal(expected, got, f"{kind}[{i}]")
    assert db.columns == sorted(atoms_to_dict(images[0]))


def test_string_and_energy_columns(path: Path) -> None:
    images = frames(names=True)
    db = write(path, images)
    assert all(type(e) is float for e in db["calc.energy"]) and db.schema["calc.energy"].dtype == "float"
    both = db[["info.time", "arrays.residue_names"]].to_numpy()
    assert both["arrays.residue_names"].shape == (5, 9) and both["info.time"].tolist() == [0, 0.5, 1, 1.5, 2]
    names = db[0].arrays["atom_names"]
    names[:] = "X"
    assert_atoms_equal(images[0], db[0])


def _read_in_child(db: ASEIO, queue: Any) -> None:
    queue.put((len(db), db[3].positions, db["calc.energy"].to_list()))


def test_fork(path: Path) -> None:
    images = frames()
    db = write(path, images)
    db[0]  # the parent's handle is open before the fork
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(db, queue))
    child.start()
    n, positions, energies = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and n == 5 and energies == db["calc.energy"].to_list()
    np.testing.assert_array_equal(positions, images[3].positions)
    assert_atoms_equal(images[4], db[4])


# -- writing ---------------------------------------------------------------------------------------
def _bad_frame(what: str) -> tuple[Atoms, str]:
    atoms = frames(1)[0]
    results = dict(atoms.calc.results)
    if what == "forces":
        results["forces"] = np.zeros((9, 3))
    elif what == "info":
        atoms.info["smiles"] = "CCO"
    elif what == "masses":
        atoms.set_masses(np.ones(9))
    elif what == "atom count":
        atoms = Atoms("C2OH6H", positions=np.zeros((10, 3)), cell=atoms.cell, pbc=True, info=atoms.info)
        atoms.set_velocities(np.zeros((10, 3)))
    elif what == "topology":
        atoms.numbers = atoms.numbers[::-1]
    elif what == "missing key":
        del atoms.info["temperature"]
    elif what == "mixed pbc":
        atoms.pbc = [True, True, False]
    elif what == "rotated cell":
        atoms.set_cell([[0, 5, 5], [5, 0, 5], [5, 5, 0]])
    elif what == "string value":
        atoms.info["time"] = "late"
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms, {
        "forces": "'calc.forces' cannot be stored", "info": "'info.smiles' cannot be stored",
        "masses": "'arrays.masses' cannot be stored", "atom count": "'arrays.positions' has shape .10, 3.",
        "topology": "'arrays.numbers' differs", "missing key": "lacks 'info.temperature'",
        "mixed pbc": "'pbc' is .True, True, False.", "rotated cell": "not lower-triangular",
        "string value": "'info.time' must be a real number",
    }[what]


@pytest.mark.parametrize(
    "what",
    ["forces", "info", "masses", "atom count", "topology", "missing key", "mixed pbc", "rotated cell",
     "string value"],
)
def test_refuses_frames_that_do_not_fit(path: Path, what: str) -> None:
    images = frames(3)
    db = ASEIO(path, backend="mdtraj")
    db.extend(images[:1])
    before = digest(path)
    bad, message = _bad_frame(what)
    with pytest.raises(InvalidDataError, match=f"frame 1: .*{message}"):
        db.extend([images[1], bad, images[2]])
    with pytest.raises(InvalidDataError, match=f"row 0: .*{message}"):
        db[0] = bad
    assert digest(path) == before and len(ASEIO(path, readonly=True)) == 1


def test_first_frames_define_the_file(path: Path) -> None:
    db = ASEIO(path, backend="mdtraj")
    plain = frames(2, periodic=False)
    del plain[1].info["lambda"]
    with pytest.raises(InvalidDataError, match="frame 1: lacks 'info.lambda', unlike the first frame"):
        db.extend(plain)
    assert not path.exists()
    db.extend(frames(2, periodic=False))
    with pytest.raises(InvalidDataError, match="frame 0: a periodic frame, .* without a cell"):
        db.extend(frames(1))
    with pytest.raises(InvalidDataError, match="frame 0: carries 'arrays.atom_names', unlike the file's"):
        db.extend(frames(1, periodic=False, names=True))
    assert len(ASEIO(path, readonly=True)) == 2


def test_replace_update_and_unsupported(path: Path) -> None:
    images = frames()
    db = ASEIO(path, backend="mdtraj")
    db.extend(images[:4])
    again = ASEIO(path, readonly=True)
    assert_atoms_equal(images[1], again[1])  # a reader holds the file open while the writer writes
    db[1] = images[4]
    db.update(2, info={"time": 99.0}, calc={"energy": 0.5 * KJ_MOL})
    with pytest.raises(InvalidDataError, match="row 3: .*'info.tag' cannot be stored"):
        db.update(3, info={"tag": "x"})
    assert_atoms_equal(images[4], db[1])
    assert_atoms_equal(images[4], again[1])
    assert again["info.time"].to_list() == [0.0, 2.0, 99.0, 1.5]
    assert again[2].get_potential_energy() == 0.5 * KJ_MOL
    for attempt in (lambda: again.append(images[0]), lambda: again.update(0, info={"time": 1.0})):
        with pytest.raises(ReadOnlyError) as err:
            attempt()
        assert str(err.value) == READ_ONLY_MESSAGE
    for attempt in (lambda: db.insert(0, images[0]), lambda: db.__delitem__(0), lambda: db.drop("info.time")):
        with pytest.raises(UnsupportedOperationError):
            attempt()
    assert len(db) == 4


def test_sniffing_registry_and_refusals(tmp_path: Path, path: Path) -> None:
    write(path, frames(1))
    text, h5md, newer = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    text.write_text("not hdf5")
    with h5py.File(h5md, "w") as f:
        f.create_group("h5md")
    with h5py.File(newer, "w") as f:
        f.attrs.update(conventions=b"Pande", conventionVersion=b"2.0")
    assert sniff(path) and sniff(newer)
    assert not any(sniff(p) for p in (text, h5md, tmp_path, tmp_path / "missing.h5"))
    assert resolve_backend(path).name == "mdtraj"
    assert resolve_backend(tmp_path / "new.h5").name == "h5md"
    with pytest.raises(StoreCorruptedError, match="not an MDTraj trajectory"):
        ASEIO(h5md, backend="mdtraj")
    with pytest.raises(StoreCorruptedError, match="a.h5"):
        ASEIO(text, backend="mdtraj")
    with pytest.raises(FormatVersionError, match="version 2.0"):
        ASEIO(newer)
    with pytest.raises(StoreNotFoundError):
        ASEIO(tmp_path / "missing.h5", backend="mdtraj", readonly=True)
    with pytest.raises(InvalidDataError, match="without atoms"):
        ASEIO(tmp_path / "empty.h5", backend="mdtraj").append(Atoms())


CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_mdtraj import frames
from asebytes_nodes import ASEIO
db, images = ASEIO({path!r}, backend="mdtraj"), frames(100)
print("ready", flush=True)
while True:
    db.extend(images)
"""


def test_killed_writer_leaves_whole_extends(path: Path) -> None:
    code = CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(0.5)  # some extends done, one under way
    finally:
        child.kill()
        child.wait(timeout=60)
    db = ASEIO(path, readonly=True)
    n = len(db)
    assert n >= 100 and n % 100 == 0
    images = frames(100)
    np.testing.assert_array_equal(db["info.time"].to_numpy(), [a.info["time"] for a in images] * (n // 100))
    np.testing.assert_array_equal(db[-100:]["arrays.positions"].to_numpy(), [a.positions for a in images])

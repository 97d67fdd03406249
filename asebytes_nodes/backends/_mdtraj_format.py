"""MDTraj's HDF5 format (the "Pande" conventions): its datasets, units and topology JSON, and the
checks and conversions that turn frames into them and back.

On-disk layout (``conventions = "Pande"``, ``conventionVersion = "1.1"``, as MDTraj writes it)
---------------------------------------------------------------------------------------------
Root attributes ``conventions``, ``conventionVersion``, ``program``, ``programVersion``,
``title`` and ``application`` (fixed-length ASCII, as PyTables writes them). Datasets hold
frames along their first axis, in float32, each with a ``units`` attribute:

===============  ==================  =====================  =========================================
dataset          shape               units on disk          flat key (our units)
===============  ==================  =====================  =========================================
coordinates      (frames, atoms, 3)  nanometers             ``arrays.positions`` (Å); required
cell_lengths     (frames, 3)         nanometers             ``cell`` (Å, lower-triangular: a along x,
cell_angles      (frames, 3)         degrees                b in the xy plane) and ``pbc`` all True
time             (frames,)           picoseconds            ``info.time`` (**ps**, float)
velocities       (frames, atoms, 3)  nanometers/picosecond  ``arrays.momenta`` (ASE units, see below)
kineticEnergy    (frames,)           kilojoules_per_mole    ``info.kinetic_energy`` (eV)
potentialEnergy  (frames,)           kilojoules_per_mole    ``calc.energy`` (eV)
temperature      (frames,)           kelvin                 ``info.temperature`` (K)
lambda           (frames,)           dimensionless          ``info.lambda``
topology         (1,) string         JSON                   ``arrays.numbers``, ``arrays.atom_names``,
                                                            ``arrays.residue_names``, ``arrays.residue_ids``
===============  ==================  =====================  =========================================

Every dataset but ``coordinates`` is optional; the frame count is ``len(coordinates)``.
Conversions use :mod:`ase.units` (1 nm = 10 Å, 1 kJ/mol = 0.0103643 eV). The file has no
masses: ``arrays.momenta`` is the velocity times ASE's standard mass of each atom's element,
so ``atoms.get_velocities()`` gives the file's velocities. A frame whose cell lengths are all
zero reads as non-periodic with a zero cell. The topology JSON (fixed- or variable-length
string) gives atomic numbers from the element symbols (0 for virtual sites and unknown
symbols), atom and residue names and residue numbers (``resSeq``). Not exposed: bonds,
chains, segment ids, formal charges, the ``constraints`` table and the ``randomState``,
``forcefield`` and ``reference`` attributes. Units attributes other than MDTraj's are
converted when listed in ``_UNITS`` and refused otherwise.

Writing
-------
A file holds one atom count, one topology and the same keys in every frame, in float32 (so
positions keep about 7 significant digits). ``extend`` and ``db[i] = atoms`` refuse, before
anything is written, a frame that does not fit: another atom count or topology, a key
missing or extra compared with the file's other frames, a key the format cannot hold
(forces, stress, other ``info``, ``arrays.masses``, constraints...), a cell that is not fully
periodic or not lower-triangular (MDTraj keeps lengths and angles only). A new file gets
the datasets its first frames carry. Atom names default to element symbols and the residue
to ``UNK`` 1; the root attribute ``asebytes_nodes_topology`` lists the topology keys that
came from the frames, and only those are read back. Rows cannot be inserted, deleted or lose
keys, and datasets written without an unlimited first axis cannot grow. Each write call opens,
commits and closes the file (several milliseconds), so append in batches.

Every write is all or nothing, also when the process is killed or the disk fills: it goes
through the undo journal of :mod:`._hdf5_journal` (``<file>-journal`` while it runs,
``<file>.lock`` serialising writers across processes; readers wait out a write), so
compression is as safe as none. Frame datasets and the topology carry HDF5's ``fletcher32``
checksum per chunk (PyTables, hence mdtraj, reads it); a damaged chunk raises
StoreCorruptedError naming the dataset and rows.

Version history
---------------
``conventionVersion`` 1.0 and 1.1 are read; 1.1 is written; a major version above 1 is refused.
Files written since asebytes-nodes issue 12 carry ``fletcher32`` checksums on their frame
datasets and a chunked topology (same conventions; older files without them are read as before).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import units
from ase.data import atomic_numbers, chemical_symbols

from ..errors import InvalidDataError, StoreCorruptedError

__all__ = [
    "PER_ATOM",
    "SCALARS",
    "TAILS",
    "TOPOLOGY",
    "TOPOLOGY_ATTR",
    "UNITS",
    "UNIT_WRITTEN",
    "cell_from_parameters",
    "cell_parameters",
    "check_keys",
    "on_disk",
    "read_topology",
    "scalars",
    "stack",
    "text",
    "topology_json",
]

TOPOLOGY_ATTR = "asebytes_nodes_topology"
_PS = 1000 * units.fs  # ase.units has no ps
_LENGTH = {"nanometers": units.nm, "nanometer": units.nm, "angstroms": units.Ang, "angstrom": units.Ang}
_ENERGY = {"kilojoules_per_mole": units.kJ / units.mol, "kilocalories_per_mole": units.kcal / units.mol}
UNITS: dict[str, dict[str, float]] = {  # dataset -> {units attribute: factor to our unit}
    "coordinates": _LENGTH,
    "cell_lengths": _LENGTH,
    "cell_angles": {"degrees": 1.0, "radians": 180.0 / math.pi},
    "time": {"picoseconds": 1.0, "femtoseconds": 1e-3, "nanoseconds": 1e3},
    "velocities": {"nanometers/picosecond": units.nm / _PS, "angstroms/picosecond": units.Ang / _PS},
    "kineticEnergy": _ENERGY,
    "potentialEnergy": _ENERGY,
    "temperature": {"kelvin": 1.0},
    "lambda": {"dimensionless": 1.0},
}
UNIT_WRITTEN = {name: next(iter(table)) for name, table in UNITS.items()}
PER_ATOM = {"arrays.positions": "coordinates", "arrays.momenta": "velocities"}
SCALARS = {
    "info.time": "time",
    "info.kinetic_energy": "kineticEnergy",
    "calc.energy": "potentialEnergy",
    "info.temperature": "temperature",
    "info.lambda": "lambda",
}
TAILS = {"cell_lengths": (3,), "cell_angles": (3,), **{name: () for name in SCALARS.values()}}
_NAMES = ("arrays.atom_names", "arrays.residue_names", "arrays.residue_ids")
TOPOLOGY = ("arrays.numbers", *_NAMES)
_STORABLE = frozenset((*PER_ATOM, *SCALARS, *TOPOLOGY, "cell", "pbc"))
_KINDS = {  # numpy dtype kinds accepted per array key
    "arrays.positions": "iuf",
    "arrays.momenta": "iuf",
    "arrays.numbers": "iu",
    "arrays.residue_ids": "iu",
    "arrays.atom_names": "U",
    "arrays.residue_names": "U",
}


def text(value: Any) -> str | None:
    """An HDF5 string attribute or value (fixed- or variable-length) as str."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def on_disk(name: str, values: np.ndarray) -> np.ndarray:
    """Values in our units as float32 in the units MDTraj writes for dataset ``name``."""
    return (values / UNITS[name][UNIT_WRITTEN[name]]).astype(np.float32)


def cell_from_parameters(lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Cells (n, 3, 3) from lengths and angles in degrees (n, 3): ASE's ``cellpar_to_cell``
    (a along x, b in the xy plane, exact zeros for right angles), for many frames at once."""
    eps = 2 * np.spacing(90.0, dtype=np.float64)
    rad = angles * np.pi / 180.0
    cos = np.where(np.abs(np.abs(angles) - 90) < eps, 0.0, np.cos(rad))
    gamma = angles[:, 2]
    sin_g = np.where(
        np.abs(gamma - 90) < eps, 1.0, np.where(np.abs(gamma + 90) < eps, -1.0, np.sin(rad[:, 2]))
    )
    cx = cos[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (cos[:, 0] - cos[:, 1] * cos[:, 2]) / sin_g
        cz = np.sqrt(1.0 - cx * cx - cy * cy)
    cell = np.zeros((len(lengths), 3, 3))
    cell[:, 0, 0] = lengths[:, 0]
    cell[:, 1, 0] = lengths[:, 1] * cos[:, 2]
    cell[:, 1, 1] = lengths[:, 1] * sin_g
    cell[:, 2] = lengths[:, 2, None] * np.stack([cx, cy, cz], axis=1)
    return cell


def cell_parameters(
    rows: Sequence[dict[str, Any]], where: Callable[[int], str], has_cell: bool | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(lengths in Å, angles in degrees) of every frame, or None when the file keeps no cell.

    ``has_cell`` is what the file holds (None: a new file, which keeps a cell if any frame
    is periodic). Non-periodic frames in a file with a cell get zero lengths.
    """
    cells = np.stack([np.asarray(row.get("cell", np.zeros((3, 3))), dtype=np.float64) for row in rows])
    pbc = np.stack([np.asarray(row.get("pbc", np.zeros(3, bool)), dtype=bool) for row in rows])
    lengths = np.linalg.norm(cells, axis=2)
    periodic = pbc.all(axis=1) & (lengths > 0).all(axis=1)
    isolated = ~pbc.any(axis=1) & ~cells.any(axis=(1, 2))
    bad = np.flatnonzero(~(periodic | isolated))
    if len(bad):
        j = int(bad[0])
        raise InvalidDataError(
            f"{where(j)}: 'pbc' is {pbc[j].tolist()} with cell lengths {lengths[j].tolist()}; an MDTraj "
            "file keeps a cell only for fully periodic frames. Set pbc=True with a full cell, or "
            "pbc=False and a zero cell; nothing was written"
        )
    keep = periodic.any() if has_cell is None else has_cell
    if not keep:
        if periodic.any():
            raise InvalidDataError(
                f"{where(int(np.argmax(periodic)))}: a periodic frame, but this MDTraj file was written "
                "without a cell; write periodic frames to another file; nothing was written"
            )
        return None
    a, b, c = cells[:, 0], cells[:, 1], cells[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.stack([np.einsum("ij,ij->i", u, v) for u, v in ((b, c), (a, c), (a, b))], axis=1) / (
            lengths[:, [1, 0, 0]] * lengths[:, [2, 2, 1]]
        )
    angles = np.where(periodic[:, None], np.degrees(np.arccos(np.clip(cosines, -1, 1))), 90.0)
    lengths = np.where(periodic[:, None], lengths, 0.0)
    rebuilt = cell_from_parameters(lengths, angles)
    off = np.abs(rebuilt - cells).max(axis=(1, 2)) > 1e-6 * np.maximum(lengths.max(axis=1), 1.0)
    if off.any():
        j = int(np.argmax(off))
        raise InvalidDataError(
            f"{where(j)}: the cell {cells[j].tolist()} is not lower-triangular (a along x, b in the xy "
            "plane); an MDTraj file keeps only lengths and angles. Rotate the frame first: "
            "atoms.set_cell(atoms.cell.cellpar(), scale_atoms=True); nothing was written"
        )
    return lengths, angles


def check_keys(row: dict[str, Any], expected: set[str], where: str, new: bool) -> None:
    foreign = sorted(set(row) - _STORABLE)
    if foreign:
        raise InvalidDataError(
            f"{where}: key {foreign[0]!r} cannot be stored in an MDTraj HDF5 file, which holds only "
            f"{', '.join(sorted(_STORABLE))}; remove it from the frames or write an H5MD file "
            "(backend='h5md'); nothing was written"
        )
    got = set(row) - {"cell", "pbc"}
    for key in ("arrays.positions", "arrays.numbers"):
        if key not in got:
            raise InvalidDataError(f"{where}: a frame needs {key!r}; nothing was written")
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        what = f"lacks {missing[0]!r}" if missing else f"carries {extra[0]!r}"
        first = "the first frame of this write" if new else "the file's frames"
        raise InvalidDataError(
            f"{where}: {what}, unlike {first}; an MDTraj file holds the same keys in every frame; "
            "nothing was written"
        )


def stack(
    rows: Sequence[dict[str, Any]],
    key: str,
    n_atoms: int,
    where: Callable[[int], str],
    tail: tuple[int, ...] = (),
) -> np.ndarray:
    """One per-atom key of every row as one (frames, atoms, *tail) array."""
    values = [np.asarray(row[key]) for row in rows]
    got = [(v.shape, v.dtype.kind in _KINDS[key]) for v in values]
    if got != [((n_atoms, *tail), True)] * len(rows):
        j, (shape, kind_ok) = next((j, g) for j, g in enumerate(got) if g != ((n_atoms, *tail), True))
        if not kind_ok:
            raise InvalidDataError(
                f"{where(j)}: {key!r} has dtype {values[j].dtype}; an MDTraj file stores it as "
                f"{'strings' if _KINDS[key] == 'U' else 'numbers'}; nothing was written"
            )
        raise InvalidDataError(
            f"{where(j)}: {key!r} has shape {shape}, but this MDTraj file holds {n_atoms} atoms per "
            "frame (one fixed atom count and topology); nothing was written"
        )
    return np.stack(values)


def scalars(rows: Sequence[dict[str, Any]], key: str, where: Callable[[int], str]) -> np.ndarray:
    values = [row[key] for row in rows]
    kinds = [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values]
    if not all(kinds):
        j = kinds.index(False)
        raise InvalidDataError(
            f"{where(j)}: {key!r} must be a real number, got {type(values[j]).__name__}; nothing was written"
        )
    return np.asarray(values, dtype=np.float64)


def read_topology(f: Any, n_atoms: int, where: Path) -> dict[str, np.ndarray]:
    """Topology arrays from MDTraj's JSON (atoms ordered by index, as MDTraj orders them)."""
    if "topology" not in f:
        return {"arrays.numbers": np.zeros(n_atoms, np.int64)}
    ds = f["topology"]
    raw = text(ds[0] if ds.shape else ds[()])
    try:
        top = json.loads(raw or "")
        atoms = [  # resSeq may be missing or null in other writers (0 is a valid number)
            (atom["name"], atom.get("element") or "", res["name"], _default(res.get("resSeq"), res["index"]))
            for chain in sorted(top["chains"], key=lambda c: c["index"])
            for res in sorted(chain["residues"], key=lambda r: r["index"])
            for atom in sorted(res["atoms"], key=lambda a: a["index"])
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreCorruptedError(f"{where}: unreadable MDTraj topology ({exc!r})") from exc
    if len(atoms) != n_atoms:
        raise StoreCorruptedError(f"{where}: the topology has {len(atoms)} atoms, 'coordinates' {n_atoms}")
    names, symbols, residues, ids = (list(c) for c in zip(*atoms, strict=True)) if atoms else ([],) * 4
    known = {s: atomic_numbers.get(s, atomic_numbers.get(s.capitalize(), 0)) for s in set(symbols)}
    return {
        "arrays.numbers": np.array([known[s] for s in symbols], dtype=np.int64),
        "arrays.atom_names": np.array(names, dtype=str),
        "arrays.residue_names": np.array(residues, dtype=str),
        "arrays.residue_ids": np.array(ids, dtype=np.int64),
    }


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def topology_json(numbers: np.ndarray, given: dict[str, np.ndarray]) -> str:
    """MDTraj's topology JSON: one chain; a new residue wherever name or number changes."""
    symbols = [chemical_symbols[z] if 0 < z < len(chemical_symbols) else "" for z in numbers.tolist()]
    n = len(symbols)
    names = given.get("arrays.atom_names", np.array(symbols)).tolist()
    res_names = given.get("arrays.residue_names", np.full(n, "UNK")).tolist()
    res_ids = given.get("arrays.residue_ids", np.ones(n, np.int64)).tolist()
    residues: list[dict[str, Any]] = []
    for i in range(n):
        if not residues or (residues[-1]["name"], residues[-1]["resSeq"]) != (res_names[i], res_ids[i]):
            residue = {"index": len(residues), "name": res_names[i], "resSeq": int(res_ids[i])}
            residues.append({**residue, "segmentID": "", "atoms": []})
        residues[-1]["atoms"].append({"index": i, "name": names[i], "element": symbols[i]})
    return json.dumps({"chains": [{"index": 0, "residues": residues}], "bonds": []})

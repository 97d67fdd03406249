"""MDTraj HDF5 backend: MDTraj's ``.h5`` trajectories (the "Pande" conventions), read and written.

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

Process rules: one read-only ``h5py.File`` per file per process, shared by every handle on
it. A write closes it (HDF5 cannot open a file for writing that the process holds read-only)
and every handle reloads; a handle also reloads when the file's size or mtime changes. After
``fork`` the inherited HDF5 handles are dropped and reopened. Reading never writes to the file.
Per-frame datasets (time, energies, cell: 4 to 12 bytes a frame) are read whole on first use
and kept until the file changes, so a random row costs one HDF5 read per per-atom dataset.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import units
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from .. import __version__
from ..errors import (
    FormatVersionError,
    InvalidDataError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from ..rows import expand_rows
from ._base import MISSING, WritableBackend, path_of
from ._hdf5_guard import refuse_outside_links
from ._hdf5_journal import (
    CHECKSUM,
    checked,
    checksum_problems,
    estimate,
    journaled,
    reading,
    recover,
    store_lock,
)

try:
    import h5py
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The MDTraj HDF5 backend needs h5py. Run: pip install "asebytes-nodes[h5md]"'
    ) from exc

__all__ = ["MDTrajBackend", "sniff"]

_SLAB_BYTES = 64 << 20  # read one contiguous slab instead of scattered rows below this size
_TOPOLOGY_ATTR = "asebytes_nodes_topology"
_PS = 1000 * units.fs  # ase.units has no ps
_LENGTH = {"nanometers": units.nm, "nanometer": units.nm, "angstroms": units.Ang, "angstrom": units.Ang}
_ENERGY = {"kilojoules_per_mole": units.kJ / units.mol, "kilocalories_per_mole": units.kcal / units.mol}
_UNITS: dict[str, dict[str, float]] = {  # dataset -> {units attribute: factor to our unit}
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
_UNIT_WRITTEN = {name: next(iter(table)) for name, table in _UNITS.items()}
_PER_ATOM = {"arrays.positions": "coordinates", "arrays.momenta": "velocities"}
_SCALARS = {
    "info.time": "time",
    "info.kinetic_energy": "kineticEnergy",
    "calc.energy": "potentialEnergy",
    "info.temperature": "temperature",
    "info.lambda": "lambda",
}
_TAILS = {"cell_lengths": (3,), "cell_angles": (3,), **{name: () for name in _SCALARS.values()}}
_NAMES = ("arrays.atom_names", "arrays.residue_names", "arrays.residue_ids")
_TOPOLOGY = ("arrays.numbers", *_NAMES)
_STORABLE = frozenset((*_PER_ATOM, *_SCALARS, *_TOPOLOGY, "cell", "pbc"))
_KINDS = {  # numpy dtype kinds accepted per array key
    "arrays.positions": "iuf",
    "arrays.momenta": "iuf",
    "arrays.numbers": "iu",
    "arrays.residue_ids": "iu",
    "arrays.atom_names": "U",
    "arrays.residue_names": "U",
}


def _text(value: Any) -> str | None:
    """An HDF5 string attribute or value (fixed- or variable-length) as str."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def sniff(path: Path) -> bool:
    """Is ``path`` an HDF5 file with the root attribute ``conventions = "Pande"``? Never raises."""
    try:
        if not Path(path).is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return _text(f.attrs.get("conventions")) == "Pande"
    except Exception:  # any unreadable or odd file is simply not ours
        return False


class _Shared:
    """The read-only ``h5py.File`` of one path, shared by the handles of this process."""

    def __init__(self) -> None:
        self.file: Any = None
        self.datasets: dict[str, Any] = {}  # h5py lookups cost more than small reads
        self.stat: tuple[int, int] | None = None
        self.users = 0
        self.generation = 0  # bumped by every write in this process
        self.pid = os.getpid()


_SHARED: dict[str, _Shared] = {}
_LOCK = threading.RLock()


@dataclass
class _Meta:
    """What one look at the file found (``stamp``: its mtime, size and write generation)."""

    stamp: tuple[int, int, int] | None
    length: int = 0
    n_atoms: int = 0
    scales: dict[str, float] = field(default_factory=dict)  # dataset present -> factor to our unit
    topology: dict[str, np.ndarray] = field(default_factory=dict)  # exposed topology arrays
    numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fixed: list[str] = field(default_factory=list)  # datasets that cannot grow
    whole: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame datasets, read once
    box: tuple[np.ndarray, np.ndarray] | None = None  # (cell, pbc) when every frame has the same box
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.length:
            found = [*self.topology, "cell", "pbc"]
            found += [k for k, name in (*_PER_ATOM.items(), *_SCALARS.items()) if name in self.scales]
            self.keys = sorted(found)


class MDTrajBackend(WritableBackend):
    """Frames in an MDTraj HDF5 file (``mdtraj.load`` opens what this writes).

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("traj.h5", backend="mdtraj")  # doctest: +SKIP

    Parameters
    ----------
    target
        Path of the ``.h5`` file (created by the first write unless ``readonly``).
    readonly
        Refuse every write.
    compression
        ``None`` (the default) or ``"gzip"`` (MDTraj's own choice: zlib level 1 with shuffle),
        for new files.
    title
        The ``title`` root attribute of a new file.
    """

    name: ClassVar[str] = "mdtraj"
    extensions: ClassVar[tuple[str, ...]] = (".h5",)

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        compression: str | None = None,
        title: str = "asebytes-nodes",
    ) -> None:
        if compression not in ("gzip", None):
            raise ValueError(f"compression must be 'gzip' or None (what MDTraj reads), got {compression!r}")
        self._path = path_of(os.fspath(target))
        self.readonly = readonly
        self._options: dict[str, Any] = {"compression": compression, "title": title}
        if readonly and not self._path.exists():
            raise StoreNotFoundError(f"{self._path}: no such MDTraj HDF5 file (opened read-only)")
        self._key = os.path.realpath(self._path)
        self._shared: _Shared | None = None
        self._meta = _Meta(stamp=None)
        with reading(self._path):
            self._refresh()

    # -- lifecycle ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"target": str(self._path), "readonly": self.readonly, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], readonly=state["readonly"], **state["options"])  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self._path)

    def close(self) -> None:
        with _LOCK:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.users -= 1
            if shared.users <= 0 and _SHARED.get(self._key) is shared:
                del _SHARED[self._key]
                _drop_file(shared)

    def _share(self) -> _Shared:
        """This path's shared state, joined on first use (again after ``close``)."""
        with _LOCK:
            if self._shared is None:
                self._shared = _SHARED.setdefault(self._key, _Shared())
                self._shared.users += 1
            shared = self._shared
            if shared.pid != os.getpid():  # inherited through fork: its descriptor is the parent's
                _drop_file(shared)
                shared.pid = os.getpid()
            return shared

    def _file(self) -> Any:
        """The shared read-only handle, (re)opened when missing, inherited or outdated."""
        with _LOCK:
            shared = self._share()
            stat = _stat(self._path)
            if (shared.file is None or shared.stat != stat) and recover(self._path):  # a killed write
                stat = _stat(self._path)
            if shared.file is not None and shared.stat != stat:
                _drop_file(shared)
            if shared.file is None:
                try:
                    handle = h5py.File(self._path, "r")
                except OSError as exc:
                    raise StoreCorruptedError(f"{self._path}: cannot open as HDF5 ({exc})") from exc
                shared.file = refuse_outside_links(handle, self._path)
                shared.stat = stat
            return shared.file

    def _refresh(self) -> None:
        """Reload what the file holds if it changed since the last look."""
        stat = _stat(self._path)
        if stat is None:
            self._meta = _Meta(stamp=None)
            return
        stamp = (*stat, self._share().generation)
        if stamp != self._meta.stamp:
            self._meta = self._load(self._file(), stamp)

    def _load(self, f: Any, stamp: tuple[int, int, int]) -> _Meta:
        where = self._path
        conventions = _text(f.attrs.get("conventions"))
        if conventions != "Pande":
            if len(f) == 0 and len(f.attrs) == 0:  # an empty HDF5 file: ours to fill
                return _Meta(stamp=stamp)
            raise StoreCorruptedError(
                f"{where}: an HDF5 file, but not an MDTraj trajectory (root attribute 'conventions' is "
                f"{conventions!r}, expected 'Pande'); open H5MD files with backend='h5md'"
            )
        version = _text(f.attrs.get("conventionVersion")) or "1.0"
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise StoreCorruptedError(f"{where}: unreadable conventionVersion {version!r}") from None
        if major > 1:
            raise FormatVersionError(
                f"{where}: written with the Pande conventions version {version}, but this reader "
                "knows versions 1.x; upgrade asebytes-nodes"
            )
        if "coordinates" not in f:
            return _Meta(stamp=stamp)
        coords = f["coordinates"]
        if coords.ndim != 3 or coords.shape[2] != 3:
            raise StoreCorruptedError(f"{where}: 'coordinates' has shape {coords.shape}, not (n, atoms, 3)")
        length, n_atoms = int(coords.shape[0]), int(coords.shape[1])
        scales, fixed = {}, []
        for name, table in _UNITS.items():
            if name not in f:
                continue
            ds = f[name]
            tail = _TAILS.get(name, (n_atoms, 3))
            if ds.shape[1:] != tail or ds.shape[0] < length:
                raise StoreCorruptedError(
                    f"{where}: dataset {name!r} has shape {ds.shape}; expected {(length, *tail)}"
                )
            unit = _text(ds.attrs.get("units")) or _UNIT_WRITTEN[name]
            if unit not in table:
                raise StoreCorruptedError(
                    f"{where}: dataset {name!r} has units {unit!r}; this reader converts {sorted(table)}"
                )
            scales[name] = table[unit]
            if ds.maxshape[0] is not None:
                fixed.append(name)
        if ("cell_lengths" in scales) != ("cell_angles" in scales):
            raise StoreCorruptedError(f"{where}: 'cell_lengths' and 'cell_angles' must come together")
        topology = _read_topology(f, n_atoms, where)
        shown = _text(f.attrs.get(_TOPOLOGY_ATTR))
        exposed = {"arrays.numbers", *(_TOPOLOGY if shown is None else shown.split())}
        return _Meta(
            stamp=stamp,
            length=length,
            n_atoms=n_atoms,
            scales=scales,
            topology={k: v for k, v in topology.items() if k in exposed},
            numbers=topology["arrays.numbers"],
            fixed=fixed,
        )

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with reading(self._path):
            self._refresh()
            return self._meta.length

    def keys(self) -> list[str]:
        with reading(self._path):
            self._refresh()
            return list(self._meta.keys)

    def columns(self, index: int = 0) -> list[str]:
        return list(self._meta.keys)

    def check(self) -> list[str]:
        """Chunks failing their checksum (by dataset and rows), then every row."""
        with reading(self._path):
            self._refresh()
            damaged = checksum_problems(self._file()) if self._meta.stamp is not None else []
        return damaged or super().check()

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        frames, where = _unique(idx)
        with reading(self._path):  # another process's write is waited out, then seen whole
            self._refresh()
            values = self._read(frames, self._meta.keys if keys is None else keys)
        rows: list[dict[str, Any]] = [{} for _ in frames]
        for key, column in values.items():
            if key in self._meta.topology:  # one topology for every frame: a copy each
                for row in rows:
                    row[key] = column.copy()
            else:
                for row, value in zip(rows, column, strict=True):
                    row[key] = value
        if len(frames) == len(idx):
            return [rows[j] for j in where.tolist()]
        return expand_rows(rows, where)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        with reading(self._path):
            self._refresh()
            if key not in self._meta.keys:
                return [MISSING] * len(idx)
            if idx.size == 0:
                return []
            frames, where = _unique(idx)
            values = self._read(frames, [key])[key]
        if key in self._meta.topology:
            return np.repeat(values[None], len(idx), axis=0)
        return [values[j] for j in where.tolist()] if isinstance(values, list) else values[where]

    def _read(self, frames: np.ndarray, keys: Sequence[str]) -> dict[str, Any]:
        """Each wanted key's values at sorted unique ``frames``: per-frame lists or stacked arrays
        (topology keys: the one array of the file)."""
        meta = self._meta
        out: dict[str, Any] = {}
        wanted = [k for k in keys if k in meta.keys]
        for key in wanted:
            if key in meta.topology:
                out[key] = meta.topology[key]
            elif key in _SCALARS:
                out[key] = self._values(_SCALARS[key], frames).tolist()
            elif key in _PER_ATOM:
                data = self._values(_PER_ATOM[key], frames)
                if key == "arrays.momenta":
                    data = atomic_masses[meta.numbers][:, None] * data
                out[key] = data
        if "cell" in wanted or "pbc" in wanted:
            cell, pbc = self._cells(frames)
            out.update({k: v for k, v in (("cell", cell), ("pbc", pbc)) if k in wanted})
        return out

    def _values(self, name: str, frames: np.ndarray) -> np.ndarray:
        """Dataset ``name`` at sorted unique ``frames``, in our units. Per-frame datasets (a few
        bytes a frame) are read whole on first use, so random rows cost one read per per-atom one."""
        meta, shared = self._meta, self._share()
        raw = meta.whole.get(name)
        if raw is None:
            ds = shared.datasets.get(name)
            if ds is None:
                ds = shared.datasets[name] = self._file()[name]
            with checked(ds, frames):
                if name in _PER_ATOM.values():
                    return _take(ds, frames).astype(np.float64) * meta.scales[name]
                raw = meta.whole[name] = ds[: meta.length]
        return raw[frames].astype(np.float64) * meta.scales[name]

    def _cells(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cells and pbc at ``frames``; a box shared by every frame is converted once."""
        meta, n = self._meta, len(frames)
        if "cell_lengths" not in meta.scales:
            return np.zeros((n, 3, 3)), np.zeros((n, 3), bool)
        if meta.box is None:
            self._values("cell_lengths", frames[:1]), self._values("cell_angles", frames[:1])
            boxes = np.concatenate([meta.whole["cell_lengths"], meta.whole["cell_angles"]], axis=1)
            if (boxes == boxes[:1]).all():
                meta.box = self._box(np.zeros(1, np.int64))
        if meta.box is not None:
            return np.repeat(meta.box[0], n, axis=0), np.repeat(meta.box[1], n, axis=0)
        return self._box(frames)

    def _box(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths, angles = self._values("cell_lengths", frames), self._values("cell_angles", frames)
        periodic = np.all(lengths > 0, axis=1, keepdims=True)
        cell = cell_from_parameters(lengths, angles)
        cell[~periodic[:, 0]] = 0.0
        bad = np.flatnonzero(~np.isfinite(cell).all(axis=(1, 2)))
        if len(bad):
            j = int(bad[0])
            raise StoreCorruptedError(
                f"{self._path}: frame {int(frames[j])} has cell lengths {lengths[j].tolist()} and angles "
                f"{angles[j].tolist()}, which describe no cell"
            )
        return cell, np.repeat(periodic, 3, axis=1)

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows:
            return
        with store_lock(self._path).exclusive(), reading(self._path):  # plan from the last commit
            self._extend(rows)

    def _extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._refresh()
        data, topology = self._encode(rows, lambda j: f"frame {j}")
        start = self._meta.length
        if self._meta.fixed:
            raise UnsupportedOperationError(
                f"{self._path}: dataset {self._meta.fixed[0]!r} has a fixed size and cannot grow; "
                "write the frames to a new file"
            )
        with self._writer(estimate(list(data.values()))) as f:
            if topology is not None:
                self._initialize(f, data, topology)
            for name in sorted(data, key=lambda name: name == "coordinates"):  # the count last
                ds = f[name]
                ds.resize(start + len(rows), axis=0)
                ds[start:] = data[name]
        self._written(start + len(rows), reload=topology is not None)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        with store_lock(self._path).exclusive(), reading(self._path):
            self._refresh()
            data, _ = self._encode(rows, lambda j: f"row {int(idx[j])}")
            targets, last = np.unique(idx[::-1], return_index=True)  # a repeated row: the last value wins
            source = len(idx) - 1 - last
            with self._writer(2 * estimate(list(data.values())) + len(data) * (1 << 17)) as f:
                for name, values in data.items():
                    f[name][targets] = values[source]
            self._written(self._meta.length)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        with store_lock(self._path).exclusive(), reading(self._path):  # read and rewrite as one step
            self._refresh()
            idx = np.asarray(indices, dtype=np.int64).tolist()
            merged: dict[int, dict[str, Any]] = {}
            for i, row, update in zip(idx, self.read_rows(idx), updates, strict=True):
                merged[i] = {**merged.get(i, row), **update}
            self.set_rows(list(merged), list(merged.values()))

    @contextmanager
    def _writer(self, nbytes: int) -> Iterator[Any]:
        """The file opened for one all-or-nothing write of about ``nbytes`` (see
        :mod:`._hdf5_journal`); every handle of this process reloads after."""
        with _LOCK:
            shared = self._share()
            _drop_file(shared)
            try:
                with journaled(self._path, nbytes) as f:
                    yield f
            finally:
                shared.generation += 1
                self._meta.stamp = None  # whatever happened, look again before the next use

    def _written(self, length: int, reload: bool = False) -> None:
        """Adopt what this handle just wrote (``length`` frames) without parsing the file again."""
        stat = _stat(self._path)
        if reload or stat is None:
            self._refresh()
            return
        stamp = (*stat, self._share().generation)
        self._meta = replace(self._meta, stamp=stamp, length=length, whole={}, box=None)

    def _initialize(self, f: Any, data: dict[str, np.ndarray], topology: tuple[str, list[str]]) -> None:
        """Create the root attributes, the topology and empty datasets of a new file."""
        for name in [*_UNITS, "topology"]:
            if name in f:  # left by a write that stopped before its first frame
                del f[name]
        text = topology[0].encode("utf-8")
        blob = np.array([text], dtype=f"S{max(len(text), 1)}")
        f.create_dataset("topology", data=blob, chunks=(1,), **CHECKSUM)  # chunked: checksummed
        compression = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        for name, values in data.items():
            tail = values.shape[1:]
            chunk = max(1, min(16384, (64 << 10) // (4 * math.prod(tail))))
            kwargs = {**(compression if self._options["compression"] else {}), **CHECKSUM}
            ds = f.create_dataset(
                name, shape=(0, *tail), maxshape=(None, *tail), dtype="f4", chunks=(chunk, *tail), **kwargs
            )
            ds.attrs["units"] = np.bytes_(_UNIT_WRITTEN[name])
        attrs = {
            "title": self._options["title"],
            "application": "asebytes-nodes",
            "program": "asebytes-nodes",
            "programVersion": __version__,
            _TOPOLOGY_ATTR: " ".join(topology[1]),
            "conventionVersion": "1.1",
            "conventions": "Pande",
        }
        for key, value in attrs.items():
            f.attrs[key] = np.bytes_(value.encode("utf-8"))

    def _encode(
        self, rows: Sequence[dict[str, Any]], where: Callable[[int], str]
    ) -> tuple[dict[str, np.ndarray], tuple[str, list[str]] | None]:
        """float32 data per dataset for ``rows``, and (topology JSON, keys it came from) for a new
        file; refuses any row that does not fit, before anything is written."""
        meta = self._meta
        new = meta.length == 0
        expected = set(rows[0]) if new else set(meta.keys)
        expected -= {"cell", "pbc"}
        for j, row in enumerate(rows):
            _check_keys(row, expected, where(j), new)
        n_atoms = len(rows[0]["arrays.positions"]) if new else meta.n_atoms
        if n_atoms == 0:
            raise InvalidDataError(f"{where(0)}: a frame without atoms cannot start an MDTraj file")
        positions = _stack(rows, "arrays.positions", n_atoms, where, (3,))  # the atom count first
        topology = {k: _stack(rows, k, n_atoms, where) for k in _TOPOLOGY if k in expected}
        reference = {k: v[0] for k, v in topology.items()} if new else meta.topology
        for key, values in topology.items():
            differs = np.flatnonzero((values != reference[key]).any(axis=1))
            if len(differs):
                raise InvalidDataError(
                    f"{where(int(differs[0]))}: {key!r} differs from the file's topology; an MDTraj file "
                    "holds one topology for every frame, so write these frames to another file; "
                    "nothing was written"
                )
        numbers = reference["arrays.numbers"].astype(np.int64)
        data = {"coordinates": _on_disk("coordinates", positions)}
        if "arrays.momenta" in expected:
            momenta = _stack(rows, "arrays.momenta", n_atoms, where, (3,))
            data["velocities"] = _on_disk("velocities", momenta / atomic_masses[numbers][:, None])
        for key, name in _SCALARS.items():
            if key in expected:
                data[name] = _on_disk(name, _scalars(rows, key, where))
        box = _cell_parameters(rows, where, None if new else "cell_lengths" in meta.scales)
        if box is not None:
            data["cell_lengths"] = _on_disk("cell_lengths", box[0])
            data["cell_angles"] = _on_disk("cell_angles", box[1])
        if not new:
            return data, None
        return data, (_topology_json(numbers, {k: v[0] for k, v in topology.items()}), sorted(topology))


def _on_disk(name: str, values: np.ndarray) -> np.ndarray:
    """Values in our units as float32 in the units MDTraj writes for dataset ``name``."""
    return (values / _UNITS[name][_UNIT_WRITTEN[name]]).astype(np.float32)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _drop_file(shared: _Shared) -> None:
    """Close the shared read handle; in a forked child this closes the inherited copy only."""
    if shared.file is not None:
        shared.file.close()
    shared.file, shared.stat, shared.datasets = None, None, {}


def _unique(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique rows, where each requested row is among them), cheap when already sorted."""
    if len(idx) == 1 or bool((idx[1:] > idx[:-1]).all()):
        return idx, np.arange(len(idx))
    frames, where = np.unique(idx, return_inverse=True)
    return frames, where


def _take(ds: Any, frames: np.ndarray) -> np.ndarray:
    """Rows ``frames`` (sorted, unique) of an HDF5 dataset: one hyperslab when that is cheap."""
    lo, hi = int(frames[0]), int(frames[-1]) + 1
    if hi - lo == len(frames):
        return np.asarray(ds[lo:hi])
    row_bytes = ds.dtype.itemsize * math.prod(ds.shape[1:])
    if (hi - lo) * row_bytes <= _SLAB_BYTES or hi - lo <= 2 * len(frames):
        return np.asarray(ds[lo:hi])[frames - lo]
    return np.asarray(ds[frames])


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


def _cell_parameters(
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


def _check_keys(row: dict[str, Any], expected: set[str], where: str, new: bool) -> None:
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


def _stack(
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


def _scalars(rows: Sequence[dict[str, Any]], key: str, where: Callable[[int], str]) -> np.ndarray:
    values = [row[key] for row in rows]
    kinds = [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values]
    if not all(kinds):
        j = kinds.index(False)
        raise InvalidDataError(
            f"{where(j)}: {key!r} must be a real number, got {type(values[j]).__name__}; nothing was written"
        )
    return np.asarray(values, dtype=np.float64)


def _read_topology(f: Any, n_atoms: int, where: Path) -> dict[str, np.ndarray]:
    """Topology arrays from MDTraj's JSON (atoms ordered by index, as MDTraj orders them)."""
    if "topology" not in f:
        return {"arrays.numbers": np.zeros(n_atoms, np.int64)}
    ds = f["topology"]
    raw = _text(ds[0] if ds.shape else ds[()])
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


def _topology_json(numbers: np.ndarray, given: dict[str, np.ndarray]) -> str:
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

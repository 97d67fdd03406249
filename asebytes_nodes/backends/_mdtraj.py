"""MDTraj HDF5 backend: MDTraj's ``.h5`` trajectories (the "Pande" conventions), read and written.

The layout, the units and what a write accepts are described in :mod:`._mdtraj_format`, which
also holds the conversions. Every write is all or nothing (the undo journal of
:mod:`._hdf5_journal`, ``<file>-journal`` while it runs, ``<file>.lock`` serialising writers
across processes; readers wait out a write).

Process rules (:mod:`._hdf5_files`): one read-only ``h5py.File`` per file per process, shared
by every handle on it. A write closes it (HDF5 cannot open a file for writing that the process
holds read-only) and every handle reloads; a handle also reloads when the file's size or mtime
changes. After ``fork`` the child opens its own handle and leaves the inherited one alone.
Reading never writes to the file. Per-frame datasets (time, energies, cell: 4 to 12 bytes a
frame) are read whole on first use and kept until the file changes, so a random row costs one
HDF5 read per per-atom dataset.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase.data import atomic_masses

from .. import __version__
from ..errors import (
    FormatVersionError,
    InvalidDataError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from ..registry import builtin
from ._base import MISSING, WritableBackend, path_of
from ._columns import expand_rows, expand_values, sorted_unique, take
from ._mdtraj_format import (
    PER_ATOM,
    SCALARS,
    TAILS,
    TOPOLOGY,
    TOPOLOGY_ATTR,
    UNIT_WRITTEN,
    UNITS,
    cell_from_parameters,
    cell_parameters,
    check_keys,
    on_disk,
    read_topology,
    scalars,
    stack,
    text,
    topology_json,
)

try:
    import h5py
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The MDTraj HDF5 backend needs h5py. Run: pip install "asebytes-nodes[h5md]"'
    ) from exc

from ._hdf5_files import SharedFile, acquire, release
from ._hdf5_index import ChunkGrid
from ._hdf5_journal import (
    CHECKSUM,
    JOURNAL_SUFFIX,
    LOCK_SUFFIX,
    checked,
    checksum_problems,
    estimate,
    reading,
    store_lock,
)

__all__ = ["MDTrajBackend", "sniff"]


def sniff(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` an HDF5 file with the root attribute ``conventions = "Pande"``? Never raises."""
    try:
        if not Path(path).is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return text(f.attrs.get("conventions")) == "Pande"
    except Exception:  # any unreadable or odd file is simply not ours
        return False


@dataclass
class _Meta:
    """What one look at the file found (``generation``: of the shared handle it was read from,
    None when there is no file)."""

    generation: int | None
    length: int = 0
    n_atoms: int = 0
    scales: dict[str, float] = field(default_factory=dict)  # dataset present -> factor to our unit
    topology: dict[str, np.ndarray] = field(default_factory=dict)  # exposed topology arrays
    numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fixed: list[str] = field(default_factory=list)  # datasets that cannot grow
    whole: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame datasets, read once
    grids: dict[str, ChunkGrid] = field(default_factory=dict)  # chunks HDF5's index was seen to find
    box: tuple[np.ndarray, np.ndarray] | None = None  # (cell, pbc) when every frame has the same box
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.length:
            found = [*self.topology, "cell", "pbc"]
            found += [k for k, name in (*PER_ATOM.items(), *SCALARS.items()) if name in self.scales]
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
    extensions: ClassVar[tuple[str, ...]] = builtin("mdtraj").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("mdtraj").schemes
    side_suffixes: ClassVar[tuple[str, ...]] = (LOCK_SUFFIX, JOURNAL_SUFFIX)

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        compression: str | None = None,
        title: str = "asebytes-nodes",
        lock_timeout: float | None = None,
    ) -> None:
        if compression not in ("gzip", None):
            raise ValueError(f"compression must be 'gzip' or None (what MDTraj reads), got {compression!r}")
        self._path = path_of(os.fspath(target))
        if lock_timeout is not None:  # seconds to wait for another process's write (default 60)
            store_lock(self._path, lock_timeout)
        self.readonly = readonly
        self._options: dict[str, Any] = {"compression": compression, "title": title}
        self._options["lock_timeout"] = lock_timeout
        if readonly and not self._path.exists():
            raise StoreNotFoundError(f"{self._path}: no such MDTraj HDF5 file (opened read-only)")
        self._shared: SharedFile | None = None
        self._meta = _Meta(generation=None)
        with self._reading():
            pass

    # -- lifecycle ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"target": str(self._path), "readonly": self.readonly, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], readonly=state["readonly"], **state["options"])  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self._path)

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            self._finalizer()

    def _share(self) -> SharedFile:
        """This path's shared handle (:mod:`._hdf5_files`), joined on first use (again after ``close``)."""
        if self._shared is None:
            self._shared = acquire(self._path)
            self._finalizer = weakref.finalize(self, release, self._shared)
        return self._shared

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One read call: the handle's lock (a write by another thread of this process swaps the
        handle), another process's write waited out, and what the file holds reloaded if it changed."""
        shared = self._share()
        with shared.lock, reading(self._path):
            handle = shared.reader()
            if handle is None:
                self._meta = _Meta(generation=None)
            elif shared.generation != self._meta.generation:
                self._meta = self._load(handle, shared.generation)
            yield

    def _load(self, f: Any, generation: int) -> _Meta:
        where = self._path
        conventions = text(f.attrs.get("conventions"))
        if conventions != "Pande":
            if len(f) == 0 and len(f.attrs) == 0:  # an empty HDF5 file: ours to fill
                return _Meta(generation=generation)
            raise StoreCorruptedError(
                f"{where}: an HDF5 file, but not an MDTraj trajectory (root attribute 'conventions' is "
                f"{conventions!r}, expected 'Pande'); open H5MD files with backend='h5md'"
            )
        version = text(f.attrs.get("conventionVersion")) or "1.0"
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
            return _Meta(generation=generation)
        coords = f["coordinates"]
        if coords.ndim != 3 or coords.shape[2] != 3:
            raise StoreCorruptedError(f"{where}: 'coordinates' has shape {coords.shape}, not (n, atoms, 3)")
        length, n_atoms = int(coords.shape[0]), int(coords.shape[1])
        scales, fixed = {}, []
        for name, table in UNITS.items():
            if name not in f:
                continue
            ds = f[name]
            tail = TAILS.get(name, (n_atoms, 3))
            if ds.shape[1:] != tail or ds.shape[0] < length:
                raise StoreCorruptedError(
                    f"{where}: dataset {name!r} has shape {ds.shape}; expected {(length, *tail)}"
                )
            unit = text(ds.attrs.get("units")) or UNIT_WRITTEN[name]
            if unit not in table:
                raise StoreCorruptedError(
                    f"{where}: dataset {name!r} has units {unit!r}; this reader converts {sorted(table)}"
                )
            scales[name] = table[unit]
            if ds.maxshape[0] is not None:
                fixed.append(name)
        if ("cell_lengths" in scales) != ("cell_angles" in scales):
            raise StoreCorruptedError(f"{where}: 'cell_lengths' and 'cell_angles' must come together")
        topology = read_topology(f, n_atoms, where)
        shown = text(f.attrs.get(TOPOLOGY_ATTR))
        exposed = {"arrays.numbers", *(TOPOLOGY if shown is None else shown.split())}
        return _Meta(
            generation=generation,
            length=length,
            n_atoms=n_atoms,
            scales=scales,
            topology={k: v for k, v in topology.items() if k in exposed},
            numbers=topology["arrays.numbers"],
            fixed=fixed,
        )

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._reading():
            return self._meta.length

    def keys(self) -> list[str]:
        with self._reading():
            return list(self._meta.keys)

    def columns(self, index: int = 0) -> list[str]:
        return list(self._meta.keys)

    def check(self) -> list[str]:
        """Chunks HDF5's index does not find or failing their checksum (by dataset and rows),
        then every row."""
        with self._reading():
            meta, damaged = self._meta, []
            if meta.generation is not None:
                for name in meta.scales:
                    damaged += self._lost(name, np.arange(meta.length))
                damaged += checksum_problems(self._share().file)
        return damaged or super().check()

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        frames, where = sorted_unique(idx)
        with self._reading():  # another process's write is waited out, then seen whole
            values = self._read(frames, self._meta.keys if keys is None else keys)
        rows: list[dict[str, Any]] = [{} for _ in frames]
        for key, column in values.items():
            if key in self._meta.topology:  # one topology for every frame: a copy each
                for row in rows:
                    row[key] = column.copy()
            else:
                for row, value in zip(rows, column, strict=True):
                    row[key] = value
        return expand_rows(rows, where)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        with self._reading():
            if key not in self._meta.keys:
                return [MISSING] * len(idx)
            if idx.size == 0:
                return []
            frames, where = sorted_unique(idx)
            values = self._read(frames, [key])[key]
        if key in self._meta.topology:
            return np.repeat(values[None], len(idx), axis=0)
        if isinstance(values, list):
            return expand_values(values, where)
        return values if where is None else values[where]

    def _read(self, frames: np.ndarray, keys: Sequence[str]) -> dict[str, Any]:
        """Each wanted key's values at sorted unique ``frames``: per-frame lists or stacked arrays
        (topology keys: the one array of the file)."""
        meta = self._meta
        out: dict[str, Any] = {}
        wanted = [k for k in keys if k in meta.keys]
        for key in wanted:
            if key in meta.topology:
                out[key] = meta.topology[key]
            elif key in SCALARS:
                out[key] = self._values(SCALARS[key], frames).tolist()
            elif key in PER_ATOM:
                data = self._values(PER_ATOM[key], frames)
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
        meta = self._meta
        raw = meta.whole.get(name)
        if raw is None:
            ds = self._share().dataset(name)
            self._confirm(name, frames if name in PER_ATOM.values() else np.arange(meta.length))
            with checked(ds, frames):
                if name in PER_ATOM.values():
                    row_bytes = ds.dtype.itemsize * math.prod(ds.shape[1:])
                    return take(ds.__getitem__, frames, row_bytes).astype(np.float64) * meta.scales[name]
                raw = meta.whole[name] = ds[: meta.length]
        return raw[frames].astype(np.float64) * meta.scales[name]

    def _grid(self, name: str) -> ChunkGrid | None:
        """Dataset ``name``'s chunk grid (None if it is not chunked)."""
        grid = self._meta.grids.get(name)
        if grid is None:
            ds = self._share().dataset(name)
            if ds.chunks is None:
                return None
            grid = self._meta.grids[name] = ChunkGrid(ds)
        return grid

    def _confirm(self, name: str, frames: np.ndarray) -> None:
        """Raise StoreCorruptedError unless HDF5's index finds every chunk of dataset ``name``
        holding ``frames`` (every frame below the length holds data: MDTraj files are dense)."""
        lost = self._lost(name, frames)
        if lost:
            raise StoreCorruptedError(lost[0])

    def _lost(self, name: str, frames: np.ndarray) -> list[str]:
        """A message per chunk of dataset ``name`` holding ``frames`` that the index does not find."""
        grid = self._grid(name)
        if grid is None:
            return []
        chunks = grid.unseen(frames)
        lost = grid.unfound(chunks)
        grid.seen[chunks] = True
        grid.seen[[lo // grid.step for lo, *_ in lost]] = False
        return [
            f"{self._path}: dataset /{name} rows {lo}-{min(lo + grid.step, self._meta.length) - 1} are "
            "damaged: HDF5's chunk index does not find the chunk holding them, so they would read as "
            "fill values; restore the file from a copy"
            for lo, *_ in lost
        ]

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
        with self._writing():  # plan from the last commit
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
        with self._writing():
            data, _ = self._encode(rows, lambda j: f"row {int(idx[j])}")
            targets, last = np.unique(idx[::-1], return_index=True)  # a repeated row: the last value wins
            source = len(idx) - 1 - last
            with self._writer(2 * estimate(list(data.values())) + len(data) * (1 << 17)) as f:
                for name, values in data.items():
                    f[name][targets] = values[source]
            self._written(self._meta.length)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        with self._writing():  # read and rewrite as one step
            idx = np.asarray(indices, dtype=np.int64).tolist()
            merged: dict[int, dict[str, Any]] = {}
            for i, row, update in zip(idx, self.read_rows(idx), updates, strict=True):
                merged[i] = {**merged.get(i, row), **update}
            self.set_rows(list(merged), list(merged.values()))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write call, planned from the last commit: the handle's lock, then the store lock
        (one writer per file across processes) from planning to commit."""
        with self._share().lock, store_lock(self._path).exclusive(), self._reading():
            yield

    @contextmanager
    def _writer(self, nbytes: int) -> Iterator[Any]:
        """The file opened for one all-or-nothing write of about ``nbytes`` (see
        :mod:`._hdf5_journal`); every handle of this process reloads after."""
        try:
            with self._share().writer(nbytes) as f:
                yield f
        except BaseException:
            self._meta = _Meta(generation=None)  # whatever happened, look again before the next use
            raise

    def _written(self, length: int, reload: bool = False) -> None:
        """Adopt what this handle just wrote (``length`` frames) without parsing the file again."""
        shared = self._share()
        if reload:
            self._meta = self._load(shared.reader(), shared.generation)
        else:
            self._meta = replace(self._meta, generation=shared.generation, length=length, whole={}, box=None)

    def _initialize(self, f: Any, data: dict[str, np.ndarray], topology: tuple[str, list[str]]) -> None:
        """Create the root attributes, the topology and empty datasets of a new file."""
        for name in [*UNITS, "topology"]:
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
            ds.attrs["units"] = np.bytes_(UNIT_WRITTEN[name])
        attrs = {
            "title": self._options["title"],
            "application": "asebytes-nodes",
            "program": "asebytes-nodes",
            "programVersion": __version__,
            TOPOLOGY_ATTR: " ".join(topology[1]),
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
            check_keys(row, expected, where(j), new)
        n_atoms = len(rows[0]["arrays.positions"]) if new else meta.n_atoms
        if n_atoms == 0:
            raise InvalidDataError(f"{where(0)}: a frame without atoms cannot start an MDTraj file")
        positions = stack(rows, "arrays.positions", n_atoms, where, (3,))  # the atom count first
        topology = {k: stack(rows, k, n_atoms, where) for k in TOPOLOGY if k in expected}
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
        data = {"coordinates": on_disk("coordinates", positions)}
        if "arrays.momenta" in expected:
            momenta = stack(rows, "arrays.momenta", n_atoms, where, (3,))
            data["velocities"] = on_disk("velocities", momenta / atomic_masses[numbers][:, None])
        for key, name in SCALARS.items():
            if key in expected:
                data[name] = on_disk(name, scalars(rows, key, where))
        box = cell_parameters(rows, where, None if new else "cell_lengths" in meta.scales)
        if box is not None:
            data["cell_lengths"] = on_disk("cell_lengths", box[0])
            data["cell_angles"] = on_disk("cell_angles", box[1])
        if not new:
            return data, None
        return data, (topology_json(numbers, {k: v[0] for k, v in topology.items()}), sorted(topology))

"""Writing our H5MD stores: one write session creates, grows and fills the datasets of a
:class:`~._table.Batch` inside the undo journal of :mod:`.._hdf5_journal`, and publishes the
column table last."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase.data import atomic_masses

from ... import __version__
from .._hdf5_files import SharedFile
from .._hdf5_journal import CHECKSUM, estimate, seal
from ._chunks import Chunks
from ._clock import Clock
from ._plan import CREATOR, ORIGIN, PRIVATE, TABLE, take
from ._table import Batch, fill, storage_dtype
from ._units import UNITS, VELOCITY_UNIT

__all__ = ["VELOCITY_SOURCES", "velocities", "write"]

_CHUNK_BYTES = 1 << 15  # per-frame datasets (read whole, or mirrored: see _gather)
_ATOM_CHUNK_BYTES = 1 << 12  # per-atom datasets: a random row decodes little (see the package doc)
#: The keys the derived velocity element is computed from.
VELOCITY_SOURCES = ["arrays.momenta", "arrays.masses", "arrays.numbers"]


def write(
    shared: SharedFile,
    group: str,
    options: dict[str, Any],
    batch: Batch,
    where: np.ndarray,
    pbc: Any,
    velocity: np.ndarray | None,
) -> None:
    """Write ``batch`` (rows ``where``) into particle group ``group`` as one all-or-nothing write;
    ``pbc``: of the first frame, for a new box's boundary; ``velocity``: the derived velocity rows."""
    clock = batch.clock
    payload = estimate([velocity, clock.steps, clock.times, *(data for _, _, data in batch.columns.values())])
    nbytes = 2 * payload + len(batch.columns) * (1 << 17)  # data, its journal, and chunk rewrites
    table = batch.table
    with shared.writer(nbytes) as f, _Edits(f) as edits, Chunks() as chunks:
        writer = _Writer(f, edits, chunks, group, options, table, batch.n0, batch.new)
        writer.metadata()
        writer.layout(pbc)  # no rows: a new group's 0-frame store (the backend skips existing ones)
        for path in batch.replaced:  # retyped columns: their old elements go with the write
            edits.set_aside(path)
        writer.clock(clock, where if batch.counted else where[:0], batch.counts)
        writer.placeholders()
        for key, spec in table["columns"].items():
            at, present, data = batch.columns.get(key, (where[:0], np.zeros(0, bool), None))
            writer.column(key, spec, at, present, data)
        if table["velocity"]:
            writer.velocity(where, velocity)
        writer.commit()
    if clock.note is not None:
        warnings.warn(f"{shared.path}, group {group!r}: {clock.note}", UserWarning, stacklevel=4)


def velocities(
    rows: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    counts: np.ndarray,
    width: int,
    drop: Sequence[str],
) -> np.ndarray:
    """The derived velocity rows (Angstrom/ps, NaN padded) of the frames being written, from the
    rows written over the ``stored`` values (of :data:`VELOCITY_SOURCES`) they update."""
    out = np.full((len(rows), width, 3), np.nan)
    for j, (row, old) in enumerate(zip(rows, stored, strict=True)):
        merged = {k: v for k, v in {**old, **row}.items() if k not in drop}
        momenta, n = merged.get("arrays.momenta"), int(counts[j])
        if momenta is None or not n:
            continue
        masses = merged.get("arrays.masses")
        if masses is None:
            masses = atomic_masses[merged.get("arrays.numbers", np.zeros(n, np.int64))]
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero mass: inf, as ASE would give
            out[j, :n] = momenta / masses[:, None] * VELOCITY_UNIT[1]
    return out


class _Edits:
    """The structural edits of one write (groups made, datasets replaced). A failed write needs no
    undo here: :func:`.._hdf5_journal.journaled` puts the file's old bytes back."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.backups: dict[str, str] = {}
        self.groups: dict[str, Any] = {}  # groups known to exist (HDF5 lookups of missing paths are slow)

    def __enter__(self) -> _Edits:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            for backup in self.backups.values():
                del self.f[backup]

    def group(self, path: str, new: bool = False) -> Any:
        """The group at ``path`` (``new``: known not to exist), created and logged with its parents."""
        group = self.groups.get(path)
        if group is None:
            group = None if new else self.f.get(path)
            if group is None:
                parent = path.rpartition("/")[0]
                if parent:
                    self.group(parent)
                group = self.f.create_group(path)
            self.groups[path] = group
        return group

    def dataset(self, path: str, **kwargs: Any) -> Any:
        parent, _, name = path.rpartition("/")
        return self.group(parent).create_dataset(name, **kwargs)

    def resize(self, ds: Any, shape: tuple[int, ...]) -> None:
        if ds.shape != shape:
            ds.resize(shape)

    def set_aside(self, path: str) -> None:
        """Move ``path`` out of the way; deleted when the write succeeds."""
        backup = f"{path}.replaced"
        self.f.move(path, backup)
        self.backups[path] = backup


class _Writer:
    """Creates, grows and fills the datasets of one write session."""

    def __init__(
        self,
        f: Any,
        edits: _Edits,
        chunks: Chunks,
        group: str,
        options: dict[str, Any],
        table: dict[str, Any],
        n0: int,
        fresh: set[str],
    ) -> None:
        self.f, self.edits, self.group, self.options, self.table = f, edits, group, options, table
        self.chunks = chunks  # whole chunks of contiguous writes, deflated in threads
        self.n0 = n0  # committed length before this write
        self.fresh = fresh  # keys (and "velocity") whose datasets this write creates
        self.private = f"{PRIVATE}/{group}"

    def metadata(self) -> None:
        """The /h5md group: version, author and creator."""
        edits = self.edits
        if "h5md" not in self.f:
            h5md = edits.group("h5md")
            h5md.attrs["version"] = np.array([1, 1], np.int32)
            author = h5md.create_group("author")
            author.attrs["name"] = self.options["author_name"]
            if self.options["author_email"] is not None:
                author.attrs["email"] = self.options["author_email"]
            creator = h5md.create_group("creator")
            creator.attrs["name"] = CREATOR
            creator.attrs["version"] = __version__

    def layout(self, pbc: Any) -> None:
        """The particle group with its box, and the private group. The boundary is the first
        frame's pbc: the first frames into a 0-frame store (an empty write's) set it again."""
        edits = self.edits
        path = f"particles/{self.group}/box"
        if not self.n0 or path not in self.f:
            box = edits.group(path)
            periodic = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool).reshape(3)
            box.attrs["dimension"] = np.int32(3)
            box.attrs["boundary"] = ["periodic" if p else "none" for p in periodic]
        edits.group(self.private)

    def placeholders(self) -> None:
        """A 0-frame store's empty ``species`` and ``box/edges`` elements: znh5md takes a group's
        length from ``species/value`` and reads ``box/edges/value``, so it reads the store as 0
        frames (one particle wide, so reading frame 0 is out of range, not an empty frame). The
        first frames set them aside for their own elements. Such a store is layout version 3
        (:data:`._clock.CLOCK_VERSION`): asebytes-nodes before the placeholders refuses it."""
        for name, shape, dtype in (("species", (0, 1), np.int64), ("box/edges", (0, 3, 3), np.float64)):
            path = f"particles/{self.group}/{name}"
            if self.table["length"]:
                if not self.n0 and path in self.f:
                    self.edits.set_aside(path)
                continue
            if path not in self.f:
                self.edits.dataset(f"{path}/value", shape=shape, maxshape=(None,) * len(shape), dtype=dtype)
                self._link_clock(self.edits.group(path))

    def _link_clock(self, element: Any) -> None:
        """An element's H5MD ``step`` and ``time``: hard links to the store's clock."""
        element["step"], element["time"] = self.f[f"{self.private}/step"], self.f[f"{self.private}/time"]

    def _private(self, name: str, dtype: Any, exists: bool, fill: Any = None) -> Any:
        """The private per-frame dataset ``name``, grown to the table's length."""
        path, n = f"{self.private}/{name}", self.table["length"]
        if exists:
            ds = self.f[path]
            self.edits.resize(ds, (n,))
            return ds
        rows = max(1, _CHUNK_BYTES // np.dtype(dtype).itemsize)
        extra = {} if fill is None else {"fillvalue": fill}
        return self.edits.dataset(
            path, shape=(n,), maxshape=(None,), chunks=(rows,), dtype=dtype, **extra, **self._filters(dtype)
        )

    def _filters(self, dtype: Any) -> dict[str, Any]:
        """Compression options of every dataset, and a checksum per chunk (fixed-size values
        only: HDF5 keeps variable-length ones outside the chunk)."""
        checksum = {} if np.dtype(dtype).kind == "O" else CHECKSUM
        if self.options["compression"] is None:
            return checksum
        return {
            "compression": self.options["compression"],
            "compression_opts": self.options["compression_opts"],
            **checksum,
        }

    def clock(self, clock: Clock, where: np.ndarray, counts: np.ndarray) -> None:
        """The step and time the write sets (:mod:`._clock`); atom counts of the frames at ``where``."""
        made = self.n0 > 0 or "step" in self.edits.group(self.private)  # a 0-frame store has them too
        step = self._private("step", np.int64, made)
        time = self._private("time", np.float64, made)
        if not made:
            time.attrs["unit"] = "fs"
        if len(clock.rows):
            self.put(step, clock.rows, clock.steps)
            self.put(time, clock.rows, clock.times)
        n_atoms = self._private("n_atoms", np.int64, made)
        if len(where):
            self.put(n_atoms, where, counts[where])

    def _value(
        self,
        path: str,
        dtype: np.dtype[Any],
        tail: tuple[int, ...],
        atom: bool,
        origin: str | None,
        unit: str | None,
        exists: bool,
    ) -> Any:
        """The value dataset at ``path`` shaped (length[, width], *tail), created as an element."""
        n, width = self.table["length"], self.table["width"]
        shape = (n, width, *tail) if atom else (n, *tail)
        ds = self.f[path] if exists else None
        old = None
        if ds is not None and ds.dtype != dtype and dtype.kind == "f":  # species turn float once padded
            old = ds[...]
            self.edits.set_aside(path)
            ds = None
        if ds is not None:
            self.edits.resize(ds, shape)
            return ds
        if old is None and not path.startswith(PRIVATE):  # a new element: step and time from the clock
            group = self.edits.group(path.rpartition("/")[0], new=True)
            self._link_clock(group)
            if origin is not None:
                group.attrs[ORIGIN] = origin
        vlen = dtype.kind == "O"
        row_bytes = 16 if vlen else dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        options: dict[str, Any] = {} if vlen else {"fillvalue": fill(dtype)}
        ds = self.edits.dataset(
            path,
            shape=shape,
            maxshape=(None, *((None,) if atom else ()), *tail),
            chunks=(
                max(1, (_ATOM_CHUNK_BYTES if atom else _CHUNK_BYTES) // max(1, row_bytes)),
                *(max(1, s) for s in shape[1:]),
            ),
            dtype=dtype,
            **options,
            **self._filters(dtype),
        )
        if unit is not None:
            ds.attrs["unit"] = unit
        if old is not None:
            ds[: old.shape[0], : old.shape[1]] = old
        return ds

    def column(self, key: str, spec: dict[str, Any], at: np.ndarray, present: np.ndarray, data: Any) -> None:
        """Grow column ``key``'s datasets to the table and write ``data`` at rows ``at``."""
        standard = key in ("arrays.positions", "arrays.numbers", "cell", "pbc")  # znh5md maps these by name
        origin = None if standard or spec["kind"] == "object" else key.partition(".")[0]
        ds = self._value(
            spec["path"],
            storage_dtype(spec, self.table),
            tuple(spec["shape"]),
            spec["kind"] == "atom",
            origin,
            UNITS.get(key),
            key not in self.fresh,
        )
        if data is not None and len(at):
            self.put(ds, at, data)
        self._presence(spec, at, present)

    def _presence(self, spec: dict[str, Any], at: np.ndarray, present: np.ndarray) -> None:
        """Keep ``count`` and the presence flags of a column right after writing rows ``at``."""
        n0, n1 = self.n0, self.table["length"]
        name = f"present/{spec['id']}"
        exists = spec.get("flags", False)
        before = spec["count"]
        old = at[at < n0]
        if exists:
            was = int(np.count_nonzero(take(self.f[f"{self.private}/{name}"], old))) if len(old) else 0
        else:
            was = len(old) if before == n0 else 0  # no flags: every old frame has it, or (new) none
        spec["count"] = before - was + int(np.count_nonzero(present))
        if not exists and spec["count"] == n1:
            return
        flags = self._private(name, np.bool_, exists, fill=False)
        if not exists and before == n0 and n0:
            flags[:n0] = True
        spec["flags"] = True
        if len(at):
            self.put(flags, at, present)

    def velocity(self, where: np.ndarray, data: np.ndarray | None) -> None:
        """The derived velocity element, for programs that read velocities."""
        path = f"particles/{self.group}/velocity/value"
        ds = self._value(
            path, np.dtype(np.float64), (3,), True, "info", VELOCITY_UNIT[0], "velocity" not in self.fresh
        )
        if data is not None:
            self.put(ds, where, data)

    def commit(self) -> None:
        """Store the pending chunks, then publish the table (with its CRC-32): the one write
        that makes the new rows visible."""
        self.chunks.flush()
        seal(self.f[self.private].attrs, TABLE, self.table)

    def put(self, ds: Any, rows: np.ndarray, data: Any) -> None:
        """Write ``data`` at sorted unique ``rows`` of a dataset."""
        if data.dtype == object:  # h5py writes arrays of variable-length values only through write_direct
            cuts = np.flatnonzero(np.diff(rows) != 1) + 1
            for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
                ds.write_direct(data, np.s_[start:stop], np.s_[int(rows[start]) : int(rows[stop - 1]) + 1])
            return
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == len(rows):
            self.chunks.put(ds, lo, data)
        else:
            ds[rows] = data

"""Rows of H5MD datasets for random and batched reads: decoded copies filled chunk by chunk, and
training batches gathered from them with numpy.

A dataset whose decoded size fits the file's budget (``cache_bytes``, shared by every store on
the file in this process) gets a *mirror*: an uninitialised array of its shape (the operating
system commits its pages only as they are written) into which whole HDF5 chunks are read the
first time a request touches them, each run of missing chunks in one slab read. A row read
again is a numpy index, with no h5py call. Larger datasets are read per request: each needed
row once (HDF5 decodes every chunk it touches once), per-atom datasets only up to the widest
frame asked for. Mirrors belong to the shared handle and go when it is reopened (the file
changed) or closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from .._hdf5_files import SharedFile
from .._hdf5_journal import checked
from ._plan import Col, Plan, take

__all__ = ["DEFAULT_CACHE_BYTES", "Mirror", "fast_batch", "rows_of"]

#: Decoded bytes of mirrored datasets per file and process, unless ``cache_bytes=`` says otherwise.
DEFAULT_CACHE_BYTES = 64 << 20
_VLEN_ITEM_BYTES = 96  # what a short str or bytes object and its pointer take, counted per value


class Mirror:
    """A decoded copy of one chunked dataset, filled one chunk run at a time. Variable-length
    values (strings, encoded blobs) are kept as the object arrays h5py reads, filled row by row:
    turning a value into a Python object costs more than decoding its chunk, so only the rows
    asked for are converted (a first frame reads one string, not a chunk of 2,048)."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        vlen = ds.dtype.kind == "O"
        self.text = vlen and h5py.check_string_dtype(ds.dtype) is not None
        self.data = np.empty(ds.shape, ds.dtype)  # pages are committed as chunks are read in
        self.step = 1 if vlen else int(ds.chunks[0])
        self.loaded = np.zeros(-(-len(self.data) // self.step), bool)

    def fill(self, rows: np.ndarray) -> np.ndarray:
        """The mirror, with the chunks holding ``rows`` (int64) read in."""
        chunks = rows // self.step
        if self.loaded[chunks].all():
            return self.data
        needed = np.zeros(len(self.loaded), bool)  # no sort: large requests touch many chunks
        needed[chunks] = True
        missing = np.flatnonzero(needed & ~self.loaded)
        cuts = np.flatnonzero(np.diff(missing) != 1) + 1
        runs = [
            (int(run[0]) * self.step, min(len(self.data), (int(run[-1]) + 1) * self.step))
            for run in np.split(missing, cuts)
        ]
        with checked(self.ds, np.array([runs[0][0], runs[-1][1] - 1])):
            self._read_runs(runs)
        self.loaded[missing] = True
        return self.data

    def _read_runs(self, runs: list[tuple[int, int]]) -> None:
        """Rows ``lo:hi`` of every run in one HDF5 read (one selection, each chunk decoded once);
        variable-length text is decoded from UTF-8 as h5py's ``asstr()`` does."""
        space = self.ds.id.get_space()
        space.select_none()
        tail = self.data.shape[1:]
        for lo, hi in runs:
            space.select_hyperslab((lo, *(0 for _ in tail)), (hi - lo, *tail), op=h5py.h5s.SELECT_OR)
        self.ds.id.read(space, space, self.data)
        if self.text:
            for lo, hi in runs:
                flat = self.data[lo:hi].reshape(-1)  # a view: the mirror's own rows
                flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in flat.tolist()]


def _mirror(shared: SharedFile, path: str, limit: int) -> Mirror | None:
    """The mirror of dataset ``path``, made if it fits what is left of ``limit``; None: read it
    from the file."""
    cache = shared.mirrors
    if path in cache:
        return cache[path]
    ds = shared.dataset(path)
    mirror = None
    if isinstance(ds, h5py.Dataset) and ds.chunks is not None:
        itemsize = _VLEN_ITEM_BYTES if ds.dtype.kind == "O" else ds.dtype.itemsize
        size = itemsize * int(np.prod(ds.shape, dtype=np.int64))
        if shared.mirror_bytes + size <= limit:
            mirror = Mirror(ds)
            shared.mirror_bytes += size
    cache[path] = mirror
    return mirror


def rows_of(shared: SharedFile, path: str, rows: np.ndarray, limit: int) -> Any:
    """Rows ``rows`` (sorted unique int64) of dataset ``path``."""
    source, whole = _source(shared, path, rows, limit)
    return source[rows] if whole else source


def _source(
    shared: SharedFile, path: str, rows: np.ndarray, limit: int, width: int | None = None
) -> tuple[Any, bool]:
    """Where rows ``rows`` (sorted unique int64) of dataset ``path`` are: (the mirror, True) to
    index with store rows, or (those rows read, per-atom ones up to ``width`` particles, False)."""
    mirror = _mirror(shared, path, limit)
    if mirror is not None:
        return mirror.fill(rows), True
    ds = shared.dataset(path)
    if width is not None and width < ds.shape[1]:
        ds = _Narrow(ds, width)
    return take(ds, rows), False


class _Narrow:
    """A dataset seen only up to ``width`` along its second axis (what :func:`take` reads)."""

    def __init__(self, ds: Any, width: int) -> None:
        self.ds, self.width = ds, width
        self.name, self.file = ds.name, ds.file  # for the damaged-chunk message

    def __getitem__(self, rows: Any) -> Any:
        return self.ds[rows, : self.width]


# -- training batches ---------------------------------------------------------------------------
_NUMERIC = ("atom", "frame", "scalar")


def _plain(col: Col) -> bool:
    """A column of our own layout read as stored, without conversion (the fast path's columns)."""
    return (
        col.kind in _NUMERIC
        and col.path is not None
        and col.values is None
        and col.rows is None
        and not (col.velocity or col.nan_missing or col.cuboid or col.json)
        and col.width is None
        and col.scale == 1.0
    )


def fast_batch(
    shared: SharedFile,
    plan: Plan,
    indices: np.ndarray,
    keys: Sequence[str] | None,
    atoms: np.ndarray | slice | None,
    limit: int,
) -> dict[str, Any] | None:
    """The batch of ``indices`` as arrays, gathered with numpy from each dataset read once; None
    when a key needs the general path (missing in some rows, not numeric, another program's
    conversion)."""
    from ...batch import atom_gather

    if plan.counts is None:
        return None
    cols = plan.cols
    if keys is None:
        if any(c.kind in _NUMERIC and not _plain(c) for c in cols.values()):
            return None
        wanted = [cols[k] for k in sorted(cols) if _plain(cols[k])]
        wanted = [c for c in wanted if _all_present(shared, c, indices, limit)]
    else:
        wanted = [cols.get(k) for k in keys]  # type: ignore[misc]
        if not all(c is not None and _plain(c) and _all_present(shared, c, indices, limit) for c in wanted):
            return None
    counts = plan.counts[indices]
    per_atom = any(c.kind == "atom" for c in wanted)
    if per_atom or atoms is not None:
        frame_of = np.repeat(indices, counts)  # store row of every atom of the batch
        atom_of = np.arange(len(frame_of), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        if atoms is not None:
            gather, counts = atom_gather(counts, atoms, indices)
            frame_of, atom_of = frame_of[gather], atom_of[gather]
    batch: dict[str, Any] = {"n_atoms": counts}
    frames: np.ndarray | None = None  # sorted unique rows: made for the first dataset read from the file
    for col in wanted:
        atom = col.kind == "atom"
        mirror = _mirror(shared, col.path, limit)  # type: ignore[arg-type]
        if mirror is not None:
            data, rows = mirror.fill(indices), frame_of if atom else indices
        else:
            frames = np.unique(indices) if frames is None else frames
            width = int(atom_of.max()) + 1 if atom and len(atom_of) else None
            data = np.asarray(_source(shared, col.path, frames, limit, width)[0])  # type: ignore[arg-type]
            rows = np.searchsorted(frames, frame_of if atom else indices)
        if atom:  # one take from the (rows x particles) view: no per-frame work
            flat = data.reshape(data.shape[0] * data.shape[1], *data.shape[2:])
            values = flat.take(rows * data.shape[1] + atom_of, axis=0)
        else:
            values = data.take(rows, axis=0)
        if col.dtype is not None and values.dtype != col.dtype:
            values = values.astype(col.dtype)  # species stored as float once atom counts differ
        batch[col.key] = values
    return batch


def _all_present(shared: SharedFile, col: Col, rows: np.ndarray, limit: int) -> bool:
    return col.flags is None or bool(np.asarray(rows_of(shared, col.flags, rows, limit)).all())

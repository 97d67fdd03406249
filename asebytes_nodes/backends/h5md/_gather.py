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
    values (strings, encoded blobs) are kept as the object arrays h5py reads."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        self.text = ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is not None
        self.data = np.empty(ds.shape, ds.dtype)  # pages are committed as chunks are read in
        self.step = int(ds.chunks[0])
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
        for run in np.split(missing, cuts):
            lo, hi = int(run[0]) * self.step, min(len(self.data), (int(run[-1]) + 1) * self.step)
            with checked(self.ds, slice(lo, hi)):
                if self.data.dtype.kind == "O":  # h5py reads variable-length values only this way
                    self.data[lo:hi] = (self.ds.asstr() if self.text else self.ds)[lo:hi]
                else:
                    self.ds.read_direct(self.data, np.s_[lo:hi], np.s_[lo:hi])
            self.loaded[run] = True
        return self.data


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

    counts_all = plan.counts
    if counts_all is None:
        return None
    frames = np.unique(indices)
    cols = plan.cols
    if keys is None:
        wanted = [cols[k] for k in sorted(cols) if _plain(cols[k])]
        wanted = [c for c in wanted if _all_present(shared, c, frames, limit)]
        if any(c.kind in _NUMERIC and not _plain(c) for c in cols.values()):
            return None
    else:
        wanted = [cols.get(k) for k in keys]  # type: ignore[misc]
        if not all(c is not None and _plain(c) and _all_present(shared, c, frames, limit) for c in wanted):
            return None
    counts = counts_all[indices]
    batch: dict[str, Any] = {}
    per_atom = [c for c in wanted if c.kind == "atom"]
    if per_atom or atoms is not None:
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        frame_of = np.repeat(indices, counts)  # store row of every atom of the batch
        atom_of = np.arange(len(frame_of), dtype=np.int64) - starts  # its index in its frame
        if atoms is not None:
            gather, counts = atom_gather(counts, atoms, indices)
            frame_of, atom_of = frame_of[gather], atom_of[gather]
    batch["n_atoms"] = counts
    pos = np.searchsorted(frames, indices)
    width = int(atom_of.max()) + 1 if per_atom and len(atom_of) else None
    for col in wanted:
        cut = width if col.kind == "atom" else None
        source, whole = _source(shared, col.path, frames, limit, cut)  # type: ignore[arg-type]
        data = np.asarray(source)
        if col.kind == "atom":  # one take from the (rows x particles) view: no per-frame work
            rows = frame_of if whole else np.searchsorted(frames, frame_of)
            flat = data.reshape(data.shape[0] * data.shape[1], *data.shape[2:])
            values = flat.take(rows * data.shape[1] + atom_of, axis=0)
        else:
            values = data.take(indices if whole else pos, axis=0)
        if col.dtype is not None and values.dtype != col.dtype:
            values = values.astype(col.dtype)  # species stored as float once atom counts differ
        batch[col.key] = values
    return batch


def _all_present(shared: SharedFile, col: Col, frames: np.ndarray, limit: int) -> bool:
    return col.flags is None or bool(np.asarray(rows_of(shared, col.flags, frames, limit)).all())

"""Whole chunks written directly: a write's deflate runs in threads, outside HDF5.

HDF5 compresses chunks one at a time under h5py's lock; for a store of many small chunks (per-atom
datasets are chunked at about 4 KiB, see the package doc) that was most of an ``extend``. Here a
write's whole chunks are cut from its data with numpy, deflated by :mod:`zlib` in a thread pool
(zlib releases the GIL), given HDF5's fletcher32 checksum (:func:`fletcher32`, vectorised) and
stored with ``H5Dwrite_chunk``: the bytes on disk are the ones HDF5's own filters produce (same
pipeline, same filter mask), so every HDF5 reader decodes them and a damaged chunk fails its
checksum as before. It goes through the same file object, so the undo journal covers it.

Only datasets whose pipeline is deflate and/or fletcher32 (in HDF5's order) of fixed-size numbers
qualify; rows a write shares a chunk with (the first and last chunk of a write that starts or
ends inside one) go through HDF5, which merges them with the stored rows.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from h5py import h5z

__all__ = ["Chunks", "fletcher32"]

_THREADED_BYTES = 1 << 18  # smaller writes compress inline (thread start-up would cost more)
_TASK_BYTES = 1 << 18  # chunks per thread task: about this much data
_MAX_CHUNK = 1 << 23  # larger chunks go through HDF5 (see fletcher32)


def fletcher32(blobs: list[bytes]) -> np.ndarray:
    """HDF5's fletcher32 of each blob (``H5_checksum_fletcher32``: big-endian 16-bit words, an
    odd last byte as a high byte, both sums folded to 1..65535 unless all words are zero); exact
    for blobs up to 16 MiB each (taken at most 16 MiB at a time, the sums stay within int64)."""
    sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
    if len(blobs) > 1 and sizes.sum() > 1 << 24:
        half = len(blobs) // 2
        return np.concatenate([fletcher32(blobs[:half]), fletcher32(blobs[half:])])
    words = (sizes + 1) // 2  # none is empty
    w = np.frombuffer(b"".join(b + b"\0" if len(b) % 2 else b for b in blobs), ">u2").astype(np.int64)
    starts = np.cumsum(words) - words
    sum1 = np.add.reduceat(w, starts)
    w *= np.arange(len(w))  # sum2 adds word j (of n) n - j times: (start + n) * sum1 - sum of g * w[g]
    sum2 = (starts + words) * sum1 - np.add.reduceat(w, starts)
    nonzero = sum1 > 0  # else both sums are 0
    sum1, sum2 = (np.where(nonzero, (s - 1) % 65535 + 1, 0) for s in (sum1, sum2))
    return (sum2 << 16) | sum1


def _pipeline(ds: Any) -> tuple[int | None, bool] | None:
    """(deflate level or None, fletcher32) of a dataset whose filters we apply ourselves, else None."""
    plist = ds.id.get_create_plist()
    level, checksum = None, False
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        if code == h5z.FILTER_DEFLATE and level is None and not checksum and len(values) == 1:
            level = int(values[0])
        elif code == h5z.FILTER_FLETCHER32 and not checksum:
            checksum = True
        else:
            return None
    return level, checksum


def _filtered(views: list[memoryview], level: int | None, checksum: bool) -> list[bytes]:
    """The chunks (bytes) as HDF5's pipeline stores them: deflated (``level``), then checksummed."""
    blobs = [zlib.compress(v, level) for v in views] if level is not None else [bytes(v) for v in views]
    if not checksum:
        return blobs
    return [blob + int(s).to_bytes(4, "little") for blob, s in zip(blobs, fletcher32(blobs), strict=True)]


def _cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Chunks:
    """The whole chunks of one write session, deflated as they are handed in (in threads for large
    writes) and stored by :meth:`flush`. A dataset written here is not read again before that."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, list[tuple[int, ...]], list[Future[list[bytes]] | list[bytes]]]] = []
        self.pool: ThreadPoolExecutor | None = None
        self.threads = min(4, _cpus())

    def __enter__(self) -> Chunks:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def put(self, ds: Any, lo: int, data: np.ndarray) -> None:
        """Write ``data`` from row ``lo`` of ``ds``: whole chunks here, the rest through HDF5."""
        pipeline = _pipeline(ds) if ds.chunks is not None and data.ndim == ds.ndim else None
        dtype = ds.dtype
        if (
            pipeline is None
            or dtype.kind not in "biuf"
            or data.shape[1:] != ds.shape[1:]
            or not np.can_cast(data.dtype, dtype, "safe")
            or dtype.itemsize * int(np.prod(ds.chunks)) > _MAX_CHUNK
        ):
            ds[lo : lo + len(data)] = data
            return
        step, hi = ds.chunks[0], lo + len(data)
        first = min(hi, -(-lo // step) * step)  # rows before it share a chunk with stored rows
        last = hi if hi == ds.shape[0] else max(first, hi // step * step)  # after it: shares one too
        if first > lo:
            ds[lo:first] = data[: first - lo]
        if last < hi:
            ds[last:hi] = data[last - lo :]
        if last > first:
            self._tiles(ds, first, np.asarray(data[first - lo : last - lo], dtype), pipeline)

    def _tiles(self, ds: Any, lo: int, data: np.ndarray, pipeline: tuple[int | None, bool]) -> None:
        """Cut ``data`` (rows from chunk-aligned ``lo``) into whole chunks and start deflating them."""
        shape = ds.chunks
        grid = [-(-n // c) for n, c in zip(data.shape, shape, strict=True)]
        if not all(grid):  # frames of no atoms: HDF5 keeps no chunk either
            return
        padded = tuple(g * c for g, c in zip(grid, shape, strict=True))
        if padded != data.shape:  # the last chunk reaches past the dataset's end: HDF5 fills it so
            block = np.full(padded, ds.fillvalue, data.dtype)
            block[tuple(slice(0, n) for n in data.shape)] = data
            data = block
        if any(g > 1 for g in grid[1:]):  # chunked across frames too (the atom axis grew): tile order
            split = data.reshape([x for g, c in zip(grid, shape, strict=True) for x in (g, c)])
            data = split.transpose([*range(0, 2 * ds.ndim, 2), *range(1, 2 * ds.ndim, 2)])
        data = np.ascontiguousarray(data)
        offsets = [tuple(i * c for i, c in zip(at, shape, strict=True)) for at in np.ndindex(*grid)]
        offsets = [(lo + at[0], *at[1:]) for at in offsets]
        size = data.itemsize * int(np.prod(shape))
        flat = data.reshape(-1).view(np.uint8).data  # a memoryview of the bytes
        views = [flat[i * size : (i + 1) * size] for i in range(len(offsets))]
        if len(views) * size < _THREADED_BYTES or self.threads < 2:
            work: list[Future[list[bytes]] | list[bytes]] = [_filtered(views, *pipeline)]
        else:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="asebytes-deflate")
            per = max(1, _TASK_BYTES // size)
            work = [
                self.pool.submit(_filtered, views[i : i + per], *pipeline) for i in range(0, len(views), per)
            ]
        self.pending.append((ds, offsets, work))

    def flush(self) -> None:
        """Store every chunk handed in, in order, each with its checksum."""
        for ds, offsets, work in self.pending:
            write = ds.id.write_direct_chunk
            blobs = (blob for part in work for blob in (part if isinstance(part, list) else part.result()))
            for at, blob in zip(offsets, blobs, strict=True):
                write(at, blob)
        self.pending.clear()

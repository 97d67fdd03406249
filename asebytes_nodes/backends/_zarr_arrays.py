"""Array access of :class:`~._zarr.ZarrBackend`: handles, cached decoded columns, slabs and
gathers of rows, and writes of row ranges.

Reads of local arrays laid out as :mod:`._zarr_shards` writes them go chunk by chunk through
:mod:`._zarr_chunks` (its byte-bounded cache of decoded chunks); the others through zarr, with
a decoded copy of whole arrays kept in the same cache (zarr v3 costs a fixed ~0.5-1 ms per
array read). Writes of a local store
with a Blosc compressor (or none) go to :mod:`._zarr_shards`; the others through zarr,
inside ``extend`` all in one concurrent batch (:meth:`ArrayAccess._write_range`). On an
object store a write into a fork (see :mod:`._zarr_remote`) starts at the shard object it
falls in, with the committed rows there read first.

Inner chunks are 8 KiB and shards 16 MiB by default (``chunk_bytes``, ``shard_bytes``; a
shard index keeps 2,048 chunk entries, 32 KiB, as 16 KiB / 32 MiB did). Random rows and
shuffled batches decode about one inner chunk per per-atom array per frame, so the bytes a
chunk holds set their cost. Measured 2026-12-04 on a loaded 2-CPU machine (CPU time, fresh
process, store opened inside; 16 KiB / 32 MiB -> 8 KiB / 16 MiB): shuffled batches of 32
(300 of them) through ``to_batch`` on 100,000 periodic frames of 8-128 atoms 507-558 ->
384-385 ms, on 20,000: 180-200 -> 172-178 ms; 100 random frames of ethanol-20000 22.5 -> 20.8
ms; open + first frame 4.4 -> 4.1 ms; the energy column of 100,000 frames 10.2 -> 9.5 ms;
read-all of 20,000 frames 1.88 -> 1.90 s. Sizes grow 0.7-0.8% (ethanol-20000 9.98 -> 10.06
MB, periodic-1000 5.21 -> 5.25 MB, 100,000 frames 329.7 -> 332.2 MB) and the 100,000-frame
store holds 46 files instead of 34. 4 KiB / 8 MiB reads as fast and costs 2.3% in size and
twice the files; 4 KiB / 32 MiB costs 14-21% on small stores (a 128 KiB index per shard).

Arrays of one row per frame with rows of more than 8 bytes (cells, stresses, per-frame
vectors) take chunks of as many frames as a column of 8-byte scalars (the energy: 1,024 frames
in 8 KiB), up to eight times ``chunk_bytes`` (``chunk_frames`` overrides it). A random row reads
one chunk of every array, and per-frame rows are small (a cell 72 bytes: 113 frames in 8 KiB,
so 1,000 random rows of 100,000 frames read about 600 cell chunks and 480 stress chunks
besides the ~3,400 per-atom ones); a chunk's fixed cost (a ``pread``, its checksum, a Python
step: about 10 us) dominates its bytes there. Scalar columns keep 8 KiB: every chunk of 64 KiB
made the energy column of 1,000 frames 6% slower (Blosc inflates a chunk's padding past the
last frame too, about 1 us a KiB here). Measured 2026-12-06 (fresh processes, store opened
inside, 6-10 alternating rounds, medians, 8 KiB -> these chunks): 1,000 random ``db[i]`` on
100,000 periodic frames 121 -> 102 ms, on 20,000 93 -> 88 ms; 300 shuffled batches of 32 on
100,000 frames 236 -> 201 ms; the energy column of periodic-1000 1.47 -> 1.49 ms; open + first
frame of periodic-1000 3.8 -> 3.7 ms; open + 100 random frames of ethanol-20000 12.9 -> 12.6 ms.
Sizes barely change (ethanol-20000 10.38 -> 10.32 MB, periodic-1000 5.44 MB either way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.api import asynchronous as zarr_async
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.core.sync import sync as zarr_sync

from ..options import BLOSC_COMPRESSORS, ZARR_COMPRESSORS
from ._columns import take
from ._zarr_chunks import ChunkCache, LazyGroup, ShardedArray, ragged_rows
from ._zarr_read import _ReadFailure
from ._zarr_remote import fork_array
from ._zarr_shards import handles, write_new_array, write_rows

#: Chunks of arrays of one row per frame hold at most this many times ``chunk_bytes`` (see above).
_FRAME_SPAN = 8


if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

__all__ = ["ArrayAccess", "compressors", "gather"]

# zarr writes all-zero shards too: a missing one is damage
WRITE_ALL: ArrayConfigParams = {"write_empty_chunks": True}


class ArrayAccess:
    """Mixin of :class:`~._zarr.ZarrBackend`: reading and writing rows of its arrays."""

    # provided by ZarrBackend
    _meta: dict[str, Any]
    _target: str
    _group: Any
    _layout: dict[str, Any]
    _compressors: list[Any]
    _direct: Any
    _arrays: dict[str, Any]
    _offsets: np.ndarray | None
    _cache: ChunkCache
    _cache_limit: int
    _remote: bool
    _deferred: list[Any] | None
    _forks: dict[str, str]
    _touched: bool
    _check_array: Callable[[str, Any], None]
    _read: Callable[..., np.ndarray]
    _extents: Callable[[], dict[str, tuple[int, np.dtype[Any]]]]

    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            self._touched = True
            try:
                arr = self._group[name]
            except Exception as exc:  # noqa: BLE001 - whatever zarr raises on a damaged document
                raise _ReadFailure(name) from exc
            self._check_array(name, arr)
            self._arrays[name] = arr
        return arr

    def _local(self, name: str) -> ShardedArray | None:
        """Array ``name`` read straight from its shard files (:mod:`._zarr_chunks`), or None
        when zarr must read it (object stores, other codecs or layouts)."""
        arrays = self._cache.arrays
        if name not in arrays:
            extent = None if self._remote else self._extents().get(name)
            self._touched = True
            root = Path(self._target)
            arrays[name] = None if extent is None else ShardedArray.open(root, name, extent[1], extent[0])
        return arrays[name]

    def _counts_name(self) -> str:
        return str(self._meta.get("n_atoms", "n_atoms"))

    def _atom_offsets(self) -> np.ndarray:
        """Cumulative atom counts of the committed frames (length + 1 entries)."""
        n = self._meta["length"]
        if self._offsets is None or len(self._offsets) != n + 1:
            counts = self._slab(self._counts_name(), n, 0, n, private=False)  # summed where they lie
            offsets = np.empty(n + 1, np.int64)  # summed in place: one array of n + 1, not three
            offsets[0] = 0
            np.cumsum(counts, dtype=np.int64, out=offsets[1:])
            self._offsets = offsets
        return self._offsets

    def _byte_offsets(self, spec: dict[str, Any]) -> np.ndarray:
        """Cumulative byte sizes of an object column's committed values (length + 1 entries),
        kept in the handle's cache: a random row would otherwise sum every frame's size."""
        n = self._meta["length"]
        key = ("bytes", spec["id"], n)  # a replaced column gets a new id; an extended one, a new n
        offsets = self._cache.get(key)
        if offsets is None:
            sizes = self._slab(spec["id"] + "/sizes", n, 0, n)
            offsets = self._cache.put(key, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))
        return offsets

    def _cached(self, name: str, extent: int, fill: bool = True) -> np.ndarray | None:
        """The first ``extent`` rows of array ``name``, decoded, if they fit in the cache
        (without ``fill``: only if they are there already)."""
        hit = self._cache.get(("column", name))
        if hit is not None and len(hit) == extent:
            return hit
        if not fill:
            return None
        arr = self._array(name)
        nbytes = extent * arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        if nbytes > self._cache_limit:
            return None
        hit = self._read(name, lambda a: a[:extent]) if extent else np.zeros((0, *arr.shape[1:]), arr.dtype)
        return self._cache.put(("column", name), hit)

    def _slab(
        self, name: str, extent: int, lo: int, hi: int, fill: bool = True, private: bool = True
    ) -> np.ndarray:
        """Rows ``lo:hi`` of array ``name`` (committed rows: ``extent``) as a private copy;
        ``fill=False`` reads only those rows unless the whole array is cached already;
        ``private=False``: a view of the cache where it holds them, for a caller that only reads it."""
        local = self._local(name)
        if local is not None:
            return self._cache.slab(local, extent, lo, hi, private)
        cached = self._cached(name, extent, fill)
        if cached is not None:
            return cached[lo:hi].copy() if private else cached[lo:hi]
        arr = self._array(name)
        return self._read(name, lambda a: a[lo:hi]) if hi > lo else np.zeros((0, *arr.shape[1:]), arr.dtype)

    def _take(self, name: str, extent: int, frames: np.ndarray) -> np.ndarray:
        """Rows ``frames`` (sorted, unique) of array ``name``: a private copy."""
        local = self._local(name)
        if local is not None:
            lo, hi = int(frames[0]), int(frames[-1]) + 1
            if hi - lo == len(frames):
                return self._cache.slab(local, extent, lo, hi)
            return self._cache.take(local, extent, frames)
        cached = self._cached(name, extent)
        if cached is not None:
            lo, hi = int(frames[0]), int(frames[-1]) + 1
            return cached[lo:hi].copy() if hi - lo == len(frames) else cached[frames]
        arr = self._array(name)
        row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        return take(
            lambda rows: self._read(name, lambda a: a[rows] if type(rows) is slice else a.oindex[rows]),
            frames,
            row_bytes,
        )

    def _take_ragged(self, name: str, offsets: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
        """Per-frame pieces of a ragged (concatenated) array for sorted unique ``frames``."""
        starts, stops = offsets[frames], offsets[frames + 1]
        extent, local = int(offsets[-1]), self._local(name)
        contiguous = int(frames[-1]) - int(frames[0]) + 1 == len(frames)
        cached = None if local is not None or contiguous else self._cached(name, extent)
        if cached is not None or (local is not None and not contiguous):
            rows, bounds = ragged_rows(starts, stops)  # only the wanted rows, in one gather
            if cached is not None:
                slab = cached[rows]
            else:
                assert local is not None  # the condition above
                slab = self._cache.take(local, extent, rows)
            starts, stops = bounds[:-1], bounds[1:]
        else:
            lo = int(starts[0])
            slab = self._slab(name, extent, lo, int(stops[-1]))
            starts, stops = starts - lo, stops - lo
        return [slab[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]

    def _chunking(self, tail: tuple[int, ...], dtype: np.dtype[Any], scale: float) -> tuple[int, int]:
        """Rows per chunk and per shard for an array of rows shaped ``tail`` (``scale``: rows per
        frame, in which ``chunk_frames``/``shard_frames`` count; per-atom arrays give their mean
        atoms per frame, arrays of one row per frame 1)."""
        layout = self._layout
        row_bytes = max(int(np.prod(tail, dtype=np.int64)) * dtype.itemsize, 1)
        if layout["chunk_frames"]:
            chunk = max(1, int(layout["chunk_frames"] * scale))
        else:
            chunk = max(1, layout["chunk_bytes"] // row_bytes)
            if scale == 1:  # one row a frame: as many frames as a column of 8-byte scalars, up to 8x
                chunk = max(
                    chunk, min(layout["chunk_bytes"] // 8, _FRAME_SPAN * layout["chunk_bytes"] // row_bytes)
                )
        if layout["shard_frames"]:
            shard = max(1, int(layout["shard_frames"] * scale) // chunk) * chunk
        else:
            shard = max(1, layout["shard_bytes"] // (row_bytes * chunk)) * chunk
        return chunk, shard

    async def _create(self, name: str, rows: int, tail: tuple[int, ...], dtype: Any, scale: float) -> Any:
        dtype = np.dtype(dtype)
        chunk, shard = self._chunking(tail, dtype, scale)
        arr = await zarr_async.create_array(
            self._group.store_path,
            name=name,
            shape=(rows, *tail),
            chunks=(chunk, *tail),
            shards=(shard, *tail),
            dtype=dtype,
            compressors=self._compressors,
            fill_value=np.zeros((), dtype)[()],
            overwrite=True,
            config=WRITE_ALL,
        )
        self._arrays[name] = zarr.Array(arr)
        return arr

    def _committed_arrays(self) -> set[str]:
        """Arrays that hold committed frames; any other name may be (re)created from scratch."""
        names = {self._counts_name()} if self._meta["length"] else set()
        for spec in self._meta["columns"].values():
            base = spec["id"] + "/"
            names.add(base + "values")
            if spec["kind"] == "object":
                names.add(base + "sizes")
            if spec.get("present", True):
                names.add(base + "present")
        return names

    def _write_range(
        self,
        name: str,
        start: int,
        stop: int,
        data: Any,
        tail: tuple[int, ...],
        dtype: Any,
        scale: float = 1.0,
        fill: int = 0,
    ) -> None:
        """Write ``data`` at rows ``start:stop`` of array ``name``, growing or creating it;
        ``fill``: the first rows of ``start:stop`` are the fill value and ``data`` the rest
        (a new array only: a column new to a store is written from row 0, and its earlier rows,
        as many as the store holds, are never built in memory).

        Inside ``extend`` the write joins the batch run at its end; otherwise it runs now.
        """
        dtype = np.dtype(dtype)
        source = self._forks.get(name)
        if source is not None:  # rewrites the shard object it starts in: with its committed rows
            start, data = self._kept_rows(source, start, data, tail, dtype)
        if self._direct is not None and handles(dtype):
            data = np.asarray(data, dtype).reshape(stop - start - fill, *tail)
            root, fresh = Path(self._target), name not in self._committed_arrays()
            if fresh:
                chunk, shard = self._chunking(tail, dtype, scale)
                trim = not self._layout["compress_all"]
                write_new_array(root, name, stop, start, data, chunk, shard, self._direct, trim, fill)
            if fresh or write_rows(root, name, stop, start, data, self._direct):
                self._arrays.pop(name, None)  # its zarr handle would hold the old shape
                return
        if isinstance(self._group, LazyGroup):  # zarr writes it: opened here, never in zarr's event loop
            self._group = self._group.get()
        put = self._put(name, start, stop, data, tail, dtype, scale, fill)
        if self._deferred is not None:
            self._deferred.append(put)
        else:
            zarr_sync(put)

    def _kept_rows(
        self, source: str, start: int, data: Any, tail: tuple[int, ...], dtype: np.dtype[Any]
    ) -> tuple[int, np.ndarray]:
        """(first row, data) of a write at ``start`` into a fork of ``source``: from the start of
        the shard object ``start`` falls in, ``source``'s committed rows there come first."""
        arr = self._array(source)
        keep = start // (arr.shards or arr.chunks)[0] * (arr.shards or arr.chunks)[0]
        data = np.asarray(data, dtype).reshape(-1, *tail)
        if keep == start:
            return start, data
        return keep, np.concatenate([self._slab(source, start, keep, start, False), data])

    async def _put(
        self,
        name: str,
        start: int,
        stop: int,
        data: Any,
        tail: tuple[int, ...],
        dtype: Any,
        scale: float,
        fill: int = 0,
    ) -> None:
        source = self._forks.get(name)
        if source is not None:
            arr = await fork_array(self._group.store_path, source, name, start, stop)
            self._arrays[name] = zarr.Array(arr)
        elif name in self._committed_arrays():
            arr = self._arrays.get(name)
            arr = arr.async_array.with_config(WRITE_ALL) if arr is not None else await self._open_async(name)
            if arr.shape[0] != stop:
                await arr.resize((stop, *arr.shape[1:]))
            self._arrays[name] = zarr.Array(arr)  # the handle readers use sees the new shape
        else:
            arr = await self._create(name, stop, tail, dtype, scale)
        if fill:  # shards of fill rows only one at a time, from a view of one zero: never built whole
            step = (arr.shards or arr.chunks)[0]
            whole = max(start, (start + fill) // step * step)  # the start of the shard data begins in
            zero = np.broadcast_to(np.zeros((), dtype), (step, *tail))
            for lo in range(start, whole, step):
                await arr.setitem(slice(lo, min(lo + step, whole)), zero[: min(step, whole - lo)])
            head = np.zeros((start + fill - whole, *tail), dtype)  # the fill rows of that shard
            start, data = whole, np.concatenate([head, data])
        if stop > start:
            await arr.setitem(slice(start, stop), data)

    async def _open_async(self, name: str) -> Any:
        arr = await zarr_async.open_array(store=self._group.store_path, path=name, zarr_format=3)
        arr = arr.with_config(WRITE_ALL)
        self._arrays[name] = zarr.Array(arr)
        return arr


async def gather(writes: list[Any]) -> None:
    """Run zarr writes together on zarr's event loop: their encoding and I/O overlap. All of
    them end before the first failure is raised, so a cleanup after it meets no write still
    running (which would leave objects behind)."""
    for outcome in await asyncio.gather(*writes, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def compressors(name: str | None, level: int) -> list[Any]:
    """The bytes-to-bytes stages of new arrays that zarr writes: the compressor, then a checksum."""
    if name in (None, "none"):
        return [Crc32cCodec()]
    if name == "gzip":
        return [GzipCodec(level=level), Crc32cCodec()]
    if name == "zstd-raw":
        return [ZstdCodec(level=level), Crc32cCodec()]
    if name in BLOSC_COMPRESSORS:
        return [BloscCodec(cname=name, clevel=level, shuffle="shuffle"), Crc32cCodec()]  # type: ignore[arg-type]
    choices = ", ".join(map(repr, ZARR_COMPRESSORS))
    raise ValueError(f"unknown compressor {name!r}; use one of {choices} or None")

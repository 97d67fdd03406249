"""Whole chunks written directly: a write's deflate runs in threads, outside HDF5.

HDF5 compresses chunks one at a time under h5py's lock; for a store of many small chunks (per-atom
datasets are chunked at about 4 KiB, see the package doc) that was most of an ``extend``. Here a
write's whole chunks are cut from its data with numpy, deflated in a thread pool (zlib releases
the GIL), given HDF5's fletcher32 checksum (:func:`fletcher32`, vectorised) and stored with
``H5Dwrite_chunk`` through the same file object, so the undo journal covers it. Each chunk is a
zlib stream under the dataset's own pipeline and filter mask (deflate, then fletcher32): every
HDF5 reader decodes it and a damaged chunk fails its checksum as before.

Deflating random float mantissas (positions, forces) costs about 40 us per 4 KiB chunk and
saves about 4 % of them; what a padded store saves is its runs of fill values (NaN). So a write
probes its first chunks per dataset (:func:`_encoding`): if zlib gains less than 10 % there,
every chunk of the write becomes a zlib stream of stored blocks for its data and deflated
blocks for its fill runs (:class:`_Stored`: a copy, the runs' blocks cached by length; built on
the writing thread, as such cheap Python work in threads only contends for the GIL, with the
checksums in the pool); else (integers, species, repeated values, writes of up to 4 chunks)
zlib deflates every chunk, the bytes HDF5's own filter writes. Periodic-1000: the write's CPU
time 235 -> about 110 ms, the file 5.21 -> 5.37 MB; a reader inflates stored blocks by copying.

Only datasets whose pipeline is deflate and/or fletcher32 (in HDF5's order) of fixed-size numbers
qualify; rows a write shares a chunk with (the first and last chunk of a write that starts or
ends inside one) go through HDF5, which merges them with the stored rows.
"""

from __future__ import annotations

import functools
import itertools
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from h5py import h5z

__all__ = ["Chunks", "fletcher32"]

_THREADED_BYTES = 1 << 18  # smaller writes compress inline (thread start-up would cost more)
_TASK_BYTES = 1 << 18  # chunks per thread task: about this much data
_MAX_CHUNK = 1 << 23  # larger chunks go through HDF5 (see fletcher32)
_PROBES = 4  # chunks of a write per dataset deflated both ways to choose the encoding
_PROBE_BYTES = 1 << 14  # ... but no more chunks than this many bytes hold (at least one)
_GAIN = 0.1  # zlib is used when it makes the probed chunks this much smaller than _Stored does
_MIN_RUN = 64  # shorter runs of fill values are stored with the data around them
_STORED_MAX = 0xFFFF  # bytes per stored block
_STORED_HEAD = struct.Struct("<BHH")  # a non-final stored block: header bits, LEN, NLEN
_FINAL_BLOCK = b"\x03\x00"  # an empty final block (fixed Huffman codes)
_CACHED_RUN = 1 << 16  # longer fill runs are deflated each time


def fletcher32(blobs: list[bytes]) -> np.ndarray:
    """HDF5's fletcher32 of each blob (``H5_checksum_fletcher32``: big-endian 16-bit words, an
    odd last byte as a high byte, both sums folded to 1..65535 unless all words are zero); exact
    for blobs up to 16 MiB each. Blobs are taken at most 256 KiB at a time (one blob may be more):
    the int64 copy of their words then stays in the CPU's cache (96 blobs of 30 KiB: 4 ms, 13 ms
    at once), and the sums within int64."""
    sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
    if len(blobs) > 1 and sizes.sum() > _AT_ONCE:
        half = len(blobs) // 2
        return np.concatenate([fletcher32(blobs[:half]), fletcher32(blobs[half:])])
    words = (sizes + 1) // 2  # none is empty
    odd = bool((sizes & 1).any())
    joined = b"".join(b + b"\0" if len(b) % 2 else b for b in blobs) if odd else b"".join(blobs)
    w = np.frombuffer(joined, ">u2").astype(np.int64)  # native words: the arithmetic below is 3x faster
    starts = np.cumsum(words) - words
    sum1 = np.add.reduceat(w, starts)
    w *= _positions(len(w))  # sum2 adds word j (of n) n - j times: (start + n) * sum1 - sum of g * w[g]
    sum2 = (starts + words) * sum1 - np.add.reduceat(w, starts)
    nonzero = sum1 > 0  # else both sums are 0
    sum1, sum2 = (np.where(nonzero, (s - 1) % 65535 + 1, 0) for s in (sum1, sum2))
    return (sum2 << 16) | sum1


_AT_ONCE = 1 << 18  # bytes of blobs summed in one pass
_POSITIONS = np.arange(1 << 15, dtype=np.int64)


def _positions(n: int) -> np.ndarray:
    """``arange(n)`` as int64, from a kept copy up to 2**20 words (8 MiB)."""
    global _POSITIONS
    if n > len(_POSITIONS):
        if n > 1 << 20:
            return np.arange(n, dtype=np.int64)
        _POSITIONS = np.arange(max(n, min(2 * len(_POSITIONS), 1 << 20)), dtype=np.int64)
    return _POSITIONS[:n]


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


def _filtered(encode: Callable[..., bytes], jobs: list[tuple[Any, ...]], checksum: bool) -> list[bytes]:
    """The chunks (bytes) as HDF5's pipeline stores them: ``encode(*job)`` (a zlib stream, or
    left as they are), then checksummed."""
    return _checksummed([encode(*job) for job in jobs], checksum)


def _checksummed(blobs: list[bytes], checksum: bool) -> list[bytes]:
    """``blobs`` each followed by its fletcher32 (``checksum``), as HDF5's filter stores it."""
    if not checksum:
        return blobs
    return [blob + int(s).to_bytes(4, "little") for blob, s in zip(blobs, fletcher32(blobs), strict=True)]


class _Stored:
    """Deflate streams that keep a chunk's data bytes as stored blocks and deflate only its runs
    of fill values (cached by length: every run of a length deflates alike), for data that
    deflate barely shrinks (random float mantissas): about the size zlib gives, at the cost of a
    copy. Any inflater decodes them (RFC 1950/1951: stored and compressed blocks may alternate;
    each fill run is deflated with a full flush, so it ends byte-aligned and refers to nothing
    before it; an empty final block and the Adler-32 of the whole chunk end the stream)."""

    def __init__(self, level: int, fill: bytes) -> None:
        self.level, self.fill = level, fill
        self.head = zlib.compress(b"", level)[:2]  # the zlib header zlib writes at this level

    def run(self, nbytes: int) -> bytes:
        if nbytes > _CACHED_RUN:
            return _deflated_run.__wrapped__(self.level, self.fill, nbytes)
        return _deflated_run(self.level, self.fill, nbytes)

    def __call__(self, view: memoryview, runs: list[tuple[int, int]]) -> bytes:
        """The zlib stream of chunk ``view`` whose fill runs are the byte ranges ``runs``."""
        parts, at = [self.head], 0
        for lo, hi in runs:
            _store(parts, view[at:lo])
            parts.append(self.run(hi - lo))
            at = hi
        _store(parts, view[at:])
        parts += [_FINAL_BLOCK, zlib.adler32(view).to_bytes(4, "big")]
        return b"".join(parts)


def _store(parts: list[Any], data: memoryview) -> None:
    """Append ``data`` to ``parts`` as non-final stored blocks."""
    for start in range(0, len(data), _STORED_MAX):
        block = data[start : start + _STORED_MAX]
        parts += [_STORED_HEAD.pack(0, len(block), len(block) ^ 0xFFFF), block]


@functools.lru_cache(maxsize=4096)
def _deflated_run(level: int, fill: bytes, nbytes: int) -> bytes:
    """Raw deflate blocks of ``nbytes`` of repeated ``fill``, ending byte-aligned (full flush)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    return packer.compress(fill * (nbytes // len(fill))) + packer.flush(zlib.Z_FULL_FLUSH)


def _deflated(chunk: memoryview | bytes, level: int) -> bytes:
    """``chunk`` deflated by zlib; bytes are a chunk already deflated (by a probe)."""
    return chunk if isinstance(chunk, bytes) else zlib.compress(chunk, level)


def _encoding(
    tiles: np.ndarray, views: list[memoryview], fillvalue: Any, level: int | None
) -> tuple[Callable[..., bytes], list[tuple[Any, ...]]]:
    """How to encode the chunks ``views`` (rows of ``tiles``), and each one's arguments: zlib,
    or :class:`_Stored` when zlib makes the first chunks holding data less than :data:`_GAIN`
    smaller than it does (writes of up to :data:`_PROBES` chunks: zlib)."""
    if level is None:
        return bytes, [(v,) for v in views]
    jobs: list[tuple[Any, ...]] = [(v, level) for v in views]
    if len(views) <= _PROBES:
        return _deflated, jobs
    fill = np.array(fillvalue, tiles.dtype)
    stored, runs = _Stored(level, fill.tobytes()), _fill_runs(tiles, fill)
    size = len(views[0])
    probes = [i for i, r in enumerate(runs) if r != [(0, size)]][: max(1, min(_PROBES, _PROBE_BYTES // size))]
    zipped = {i: zlib.compress(views[i], level) for i in probes}
    if sum(map(len, zipped.values())) >= (1 - _GAIN) * sum(len(stored(views[i], runs[i])) for i in probes):
        return stored, list(zip(views, runs, strict=True))
    for i, blob in zipped.items():
        jobs[i] = (blob, level)
    return _deflated, jobs


def _fill_runs(tiles: np.ndarray, fill: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per chunk (row of ``tiles``), the byte ranges of its runs of at least :data:`_MIN_RUN`
    bytes holding the fill value (compared bit for bit: NaN equals NaN)."""
    n, items = tiles.shape
    itemsize, pattern = tiles.dtype.itemsize, np.frombuffer(fill.tobytes(), np.uint8)
    same = np.zeros((n, items + 1), bool)  # a False column ends each row's last run in its row
    if itemsize in (1, 2, 4, 8):
        np.equal(tiles.view(f"u{itemsize}"), pattern.view(f"u{itemsize}")[0], out=same[:, :items])
    else:
        same[:, :items] = (tiles.view(np.uint8).reshape(n, items, itemsize) == pattern).all(-1)
    flat = same.view(np.int8).ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # each run's start, then its end
    if flat[0]:
        edges = np.concatenate([[0], edges])
    row = edges[0::2] // (items + 1)
    lo = (edges[0::2] - row * (items + 1)) * itemsize
    hi = (edges[1::2] - row * (items + 1)) * itemsize
    keep = hi - lo >= _MIN_RUN
    row, runs = row[keep], list(zip(lo[keep].tolist(), hi[keep].tolist(), strict=True))
    cuts = np.searchsorted(row, np.arange(n + 1)).tolist()
    return [runs[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Chunks:
    """The whole chunks of one write session, encoded as they are handed in (deflated in threads
    for large writes) and stored by :meth:`flush`. A dataset written here is not read again
    before that."""

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
        """Cut ``data`` (rows from chunk-aligned ``lo``) into whole chunks and start encoding them."""
        shape = ds.chunks
        grid = [-(-n // c) for n, c in zip(data.shape, shape, strict=True)]
        if not all(grid):  # frames of no atoms: HDF5 keeps no chunk either
            return
        padded = tuple(g * c for g, c in zip(grid, shape, strict=True))
        fillvalue = ds.fillvalue  # h5py reads it from the dataset's property list each time
        if padded != data.shape:  # the last chunk reaches past the dataset's end: HDF5 fills it so
            block = np.full(padded, fillvalue, data.dtype)
            block[tuple(slice(0, n) for n in data.shape)] = data
            data = block
        if any(g > 1 for g in grid[1:]):  # chunked across frames too (the atom axis grew): tile order
            split = data.reshape([x for g, c in zip(grid, shape, strict=True) for x in (g, c)])
            data = split.transpose([*range(0, 2 * ds.ndim, 2), *range(1, 2 * ds.ndim, 2)])
        data = np.ascontiguousarray(data)
        across = list(
            itertools.product(*(range(0, g * c, c) for g, c in zip(grid[1:], shape[1:], strict=True)))
        )
        offsets = [(lo + i * shape[0], *at) for i in range(grid[0]) for at in across]  # tile order
        size = data.itemsize * int(np.prod(shape))
        flat = data.reshape(-1).view(np.uint8).data  # a memoryview of the bytes
        views = [flat[i * size : (i + 1) * size] for i in range(len(offsets))]
        level, checksum = pipeline
        encode, jobs = _encoding(data.reshape(len(views), -1), views, fillvalue, level)
        work: list[Future[list[bytes]] | list[bytes]]
        if len(views) * size < _THREADED_BYTES or self.threads < 2:
            work = [_filtered(encode, jobs, checksum)]
            self.pending.append((ds, offsets, work))
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="asebytes-deflate")
        per = max(1, _TASK_BYTES // size)
        if isinstance(encode, _Stored):  # cheap Python work, here; the checksums (numpy) in threads
            blobs = [encode(*job) for job in jobs]
            work = [
                self.pool.submit(_checksummed, blobs[i : i + per], checksum)
                for i in range(0, len(blobs), per)
            ]
        else:
            work = [
                self.pool.submit(_filtered, encode, jobs[i : i + per], checksum)
                for i in range(0, len(jobs), per)
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

"""Chunks of our own H5MD datasets as HDF5 stores them: looked up in HDF5's chunk index one by
one (``read_direct_chunk``), and decoded here when the pipeline is one we apply ourselves.

HDF5 reading a handful of scattered chunks through a selection spends most of its time on the
selection (about 50 us a chunk here); reading the stored bytes and inflating them with
:mod:`zlib` costs what the inflating costs (a 3 KiB chunk: about 15 us), and the lookup is the
one :func:`._gather.confirm` makes anyway. Decoding follows HDF5's filters exactly: a chunk's
filter mask says which filters were skipped; fletcher32 is checked for every chunk, accepting
the byte-swapped sum HDF5 also accepts (written by HDF5 before 1.6.3); inflating must end the
stream and give the chunk's exact size. A chunk failing any of these is StoreCorruptedError
naming the dataset and its rows, where HDF5 raises too.
"""

from __future__ import annotations

import math
import zlib
from typing import NoReturn

import h5py
import numpy as np

from ...errors import StoreCorruptedError
from .._hdf5_btree import ChunkIndex
from .._hdf5_index import ChunkGrid
from ._chunks import _pipeline, fletcher32

__all__ = ["Grid"]

_Offset = tuple[int, ...]
#: A dataset's chunk index is walked once (its B-tree nodes then sit in HDF5's metadata cache)
#: when the chunks looked up pass 1/_WALK of its chunks: a walk costs about 1 us a chunk, a
#: lookup whose node is not cached 50-150 us (a v1 B-tree of 100,000 chunks), a cached one 5-25 us.
_WALK = 64
#: Chunks a request needs before it reads whole leaves of the chunk index it lacks (a leaf, up to
#: 64 chunks, costs about as much to read here as 5-10 of HDF5's lookups).
_INDEXED = 8
#: Datasets of this many chunks open the index for random rows too (then decoded alone, see
#: :meth:`Grid.lone`; 4,096 before: 1,000 random rows of 1,000 frames 127 -> 121 ms, 100 random
#: rows of periodic-1000 21.4 -> 19.3 ms, medians of 6 alternating fresh processes) ...
_INDEX_CHUNKS = 256
#: ... once HDF5 has looked up this many of their chunks: opening the index costs 5-15 of HDF5's
#: lookups in a cold B-tree (0.8 ms against 50-150 us each at 100,000 chunks), so a first frame
#: opens none (100,000 frames: 13-17 -> 10-12 ms) and random rows pay for at most 4 lookups more.
_LOOKUPS_FIRST = 4
_ASKED = 1024  # chunks a scan for chunks HDF5's index does not find reads at once (see unfound)


class Grid(ChunkGrid):
    """The chunk grid of one of our datasets: which chunk rows HDF5's index was seen to find,
    and the stored chunks read and decoded (:meth:`decode`) when its filters allow."""

    def __init__(self, ds: h5py.Dataset) -> None:
        super().__init__(ds)
        self.dtype = dtype = ds.dtype
        self.lookups, self.walked = 0, False  # chunks looked up; the index walked (see _WALK)
        pipeline = _pipeline(ds) if dtype.kind in "biuf" else None
        # mask bits of deflate and fletcher32 (0: not in the pipeline), as HDF5 numbers filters
        self.bits: tuple[int, int] | None = None
        if pipeline is not None:
            deflate = 1 if pipeline[0] is not None else 0
            self.bits = (deflate, (2 if deflate else 1) if pipeline[1] else 0)
        self.nbytes = dtype.itemsize * math.prod(self.chunks)
        self.whole = len(self.across) == 1 and self.shape[1:] == self.chunks[1:]  # one chunk spans a row
        self.index: ChunkIndex | None | bool = self.whole  # True: not read yet (see fetch)

    def fetch(self, chunks: np.ndarray) -> tuple[list[tuple[_Offset, int, bytes]], list[_Offset]]:
        """The stored chunks numbered ``chunks`` along the first axis, each with every chunk across
        the other axes, as (offset, filter mask, bytes); and the offsets HDF5's index does not find.

        Chunks spanning a row are found through :class:`.._hdf5_btree.ChunkIndex` and read with
        ``pread`` when it finds them all; otherwise HDF5 looks each one up (``read_direct_chunk``).
        The index is opened by the first request of at least :data:`_INDEXED` chunks (a batch), or
        on a dataset of :data:`_INDEX_CHUNKS` chunks or more (where HDF5's lookups read B-tree
        nodes: 63 us a chunk at 100,000) after :data:`_LOOKUPS_FIRST` of HDF5's lookups; smaller
        requests then read one key each (:meth:`ChunkIndex.one`) rather than whole leaves, and
        before it go to HDF5: opening it costs about 1 ms, a cold energy column or first frame of
        a small store 6-9 ms in all."""
        index, many = self._opened(len(chunks)), len(chunks) >= _INDEXED
        if (
            isinstance(index, ChunkIndex)
            and (index.lookup(chunks).all() if many else all(map(index.one, chunks.tolist())))
            and (direct := self._pread(index, chunks)) is not None
        ):
            return direct, []
        step, read = self.step, self.ds.id.read_direct_chunk
        self.lookups += len(chunks)
        if not self.walked and self.lookups * _WALK > len(self.seen):
            self.ds.id.get_num_chunks()  # counting walks the whole index
            self.walked = True
        found, missing = [], []
        for k in chunks.tolist():
            for rest in self.across:
                at = (k * step, *rest)
                try:
                    mask, blob = read(at)
                except (RuntimeError, OSError, ValueError):  # "chunk storage is not allocated"
                    missing.append(at)
                    continue
                found.append((at, mask, blob))
        return found, missing

    def _opened(self, n: int) -> ChunkIndex | None | bool:
        """The chunk index, opened first by a request of ``n`` chunks that pays for it (see
        :meth:`fetch`); True while not opened, None where it cannot be read."""
        large = len(self.seen) >= _INDEX_CHUNKS and self.lookups >= _LOOKUPS_FIRST
        if self.index is True and (n >= _INDEXED or large):
            self.index = ChunkIndex.of(self.ds)
        return self.index

    def _pread(self, index: ChunkIndex, chunks: np.ndarray) -> list[tuple[_Offset, int, bytes]] | None:
        """The chunks ``chunks`` (all found by ``index``) read from the file; None if one is cut short."""
        blobs = index.read(chunks)
        if blobs is None:
            return None
        zeros = (0,) * (len(self.shape) - 1)
        starts = (chunks * self.step).tolist()
        masks = index.mask[chunks].tolist()
        return [((lo, *zeros), m, b) for lo, m, b in zip(starts, masks, blobs, strict=True)]

    def unfound(self, chunks: np.ndarray) -> list[_Offset]:
        """Offsets of the chunks numbered ``chunks`` (as in :meth:`fetch`) HDF5's index does not
        find. Chunks :class:`.._hdf5_btree.ChunkIndex` finds are not read (HDF5 finds them too);
        the others are asked of HDF5 :data:`_ASKED` at a time, so a whole dataset's scan holds
        a few MB, not every chunk (170 MB for 100,000 frames' positions). A few chunks of a
        small dataset are all asked of HDF5 (the index is opened as :meth:`fetch` opens it: the
        atom counts of a first frame's read, one chunk, cost 0.8 ms more through it)."""
        index = self._opened(len(chunks))
        if isinstance(index, ChunkIndex):
            chunks = chunks[~index.lookup(chunks)]
        missing: list[_Offset] = []
        for lo in range(0, len(chunks), _ASKED):
            missing += self.fetch(chunks[lo : lo + _ASKED])[1]
        return missing

    def decode(self, chunks: np.ndarray, found: list[tuple[_Offset, int, bytes]]) -> np.ndarray:
        """Rows of the chunks numbered ``chunks`` (sorted unique; ``len(chunks) * step`` rows, the
        whole other axes) from what :meth:`fetch` found; chunks it did not find read as the fill
        value, as HDF5 reads them (:func:`._gather.confirm` decides first whether that is damage)."""
        raws = self._decoded(found)
        rows, step = len(chunks) * self.step, self.step
        if self.whole and len(raws) == len(chunks):
            return np.frombuffer(b"".join(raws), self.dtype).reshape(rows, *self.shape[1:])
        block = np.full((rows, *self.shape[1:]), self.ds.fillvalue, self.dtype)
        first = {int(k): i * step for i, k in enumerate(chunks.tolist())}
        for (at, _, _), raw in zip(found, raws, strict=True):
            tile = np.frombuffer(raw, self.dtype).reshape(self.chunks)
            lo = first[at[0] // step]
            where = (
                slice(lo, lo + step),
                *(slice(a, a + c) for a, c in zip(at[1:], self.chunks[1:], strict=True)),
            )
            block[where] = tile[tuple(slice(0, n) for n in block[where].shape)]
        return block

    def lone(self, k: int) -> np.ndarray | None:
        """Chunk ``k`` decoded (a read-only array of the chunk's shape), for a random row: looked
        up, read, checked and inflated as :meth:`fetch` and :meth:`decode` do, without their lists
        (about 14 against 25 us a chunk warm). None whenever anything differs from the usual case
        (the index not open yet, a chunk not found, a filter skipped, a checksum or stream that
        fails): those calls then read the chunk again and name what is wrong."""
        index = self.index
        if not (isinstance(index, ChunkIndex) and self.whole and self.bits) or (raw := index.blob(k)) is None:
            return None
        if index.mask[k]:
            return None
        deflate, checksum = self.bits
        if checksum:
            raw, stored = raw[:-4], int.from_bytes(raw[-4:], "little")
            if not raw or not _checked_one(raw, stored):
                return None
        if deflate:
            inflater = zlib.decompressobj()
            try:
                raw = inflater.decompress(raw, self.nbytes + 1)
            except zlib.error:
                return None
            if not inflater.eof:
                return None
        if len(raw) != self.nbytes:
            return None
        self.seen[k] = True
        return np.frombuffer(raw, self.dtype).reshape(self.chunks)

    def _decoded(self, found: list[tuple[_Offset, int, bytes]]) -> list[bytes]:
        """The chunks' bytes through HDF5's filters (fletcher32 and/or deflate), checked."""
        deflate, checksum = self.bits or (0, 0)
        datas = [blob for _, _, blob in found]
        masks = [mask for _, mask, _ in found]
        if checksum:
            summed = [i for i, mask in enumerate(masks) if not mask & checksum]
            stored = [int.from_bytes(datas[i][-4:], "little") for i in summed]
            for i in summed:
                datas[i] = datas[i][:-4]
                if not datas[i]:
                    self._damaged(found[i][0], "shorter than its checksum")
            for i, ok in zip(summed, _checked([datas[i] for i in summed], stored), strict=True):
                if not ok:
                    self._damaged(found[i][0], "fletcher32 checksum mismatch")
        if deflate and not any(masks):  # the usual case: every chunk deflated, checked at once
            inflaters = [zlib.decompressobj() for _ in datas]
            try:  # at most one byte more than a chunk holds: a hostile stream claims no more memory
                out = [z.decompress(data, self.nbytes + 1) for z, data in zip(inflaters, datas, strict=True)]
            except zlib.error:
                out = None  # the loop below names the chunk
            if out is not None and all(z.eof for z in inflaters) and set(map(len, out)) == {self.nbytes}:
                return out
        out = []
        for at, mask, data in zip((f[0] for f in found), masks, datas, strict=True):
            ended = True
            if deflate and not mask & deflate:
                inflater = zlib.decompressobj()
                try:
                    data = inflater.decompress(data, self.nbytes + 1)
                except zlib.error as exc:
                    self._damaged(at, f"inflate failed: {exc}")
                ended = inflater.eof  # like HDF5: a stream cut short fails, bytes after its end are ignored
            if len(data) > self.nbytes:
                self._damaged(at, f"more bytes decoded than a chunk holds ({self.nbytes})")
            if not ended:
                self._damaged(at, "inflate failed: the deflate stream is cut short")
            if len(data) != self.nbytes:
                self._damaged(at, f"{len(data)} bytes decoded, a chunk holds {self.nbytes}")
            out.append(data)
        return out

    def _damaged(self, at: _Offset, why: str) -> NoReturn:
        lo = at[0]
        hi = min(lo + self.step, self.shape[0]) - 1
        raise StoreCorruptedError(
            f"{self.ds.file.filename}: dataset {self.ds.name} rows {lo}-{hi} is damaged ({why}); the "
            "file's checksums or structure do not match what was written; restore the file from a copy"
        )


_FEW = 4  # blobs summed one by one; more are summed at once, unless they are large:
_LARGE = 16 << 10  # blobs of this mean size are summed one by one too (no int64 copy of them all)
_WEIGHTS = np.arange(1 << 16, 0, -1, dtype=np.float64)  # word j of n counts n - j times in the second sum
_DOT = 8192  # words per np.dot (see _checked)


def _checked(datas: list[bytes], stored: list[int]) -> list[bool]:
    """Does each blob's fletcher32 match its stored sum, as HDF5 checks it? HDF5 accepts the
    byte-swapped sum too (HDF5 before 1.6.3 stored it so on little-endian machines). Many blobs
    are summed at once (:func:`._chunks.fletcher32`); a few, each of up to 128 KiB, by two numpy
    reductions each (a quarter of that function's time on one chunk, the random-row case; the
    same sums, the tests hold them equal). Large blobs are summed one by one however many there
    are: at 30 KiB each (an energy column's chunks) that is as fast warm and half the time in a
    fresh process, which pays a page fault for every page of the other's int64 copies."""
    sizes = list(map(len, datas))
    large = sum(sizes) >= _LARGE * len(datas)
    if (len(datas) > _FEW and not large) or max(sizes, default=0) > 2 * len(_WEIGHTS):
        sums = fletcher32(datas).tolist()
        return [_matches(found, total) for found, total in zip(stored, sums, strict=True)]
    return [_matches(found, _summed(data)) for found, data in zip(stored, datas, strict=True)]


def _checked_one(data: bytes, stored: int) -> bool:
    """:func:`_checked` of one blob, without its lists (a random row's chunk: 10.8 -> 6 us)."""
    if len(data) > 2 * len(_WEIGHTS):
        return _checked([data], [stored])[0]
    return _matches(stored, _summed(data))


def _summed(data: bytes) -> int:
    """The fletcher32 of one blob of up to 128 KiB by two numpy reductions."""
    words = np.frombuffer(data + b"\0" if len(data) % 2 else data, ">u2").astype(np.float64)
    sum1 = int(words.sum())  # float64 sums of these integers are exact (below 2**53)
    weights = _WEIGHTS[-len(words) :]  # BLAS: 2-3 us less a blob than int64, in pieces that
    if len(words) <= _DOT:  # OpenBLAS sums on one thread (it wakes others past 10,000)
        sum2 = int(np.dot(words, weights))
    else:
        pieces = range(0, len(words), _DOT)
        sum2 = sum(int(np.dot(words[a : a + _DOT], weights[a : a + _DOT])) for a in pieces)
    return ((sum2 - 1) % 65535 + 1) << 16 | ((sum1 - 1) % 65535 + 1) if sum1 else 0


def _matches(found: int, total: int) -> bool:
    """Is ``found`` the sum ``total``, in either byte order HDF5 has stored it?"""
    return found == total or found == ((total & 0x00FF00FF) << 8) | ((total >> 8) & 0x00FF00FF)

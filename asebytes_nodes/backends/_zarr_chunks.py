"""Reading rows of a local Zarr store chunk by chunk, straight from its shard files.

zarr-python 3 costs a fixed ~0.5-1 ms per array read (its event loop and codec pipeline), and
reading a whole column to serve one row made random access on large stores fall off a cliff
(issue 17). Arrays laid out as :mod:`._zarr_shards` writes them (zarr's own sharded layout with
a Blosc compressor or none, with or without chunk checksums: what this package writes locally,
and zarr too for the same settings) are read here instead:

- :class:`ShardedArray` opens an array's document, checks it is exactly the document
  :func:`._zarr_shards.array_document` gives for the dtype the record names (anything else:
  None, and the caller reads through zarr), keeps each shard file open once touched, reads its
  index (checked against its crc32c) and reads one inner chunk with ``os.pread``: its crc32c is
  checked and it is decompressed on its own. A missing shard file or chunk of a checksummed
  array is damage; of an older unchecksummed one, zeros (zarr's fill value, as zarr reads it).
- :class:`ChunkCache` keeps decoded chunks up to ``cache_bytes`` per handle and gathers any
  rows (any order, repeats) with numpy; each chunk a request needs is decoded at most once.
  Small arrays (up to 1/8 of the budget) are gathered from one buffer of the array's size,
  filled chunk by chunk as rows are asked for. Larger arrays keep decoded chunks in the slots
  of one buffer (:class:`_Pool`, a chunk-to-slot table beside it): the rows of held chunks are
  gathered in one ``take`` (issue 17: a Python step per chunk, even a cached one, made shuffled
  batches of a 20,000-frame store slow), only missing chunks are decoded, into free slots while
  the budget allows, else into filled slots taken in turn (a ring) that the request does not use.
  Whole entries (an array's buffer or pool) leave least recently used first when a small
  array's buffer grows past the budget. Without any room (``cache_bytes=0``) chunks are decoded
  for the request alone.

Every failure (a file missing, cut short, a checksum mismatch) is raised as a
:class:`._zarr_read._ReadFailure`, which :meth:`._zarr_read.CheckedReads._guarded` retries
from the current record, then reports as damage.
"""

from __future__ import annotations

import json
import multiprocessing.synchronize  # noqa: F401 - numcodecs' blosc imports it on its first decode (1-5 ms)
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs.blosc import decompress as blosc_decompress

from ..errors import StoreCorruptedError
from ..indexing import distinct
from ._zarr_read import _ReadFailure
from ._zarr_shards import _EMPTY, _codec_of, _geometry, _our_layout

__all__ = ["ChunkCache", "LazyGroup", "ShardedArray", "ragged_rows"]

_DENSE_SHARE = 8  # arrays up to cache_bytes / 8 are gathered in one buffer of their own size
_SCAN_CHUNKS = 4  # a slab over this many chunks or more is not kept in the cache
_ABSENT = int(_EMPTY)  # an index entry's offset for a chunk not written
_RESIDUE = 0x48674BC7  # crc32c of any bytes followed by their own crc32c (little-endian)


class ShardedArray:
    """Array ``name`` of the local store at ``root``, read one inner chunk at a time."""

    def __init__(self, root: Path, name: str, document: dict[str, Any], dtype: np.dtype[Any], codec: Any):
        self.name, self.folder, self.dtype = name, root / name, dtype
        self.tail = tuple(document["shape"][1:])
        self.chunk, shard = _geometry(document)
        self.per_shard = shard // self.chunk
        self.checksum = codec.checksum
        self.chunk_bytes = self.chunk * int(np.prod(self.tail, dtype=np.int64)) * dtype.itemsize
        self._blosc = codec.cname is not None
        self._suffix = "/0" * len(self.tail)
        self._shards: dict[int, tuple[int, np.ndarray] | None] = {}

    @classmethod
    def open(cls, root: Path, name: str, dtype: np.dtype[Any], rows: int) -> ShardedArray | None:
        """The array if it is laid out as :mod:`._zarr_shards` writes it, else None. A checksummed
        array must have every shard file that holds one of its first ``rows`` rows."""
        try:
            document = json.loads((root / name / "zarr.json").read_bytes())
            tail = tuple(document["shape"][1:])
        except FileNotFoundError as exc:
            raise _ReadFailure(name) from exc
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # zarr reports it, with the array checks of _zarr_read
        found = _our_layout(root / name, np.zeros((0, *tail), dtype), _codec_of(document), document)
        if found is None:
            return None
        array = cls(root, name, found[0], dtype, found[1])
        if array.checksum:  # every shard is written (zarr reads a missing one as zeros)
            index_bytes = 16 * array.per_shard + 4
            for s in range(-(-rows // (array.per_shard * array.chunk))):
                path = array._path(s)
                try:
                    size = path.stat().st_size
                except OSError:  # gone (collected under an older record) or unreadable
                    size = -1
                if size < index_bytes:
                    raise _ReadFailure(name) from StoreCorruptedError(
                        f"{path}: shard file {'missing' if size < 0 else 'cut short'}"
                    )
        return array

    def _path(self, shard: int) -> Path:
        return self.folder / f"c/{shard}{self._suffix}"

    def _shard(self, s: int) -> tuple[int, np.ndarray] | None:
        """(open descriptor, index) of shard ``s``; None when an unchecksummed shard is absent."""
        if s in self._shards:
            return self._shards[s]
        path = self._path(s)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            if self.checksum:
                raise _ReadFailure(self.name) from StoreCorruptedError(f"{path}: shard file missing")
            self._shards[s] = None
            return None
        except OSError as exc:
            raise _ReadFailure(self.name) from exc
        size = 16 * self.per_shard
        try:
            end = os.fstat(fd).st_size
            blob = os.pread(fd, size + 4, end - size - 4) if end >= size + 4 else b""
        except OSError as exc:
            os.close(fd)
            raise _ReadFailure(self.name) from exc
        raw, crc = blob[:-4], blob[-4:]
        if len(blob) < size + 4 or google_crc32c.value(raw).to_bytes(4, "little") != crc:
            os.close(fd)
            raise _ReadFailure(self.name) from StoreCorruptedError(
                f"{path}: shard index does not match its checksum (the file is damaged or cut short)"
            )
        index = np.frombuffer(raw, "<u8").reshape(self.per_shard, 2)
        if ((index[:, 0] != _EMPTY) & (index[:, 0] + index[:, 1] > end - size - 4)).any():
            os.close(fd)
            raise _ReadFailure(self.name) from StoreCorruptedError(f"{path}: a chunk lies outside the file")
        self._shards[s] = fd, index
        return self._shards[s]

    def read_into(self, c: int, out: np.ndarray) -> None:
        """Decode inner chunk ``c`` into ``out``, a C-contiguous ``(chunk rows, *tail)`` array."""
        self.read_many([c], out[None], [0])

    def read_many(self, chunks: list[int], dest: np.ndarray, slots: list[int]) -> None:
        """Decode inner chunks ``chunks`` into ``dest[slots[i]]`` (``dest``: a C-contiguous
        ``(n, chunk rows, *tail)`` array), in one loop: a Python call and a numpy copy per chunk
        cost about as much as decoding it (100,000 frames, shuffled batches: 28,000 chunks for
        9,600 frames). Each chunk's checksum is checked in one pass, no copy (crc32c over the
        chunk and its own checksum gives a fixed residue), then it is decompressed and copied in
        as bytes. A chunk never written is zeros (zarr skipped an all-zero chunk), or damage in
        a checksummed array."""
        if not dest.flags.c_contiguous:
            raise ValueError("read_many writes into a C-contiguous array")
        out = memoryview(dest.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # numpy: no __buffer__ < 3.12
        size, per, shards, check = self.chunk_bytes, self.per_shard, self._shards, self.checksum
        blosc, pread, crc = self._blosc, os.pread, google_crc32c.value
        for c, k in zip(chunks, slots, strict=True):
            s, j = divmod(c, per)
            opened = shards[s] if s in shards else self._shard(s)
            # Python ints (item): no numpy scalar per chunk; no conversion of a whole index on open
            offset = _ABSENT if opened is None else opened[1].item(j, 0)
            if offset == _ABSENT:
                if check:
                    raise _ReadFailure(self.name) from StoreCorruptedError(
                        f"{self._path(s)}: chunk {j} missing"
                    )
                out[k * size : (k + 1) * size] = bytes(size)
                continue
            try:
                raw = pread(opened[0], opened[1].item(j, 1), offset)  # type: ignore[index]
                if check and crc(raw) != _RESIDUE:
                    raise ValueError("does not match its crc32c checksum")
                body = memoryview(raw)[:-4] if check else raw
                decoded = blosc_decompress(body) if blosc else body
                if len(decoded) != size:
                    raise ValueError(f"decodes to {len(decoded)} bytes, not {size}")
                out[k * size : (k + 1) * size] = decoded
            except Exception as exc:  # noqa: BLE001 - checksum, codec, I/O: retried, then reported
                raise _ReadFailure(self.name) from StoreCorruptedError(f"{self._path(s)}: chunk {j}: {exc}")

    def read_chunk(self, c: int) -> np.ndarray:
        """Inner chunk ``c`` decoded: a new ``(chunk rows, *tail)`` array."""
        out = np.empty((self.chunk, *self.tail), self.dtype)
        self.read_into(c, out)
        return out

    def close(self) -> None:
        for opened in self._shards.values():
            if opened is not None:
                os.close(opened[0])
        self._shards.clear()

    def __del__(self) -> None:
        self.close()


class _Dense:
    """A buffer the size of a whole array, filled chunk by chunk as rows are asked for."""

    def __init__(self, array: ShardedArray, rows: int):
        self.rows = rows
        self.data = np.empty((rows, *array.tail), array.dtype)
        self.loaded = np.zeros(-(-rows // array.chunk), bool)
        self.missing = len(self.loaded)  # chunks not decoded yet
        self.nbytes = 0


class _Pool:
    """Decoded chunks of one larger array in the slots of one buffer: ``where[c]`` is chunk
    ``c``'s slot (-1: not held), so gathering rows of held chunks is one ``take``."""

    def __init__(self, array: ShardedArray, rows: int, capacity: int):
        self.rows, self.capacity, self.used, self.nbytes = rows, capacity, 0, 0
        self.data = np.empty((capacity, array.chunk, *array.tail), array.dtype)  # pages touched when used
        self.flat = self.data.reshape(capacity * array.chunk, *array.tail)
        self.where = np.full(-(-rows // array.chunk), -1, np.int64)
        self.owner = np.full(capacity, -1, np.int64)  # chunk held by each slot
        self.stamp = np.zeros(capacity, np.int64)  # request that last used each slot
        self.hand = 0  # the next filled slot to reuse (in turn) once the budget is reached


class ChunkCache:
    """A handle's arrays read from shard files (:attr:`arrays`, by name; None: read through zarr)
    and what it decoded: small arrays whole (:class:`_Dense`), slots of chunks of larger ones
    (:class:`_Pool`), and whole columns zarr read (:meth:`get`/:meth:`put`), up to ``limit``
    bytes in all. Whole entries leave least recently used first; a pool that has reached the
    limit reuses its own slots in turn."""

    def __init__(self, limit: int):
        self.limit, self.held, self.tick = limit, 0, 0
        self.decoded = 0  # chunks read from files so far: a read that read none met no writer
        self.arrays: dict[str, ShardedArray | None] = {}
        self._entries: OrderedDict[Any, Any] = OrderedDict()  # name -> _Dense | _Pool, key -> column

    def clear(self) -> None:
        for array in self.arrays.values():
            if array is not None:
                array.close()
        self.arrays.clear()
        self._entries.clear()
        self.held = 0

    def get(self, key: Any) -> Any:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: Any, value: Any) -> Any:
        old = self._entries.pop(key, None)
        self.held -= 0 if old is None else old.nbytes
        self._entries[key] = value
        self._add(key, value.nbytes)
        return value

    def _add(self, key: Any, nbytes: int) -> None:
        """Count ``nbytes`` more held by ``key`` (the newest entry); evict the oldest others."""
        self.held += nbytes
        self._entries.move_to_end(key)
        while self.held > self.limit and self._entries:  # a chunk larger than it all is not kept
            self.held -= self._entries.popitem(last=False)[1].nbytes

    def _holder(self, array: ShardedArray, rows: int) -> _Dense | _Pool | None:
        """Where ``array``'s decoded rows are kept: a dense buffer for small arrays, a pool of
        chunk slots for larger ones, None when not even one chunk fits the limit."""
        entry = self.get(array.name)
        if isinstance(entry, _Dense | _Pool) and entry.rows == rows:
            return entry
        if rows * array.chunk_bytes <= self.limit * array.chunk // _DENSE_SHARE:
            return self.put(array.name, _Dense(array, rows))
        capacity = min(-(-rows // array.chunk), self.limit // array.chunk_bytes)
        return self.put(array.name, _Pool(array, rows, capacity)) if capacity else None

    def _fill(self, array: ShardedArray, dense: _Dense, todo: list[int]) -> None:
        """Decode chunks ``todo`` (sorted, distinct, none loaded) into ``dense``."""
        size, step = len(dense.data), array.chunk
        if not todo:
            return
        full = size // step  # chunks wholly inside the committed rows
        whole = todo if todo[-1] < full else todo[:-1]  # the last may be partly committed
        if whole:
            array.read_many(whole, dense.data[: full * step].reshape(full, step, *array.tail), whole)
            dense.loaded[whole] = True
        if len(whole) < len(todo):
            c = todo[-1]
            dense.data[c * step :] = array.read_chunk(c)[: size - c * step]
            dense.loaded[c] = True
        self.decoded += len(todo)
        rows = len(whole) * step + (size - full * step if len(todo) > len(whole) else 0)
        added = rows * (array.chunk_bytes // step)
        dense.nbytes += added
        self._add(array.name, added)
        dense.missing -= len(todo)

    def _slots(self, array: ShardedArray, pool: _Pool, n: int) -> list[int]:
        """Up to ``n`` slots for chunks to decode: new ones while the limit allows, then the
        filled ones in turn (a ring), skipping those the current request uses."""
        filled = pool.used
        fresh = min(n, pool.capacity - filled, max(0, (self.limit - self.held) // array.chunk_bytes))
        slots = list(range(filled, filled + fresh))
        pool.used += fresh
        pool.nbytes += fresh * array.chunk_bytes
        self._add(array.name, fresh * array.chunk_bytes)
        for _ in range(filled if len(slots) < n else 0):  # at most one turn of the ring
            slot = pool.hand % filled
            pool.hand = slot + 1
            if pool.stamp[slot] != self.tick:
                owner = int(pool.owner[slot])
                if owner >= 0:  # (a slot whose decoding failed holds nothing)
                    pool.where[owner], pool.owner[slot] = -1, -1
                slots.append(slot)
                if len(slots) == n:
                    break
        return slots

    def _load(self, array: ShardedArray, pool: _Pool, chunks: list[int]) -> int:
        """Decode ``chunks`` (none held) into slots of ``pool``; how many (the first) got one."""
        free = self._slots(array, pool, len(chunks))  # may be fewer
        taken = chunks[: len(free)]
        array.read_many(taken, pool.data, free)
        self.decoded += len(free)
        pool.where[taken], pool.owner[free], pool.stamp[free] = free, taken, self.tick
        return len(free)

    def _held(self, array: ShardedArray, pool: _Pool, c: int) -> int:
        """The slot holding chunk ``c`` (a new request), decoded into one now if it was not
        held; -1 when no slot is free."""
        self.tick += 1
        slot: int = pool.where.item(c)
        if slot >= 0:
            pool.stamp[slot] = self.tick
            return slot
        free = self._slots(array, pool, 1)
        if not free:
            return -1
        slot = free[0]
        array.read_many([c], pool.data, free)
        self.decoded += 1
        pool.where[c], pool.owner[slot], pool.stamp[slot] = slot, c, self.tick
        return slot

    def take(self, array: ShardedArray, rows: int, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats) of ``array`` (``rows`` committed): a new array.
        Each chunk involved is decoded at most once; rows of held chunks are gathered at once."""
        holder = self._holder(array, rows)
        if isinstance(holder, _Dense):
            if holder.missing:
                chunks = index // array.chunk
                self._fill(array, holder, distinct(chunks[~holder.loaded[chunks]]).tolist())
            return holder.data.take(index, axis=0)  # much faster than data[index] for 2-D rows
        chunks = index // array.chunk
        self.tick += 1
        slots = holder.where[chunks] if holder is not None else np.full(len(index), -1, np.int64)
        missing = slots < 0
        if holder is not None:
            holder.stamp[slots[~missing]] = self.tick
        extra = None
        if missing.any():
            wanted = distinct(chunks[missing])
            loaded = self._load(array, holder, wanted.tolist()) if holder is not None else 0
            if loaded < len(wanted):  # more than the pool holds: the rest only for this request
                extra, rest = self._decoded(array, wanted[loaded:])
            if holder is not None:
                slots = holder.where[chunks]
        within = index - chunks * array.chunk
        if extra is None:
            return holder.flat.take(slots * array.chunk + within, axis=0)  # type: ignore[union-attr]
        out = np.empty((len(index), *array.tail), array.dtype)
        held = slots >= 0
        if holder is not None:
            out[held] = holder.flat.take(slots[held] * array.chunk + within[held], axis=0)
        spot = np.searchsorted(rest, chunks[~held])
        out[~held] = extra.take(spot * array.chunk + within[~held], axis=0)
        return out

    def _decoded(self, array: ShardedArray, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunks (sorted) decoded into one new buffer of their rows, kept nowhere; and the chunks."""
        out = np.empty((len(chunks), array.chunk, *array.tail), array.dtype)
        array.read_many(chunks.tolist(), out, list(range(len(chunks))))
        self.decoded += len(chunks)
        return out.reshape(len(chunks) * array.chunk, *array.tail), chunks

    def slab(self, array: ShardedArray, rows: int, lo: int, hi: int, private: bool = True) -> np.ndarray:
        """Rows ``lo:hi`` of ``array`` (``rows`` committed): a new array (``private=False``: a
        view of the cache where it holds them whole, for a caller that only reads it at once)."""
        if hi <= lo:
            return np.zeros((0, *array.tail), array.dtype)
        first, last = lo // array.chunk, (hi - 1) // array.chunk
        holder = self._holder(array, rows)
        if isinstance(holder, _Dense):
            if holder.missing and not (first == last and holder.loaded[first]):  # a random row: held
                gaps = np.flatnonzero(~holder.loaded[first : last + 1]) + first if last > first else [first]
                self._fill(array, holder, list(map(int, gaps)))
            return holder.data[lo:hi].copy() if private else holder.data[lo:hi]
        if first == last and holder is not None:  # a random row (db[i]): within one chunk
            slot = self._held(array, holder, first)
            if slot >= 0:
                base = first * array.chunk
                return holder.data[slot, lo - base : hi - base].copy()
        short = holder is not None and last - first < _SCAN_CHUNKS  # kept; a long scan decodes past it
        if short:
            self.tick += 1
            held = holder.where[first : last + 1]  # type: ignore[union-attr]
            holder.stamp[held[held >= 0]] = self.tick  # type: ignore[union-attr]
        out = np.empty((hi - lo, *array.tail), array.dtype)
        for c in range(first, last + 1):
            base = c * array.chunk
            a, b = max(lo, base), min(hi, base + array.chunk)
            slot = -1 if holder is None else int(holder.where[c])
            if slot < 0 and short and self._load(array, holder, [c]):  # type: ignore[arg-type]
                slot = int(holder.where[c])  # type: ignore[union-attr]
            if slot >= 0:
                out[a - lo : b - lo] = holder.data[slot, a - base : b - base]  # type: ignore[union-attr]
            elif b - a == array.chunk:
                self.decoded += 1
                array.read_into(c, out[a - lo : b - lo])
            else:
                self.decoded += 1
                out[a - lo : b - lo] = array.read_chunk(c)[a - base : b - base]
        return out


def ragged_rows(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``starts[i]:stops[i]`` of a ragged array, all frames in one index array, and the
    bounds of each frame's rows in it (``len(starts) + 1`` entries)."""
    lengths = stops - starts
    bounds = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return np.arange(bounds[-1], dtype=np.int64) + np.repeat(starts - bounds[:-1], lengths), bounds


class LazyGroup:
    """A local store's zarr group, opened on first use: reads go to the files directly
    (:mod:`._zarr_chunks`), so a reader never pays zarr's group open (about 10 ms cold)."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._opened: Any = None

    def get(self) -> Any:
        """The zarr group, opened now if it was not yet."""
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

    def __getitem__(self, key: str) -> Any:
        return self.get()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.get()

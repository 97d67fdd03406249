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
- :class:`ChunkCache` keeps decoded chunks up to ``cache_bytes`` per handle, least recently
  used first out, and gathers any rows (any order, repeats) with numpy: rows are grouped by
  chunk and each chunk is decoded once per request. Small arrays (up to 1/8 of the budget) are
  gathered into one buffer of the array's size, filled chunk by chunk as rows are asked for, so
  a warm gather is one fancy-indexing call; larger arrays keep chunks of their own.

Every failure (a file missing, cut short, a checksum mismatch) is raised as a
:class:`._zarr_read._ReadFailure`, which :meth:`._zarr_read.CheckedReads._guarded` retries
from the current record, then reports as damage.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs.blosc import decompress as blosc_decompress

from ..errors import StoreCorruptedError
from ._zarr_read import _ReadFailure
from ._zarr_shards import _EMPTY, _codec_of, _geometry, _our_layout

__all__ = ["ChunkCache", "LazyGroup", "ShardedArray", "ragged_rows"]

_DENSE_SHARE = 8  # arrays up to cache_bytes / 8 are gathered in one buffer of their own size
_SCAN_CHUNKS = 4  # a slab over this many chunks or more is not kept in the cache


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
        found = _our_layout(root / name, np.zeros((0, *tail), dtype), _codec_of(document))
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

    def read_chunk(self, c: int) -> np.ndarray:
        """Inner chunk ``c`` decoded: ``(chunk rows, *tail)``, read-only."""
        s, j = divmod(c, self.per_shard)
        opened = self._shard(s)
        if opened is not None and opened[1][j, 0] != _EMPTY:
            fd, index = opened
            offset, length = int(index[j, 0]), int(index[j, 1])
            try:
                raw = self._decode(os.pread(fd, length, offset))
            except Exception as exc:  # noqa: BLE001 - checksum, codec, I/O: retried, then reported
                raise _ReadFailure(self.name) from exc
            if len(raw) != self.chunk_bytes:
                raise _ReadFailure(self.name) from StoreCorruptedError(
                    f"{self._path(s)}: chunk {j} decodes to {len(raw)} bytes, not {self.chunk_bytes}"
                )
            return np.frombuffer(raw, self.dtype).reshape(self.chunk, *self.tail)  # read-only
        if self.checksum:
            raise _ReadFailure(self.name) from StoreCorruptedError(f"{self._path(s)}: chunk {j} missing")
        return np.zeros((self.chunk, *self.tail), self.dtype)  # zarr skipped an all-zero chunk

    def _decode(self, raw: bytes) -> bytes:
        """An encoded chunk's bytes: checksum checked, decompressed (no copies on the way)."""
        body: Any = raw
        if self.checksum:
            body = memoryview(raw)[:-4]
            if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise ValueError("chunk does not match its crc32c checksum")
        return blosc_decompress(body) if self._blosc else bytes(body)

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
        self.data = np.empty((rows, *array.tail), array.dtype)
        self.loaded = np.zeros(-(-rows // array.chunk), bool)
        self.complete = not len(self.loaded)
        self.nbytes = 0


class ChunkCache:
    """A handle's arrays read from shard files (:attr:`arrays`, by name; None: read through zarr)
    and what it decoded: chunks, and whole columns zarr read (:meth:`get`/:meth:`put`), up to
    ``limit`` bytes, least recently used first out."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self.decoded = 0  # chunks read from files so far: a read that read none met no writer
        self.arrays: dict[str, ShardedArray | None] = {}
        self._entries: OrderedDict[Any, Any] = OrderedDict()  # name -> _Dense, (name, c) -> chunk

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

    def _dense(self, array: ShardedArray, rows: int) -> _Dense | None:
        if rows * array.chunk_bytes > self.limit * array.chunk // _DENSE_SHARE:
            return None
        entry = self.get(array.name)
        if entry is None or len(entry.data) != rows:
            entry = self.put(array.name, _Dense(array, rows))
        return entry  # type: ignore[no-any-return]

    def _fill(self, array: ShardedArray, dense: _Dense, chunks: np.ndarray) -> None:
        size = len(dense.data)
        for c in np.unique(chunks[~dense.loaded[chunks]]).tolist():
            self.decoded += 1
            lo, hi = c * array.chunk, min((c + 1) * array.chunk, size)
            dense.data[lo:hi] = array.read_chunk(c)[: hi - lo]
            dense.loaded[c] = True
            dense.nbytes += dense.data[lo:hi].nbytes
            self._add(array.name, dense.data[lo:hi].nbytes)
        dense.complete = bool(dense.loaded.all())

    def _chunk(self, array: ShardedArray, c: int) -> np.ndarray:
        hit = self.get((array.name, c))
        if hit is None:
            self.decoded += 1
            hit = self.put((array.name, c), array.read_chunk(c))
        return hit  # type: ignore[no-any-return]

    def take(self, array: ShardedArray, rows: int, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats) of ``array`` (``rows`` committed): a new array.
        Each chunk involved is decoded at most once."""
        dense = self._dense(array, rows)
        if dense is not None:
            if not dense.complete:
                self._fill(array, dense, index // array.chunk)
            return dense.data.take(index, axis=0)  # much faster than data[index] for 2-D rows
        chunks = index // array.chunk
        out = np.empty((len(index), *array.tail), array.dtype)
        order = np.argsort(chunks, kind="stable")
        ordered = chunks[order]
        cuts = (np.flatnonzero(np.diff(ordered)) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, len(index)], strict=True):
            if a == b:
                continue
            c, picked = int(ordered[a]), order[a:b]
            out[picked] = self._chunk(array, c).take(index[picked] - c * array.chunk, axis=0)
        return out

    def slab(self, array: ShardedArray, rows: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of ``array`` (``rows`` committed): a new array."""
        if hi <= lo:
            return np.zeros((0, *array.tail), array.dtype)
        first, last = lo // array.chunk, (hi - 1) // array.chunk
        dense = self._dense(array, rows)
        if dense is not None:
            self._fill(array, dense, np.arange(first, last + 1))
            return dense.data[lo:hi].copy()
        pieces, scan = [], last - first >= _SCAN_CHUNKS
        for c in range(first, last + 1):
            hit = self.get((array.name, c)) if scan else self._chunk(array, c)
            if hit is None:  # a long scan decodes past the cache, not through it
                self.decoded += 1
            chunk = hit if hit is not None else array.read_chunk(c)
            base = c * array.chunk
            pieces.append(chunk[max(lo, base) - base : min(hi, base + array.chunk) - base])
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()


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

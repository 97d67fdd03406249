"""Zarr backend: one typed column per key, ragged per-atom arrays, sharded, crash-safe writes.

On-disk layout (version 2)
--------------------------
A Zarr v3 group. Its attribute ``asebytes_nodes`` (the *record*) holds::

    {"format": "asebytes_nodes.zarr", "version": 2, "generation": commits so far,
     "length": committed frames, "atoms": committed atoms, "n_atoms": "n_atoms" or "n<k>",
     "next_id": first unused array number, "retired": [arrays the last commit replaced],
     "columns": {key: {"id": "c3", "kind": ..., "dtype": ..., "shape": [...],
                       "type": ..., "count": frames carrying it, "nbytes": ...}},
     "crc": crc32c of the record's canonical JSON (sorted keys, no spaces) without "crc"}

and its arrays are::

    <n_atoms>        int64 (frames,)     atom count per frame; per-atom offsets are its cumsum
    c<k>/present     bool  (frames,)     does frame i carry the key? Only once some frame
                                         lacks it (``"present": true`` in its record); until
                                         then every frame carries it
    c<k>/values      kind "scalar": (frames,)            one exact scalar type (``type`` code,
                                                         see :func:`~asebytes_nodes.codec.scalar_type_code`)
                     kind "frame":  (frames, *shape)     numpy arrays of one shape and dtype
                     kind "atom":   (atoms, *shape)      per-atom arrays, all frames concatenated
                     kind "object": uint8 (nbytes,)      msgpack values (strings, lists, dicts, ...)
    c<k>/sizes       int64 (frames,)     kind "object" only: bytes of frame i's value
    .asebytes-lock   empty file          the writers' lock (local stores; see below)

Column names are ids (``c0``, ``c1``...) so keys may hold dots and slashes; an id is
never reused within a store. Arrays are chunked along their first axis to about
``chunk_bytes`` and sharded to about ``shard_bytes``, so a store is a few files per
column whatever its length. Every chunk's codec chain ends in ``crc32c`` (version 2),
so a damaged chunk is an error, never wrong numbers.

Commits and crashes
-------------------
The record is the only thing a commit writes, and it is written last (zarr replaces
``zarr.json`` atomically). Every write leaves each array the committed record names
readable with its committed content, at every moment:

- ``extend``/``append`` write past the committed length of the existing arrays (files
  replaced atomically, committed chunks kept byte for byte) and into new arrays, then
  commit ``length``. Data past ``length`` is ignored and overwritten by the next write.
- Replacements (``db[i] = atoms``, slice assignment, ``update``, ``drop``) are
  copy-on-write: every column they touch gets a new id whose arrays are the old ones
  with the rows replaced, all rows of one call in one pass; the commit points the
  record at the new ids and lists the old ones as ``retired``. In a local store the
  new array's unchanged shard files are hard links to the old one's (so a replacement
  costs the shards it changes, plus the whole ``present`` flags of the column); in an
  object store, or for arrays that zarr writes (other compressors), the columns touched
  are copied whole. A changed atom count rewrites per-atom columns from that frame on.
- The next writer deletes the retired arrays, and in a local store every other array
  and ``*.partial`` file no record names (left by a killed or failed writer); readers
  never delete anything. (:mod:`._zarr_rewrite` builds replacements, :mod:`._zarr_txn`
  checks, seals and cleans up after records, :mod:`._zarr_read` guards every read.)

A kill at any moment therefore leaves every frame at its old or its new version. A full
disk raises :class:`~asebytes_nodes.errors.DiskFullError`; what the write had made is
removed and the store stays at its last commit.

Concurrency
-----------
Local stores: writers take ``<store>/.asebytes-lock`` (``flock``, see
:class:`~._safety.StoreLock`) for a whole write, so two writers take turns; the file is
empty between writes (the holder is written into it only while the lock is held), and
readers never create, lock or change it, so reading leaves a DVC-tracked store as it was.
Readers take no lock: a read that meets a file being replaced (a checksum mismatch) or an
array deleted under it (the record's generation changed) is read again, up to a few
times, from the current record. Object stores (``s3://``...) have no lock; there a writer
never writes an object a committed record names: every array an ``extend`` or a
replacement writes gets a name unique to that write (``c<k>x<8 hex digits>``), forked
from the committed array by copying its full shard objects on the server (an ``extend``
there costs a copy request per shard object of the columns it writes), and the record is
replaced with ``If-Match`` on the version the writer began from (S3; other object
stores compare the generation just before). Of two simultaneous writers one commits;
the other raises :class:`~asebytes_nodes.errors.ConcurrentCommitError`, commits nothing,
removes its own arrays, and the winner's frames are intact (see :mod:`._zarr_remote`).

Writing and reading fast
------------------------
In a local store with a Blosc compressor (or none), :mod:`._zarr_shards` writes the
arrays: exactly the files zarr writes, without zarr's fixed per-array and per-chunk
async cost, and every rewritten file is replaced atomically. Remote stores, other
compressors and arrays laid out differently go through zarr, all arrays of one
``extend`` in one concurrent batch.

Reading keeps a decoded copy of whole columns, up to ``cache_bytes`` (64 MiB) per
handle, least recently used first out: zarr v3 costs a fixed ~0.5-1 ms per array read,
which would otherwise dominate column reads and random access on small stores. The
cache is dropped whenever the record changes; values returned are always fresh copies.

Version history
---------------
1. First layout (asebytes-nodes 0.1). ``generation`` was added later within version 1
   (a record without it reads as generation 0). Replacements wrote in place.
2. Chunk checksums (``crc32c`` after the compressor) on new arrays; the record's own
   ``crc``; copy-on-write replacements (``n_atoms``, ``next_id``, ``retired`` in the
   record; the atom-count array may be renamed ``n<k>``); the writers' lock file.
   Version-1 stores open and are written in the version-2 way (their arrays keep their
   codec, without chunk checksums; new columns get them); the first commit marks them 2.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..codec import decode_value, encode_value, scalar_type_code, type_code_dtype
from ..errors import (
    ASEBytesError,
    ConcurrentCommitError,
    DiskFullError,
    InvalidDataError,
    MissingExtraError,
    SerializationError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from ..options import BLOSC_COMPRESSORS, ZARR_COMPRESSORS
from ..registry import builtin
from ..rows import expand_rows
from ..validation import PER_ATOM_CALC
from ._base import MISSING, ColumnInfo, WritableBackend, check_format_record
from ._safety import DEFAULT_LOCK_TIMEOUT, StoreLock, disk_full, is_disk_full
from ._zarr_txn import array_names, check_inside, check_record, collect_garbage, new_name, seal, verify_seal

try:
    import zarr
    from zarr.api import asynchronous as zarr_async
    from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
    from zarr.core.sync import sync as zarr_sync

    from ._zarr_read import CheckedReads, _ReadFailure
    from ._zarr_remote import conditional, create_group, fork_array, publish, record_version
    from ._zarr_rewrite import CopyOnWrite
    from ._zarr_shards import (  # numcodecs, crc32c: zarr's
        chunk_codec,
        handles,
        write_new_array,
        write_rows,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The Zarr backend needs zarr>=3. Run: pip install "asebytes-nodes[zarr]"'
    ) from exc

__all__ = ["ZarrBackend"]

FORMAT_NAME = "asebytes_nodes.zarr"
FORMAT_VERSION = 2
LOCK_NAME = ".asebytes-lock"
_ATTR = "asebytes_nodes"
_WRITE_ALL = {"write_empty_chunks": True}  # zarr writes all-zero shards too: a missing one is damage
_NUMERIC = frozenset("biufc")
_DTYPE = attrgetter("dtype")
_SLAB_BYTES = 64 << 20  # read a contiguous slab instead of scattered chunks below this size


class ZarrBackend(CopyOnWrite, CheckedReads, WritableBackend):
    """Frames in a Zarr v3 group, local or at any fsspec URL (``s3://``, ``gs://``...).

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("frames.zarr", compressor="zstd", clevel=9)  # doctest: +SKIP

    Parameters
    ----------
    target
        A local path or an fsspec URL.
    readonly
        Refuse every write.
    storage_options
        fsspec options for URLs (credentials, endpoint).
    compressor, clevel
        ``"lz4"`` (default, Blosc with shuffle), ``"zstd"``, ``"blosclz"``, ``"zlib"``,
        ``"gzip"`` or ``None``; and its level.
    chunk_frames, shard_frames
        Rows per chunk and per shard (frames for per-frame columns, atoms for per-atom
        ones are scaled by the mean atom count). Default: about ``chunk_bytes`` (64 KiB)
        per chunk and ``shard_bytes`` (32 MiB) per shard.
    cache_bytes
        Decoded columns kept in memory by this handle for repeated reads; 0 turns it off.
    lock_timeout
        Seconds a writer of a local store waits for another writer before
        :class:`~asebytes_nodes.errors.StoreLockedError`.
    """

    name: ClassVar[str] = "zarr"
    extensions: ClassVar[tuple[str, ...]] = builtin("zarr").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("zarr").schemes
    supports_drop_keys: ClassVar[bool] = True
    read_batch_size: ClassVar[int] = 16384

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        storage_options: dict[str, Any] | None = None,
        compressor: str | None = "lz4",
        clevel: int = 5,
        chunk_frames: int | None = None,
        shard_frames: int | None = None,
        chunk_bytes: int = 64 << 10,
        shard_bytes: int = 32 << 20,
        cache_bytes: int = 64 << 20,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self._target = os.fspath(target)
        self._cache_limit = cache_bytes
        self._remote = "://" in self._target
        self.readonly = readonly
        self._storage_options = storage_options
        self._layout: dict[str, Any] = {
            "compressor": compressor,
            "clevel": clevel,
            "chunk_frames": chunk_frames,
            "shard_frames": shard_frames,
            "chunk_bytes": chunk_bytes,
            "shard_bytes": shard_bytes,
        }
        self._compressors = _compressors(compressor, clevel)
        # new arrays of a local store are written directly, in zarr's layout (see _zarr_shards)
        self._direct = None if self._remote else chunk_codec(compressor, clevel)
        self._lock_timeout = lock_timeout
        # writers hold it exclusively; readers only ever wait on it shared, and never create it
        where = Path(self._target) / LOCK_NAME
        lock = StoreLock(where, store=self._target, timeout=lock_timeout, clear=True)
        self._lock = None if self._remote else lock
        self._next_id = 0
        self._created: list[str] = []
        self._forks: dict[str, str] = {}  # object stores: array written -> committed array it extends
        self._began = 0
        self._etag: str | None = None
        self._document: dict[str, Any] = {}
        self._touched = False
        try:
            self._open()
        except OSError as exc:
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full(exc, self._target) from exc
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        self._arrays: dict[str, Any] = {}
        self._offsets: np.ndarray | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._deferred: list[Any] | None = None
        kwargs: dict[str, Any] = {"storage_options": self._storage_options} if self._remote else {}
        if not self._remote and self.readonly and not Path(self._target).exists():
            raise StoreNotFoundError(f"{self._target}: no such Zarr store (opened read-only)")
        fresh = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "length": 0, "atoms": 0, "columns": {}}
        fresh = seal({**fresh, "generation": 0, "n_atoms": "n_atoms", "next_id": 0, "retired": []})
        try:
            if self._remote and not self.readonly:  # S3: created with its record in one request, or not
                create_group(self._target, self._storage_options, {_ATTR: fresh})
            self._group = zarr.open_group(self._target, mode="r" if self.readonly else "a", **kwargs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreNotFoundError(f"{self._target}: no such Zarr store ({exc})") from exc
        except (ValueError, zarr.errors.ContainsArrayError, zarr.errors.MetadataValidationError) as exc:
            raise StoreCorruptedError(f"{self._target}: cannot open as a Zarr group ({exc})") from exc
        meta: Any = self._group.attrs.asdict().get(_ATTR)
        if meta is None:
            if any(True for _ in self._group.keys()):
                raise StoreCorruptedError(
                    f"{self._target}: a Zarr group, but not an asebytes-nodes store (no {_ATTR!r} attribute)"
                )
            meta = fresh
            if not self.readonly:  # under the lock: never over a record another writer just made
                with self._lock.exclusive() if self._lock is not None else nullcontext():
                    found = zarr.open_group(self._target, mode="a", **kwargs).attrs.asdict().get(_ATTR)
                    if found is None:
                        self._group.attrs[_ATTR] = meta
                    else:
                        meta = found
                        self._check(meta)
        else:
            self._check(meta)
        self._meta: dict[str, Any] = meta

    def _check(self, meta: Any) -> None:
        """Refuse a record of another format or version, damaged, or naming foreign paths."""
        check_format_record(self._target, meta, FORMAT_NAME, FORMAT_VERSION, "Zarr")
        verify_seal(self._target, meta)
        check_record(self._target, meta)
        if not self._remote:
            check_inside(Path(self._target), array_names(meta))

    def _refresh(self) -> None:
        """Re-read the committed metadata (another process may have written)."""
        if not self._remote:
            try:  # the group's own record, without zarr's per-call overhead
                record = json.loads((Path(self._target) / "zarr.json").read_bytes())
                if record.get("attributes", {}).get(_ATTR) == self._meta:
                    return
            except (OSError, ValueError):
                pass  # let zarr report what is wrong
        kwargs: dict[str, Any] = {"storage_options": self._storage_options} if self._remote else {}
        try:
            group = zarr.open_group(self._target, mode="r" if self.readonly else "a", **kwargs)
            meta: Any = group.attrs.asdict().get(_ATTR, self._meta)
        except (ValueError, OSError, zarr.errors.BaseZarrError) as exc:
            if isinstance(exc, ASEBytesError):
                raise
            raise StoreCorruptedError(
                f"{self._target}: the group's record cannot be read ({type(exc).__name__}: {exc}); "
                "restore the store from a copy"
            ) from exc
        if meta != self._meta:
            self._check(meta)
            self._group, self._meta = group, meta
            self._forget()

    def _forget(self) -> None:
        """Drop everything read under an older record: array handles, offsets, decoded columns."""
        self._arrays, self._offsets = {}, None
        self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self._target,
            "readonly": self.readonly,
            "storage_options": self._storage_options,
            "layout": self._layout,
            "cache_bytes": self._cache_limit,
            "lock_timeout": self._lock_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["target"],
            readonly=state["readonly"],
            storage_options=state["storage_options"],
            cache_bytes=state["cache_bytes"],
            lock_timeout=state.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
            **state["layout"],
        )

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()

    @property
    def location(self) -> str:
        return self._target

    # -- helpers -----------------------------------------------------------------------------
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

    def _counts_name(self) -> str:
        return str(self._meta.get("n_atoms", "n_atoms"))

    def _atom_offsets(self) -> np.ndarray:
        """Cumulative atom counts of the committed frames (length + 1 entries)."""
        n = self._meta["length"]
        if self._offsets is None or len(self._offsets) != n + 1:
            counts = self._slab(self._counts_name(), n, 0, n)
            self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return self._offsets

    def _byte_offsets(self, spec: dict[str, Any]) -> np.ndarray:
        n = self._meta["length"]
        sizes = self._slab(spec["id"] + "/sizes", n, 0, n)
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def _cached(self, name: str, extent: int, fill: bool = True) -> np.ndarray | None:
        """The first ``extent`` rows of array ``name``, decoded, if they fit in the cache
        (without ``fill``: only if they are there already)."""
        hit = self._cache.get(name)
        if hit is not None and len(hit) == extent:
            self._cache.move_to_end(name)
            return hit
        if not fill:
            return None
        arr = self._array(name)
        nbytes = extent * arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        if nbytes > self._cache_limit:
            return None
        hit = self._cache[name] = (
            self._read(name, lambda a: a[:extent]) if extent else np.zeros((0, *arr.shape[1:]), arr.dtype)
        )
        held = sum(a.nbytes for a in self._cache.values())
        while held > self._cache_limit:
            held -= self._cache.popitem(last=False)[1].nbytes
        return hit

    def _slab(self, name: str, extent: int, lo: int, hi: int, fill: bool = True) -> np.ndarray:
        """Rows ``lo:hi`` of array ``name`` (committed rows: ``extent``) as a private copy;
        ``fill=False`` reads only those rows unless the whole array is cached already."""
        cached = self._cached(name, extent, fill)
        if cached is not None:
            return cached[lo:hi].copy()
        arr = self._array(name)
        return self._read(name, lambda a: a[lo:hi]) if hi > lo else np.zeros((0, *arr.shape[1:]), arr.dtype)

    def _take(self, name: str, extent: int, frames: np.ndarray) -> np.ndarray:
        """Rows ``frames`` (sorted, unique) of array ``name``: a private copy."""
        lo, hi = int(frames[0]), int(frames[-1]) + 1
        cached = self._cached(name, extent)
        if cached is not None:
            return cached[lo:hi].copy() if hi - lo == len(frames) else cached[frames]
        arr = self._array(name)
        row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        if (hi - lo) * row_bytes <= _SLAB_BYTES or hi - lo <= 2 * len(frames):
            slab = self._read(name, lambda a: a[lo:hi])
            return slab if hi - lo == len(frames) else slab[frames - lo]
        return self._read(name, lambda a: a.oindex[frames])

    def _take_ragged(self, name: str, offsets: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
        """Per-frame pieces of a ragged (concatenated) array for sorted unique ``frames``."""
        starts, stops = offsets[frames], offsets[frames + 1]
        cached = self._cached(name, int(offsets[-1]))
        if cached is not None:  # gather only the wanted rows, in one fancy-indexed copy
            lengths = stops - starts
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            rows = np.arange(bounds[-1]) + np.repeat(starts - bounds[:-1], lengths)
            slab, starts, stops = cached[rows], bounds[:-1], bounds[1:]
        else:
            lo = int(starts[0])
            slab = self._slab(name, int(offsets[-1]), lo, int(stops[-1]))
            starts, stops = starts - lo, stops - lo
        return [slab[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]

    def _chunking(self, tail: tuple[int, ...], dtype: np.dtype[Any], scale: float) -> tuple[int, int]:
        """Rows per chunk and per shard for an array of rows shaped ``tail`` (``scale``: per-atom
        arrays count ``chunk_frames``/``shard_frames`` in mean atoms per frame)."""
        layout = self._layout
        row_bytes = max(int(np.prod(tail, dtype=np.int64)) * dtype.itemsize, 1)
        if layout["chunk_frames"]:
            chunk = max(1, int(layout["chunk_frames"] * scale))
        else:
            chunk = max(1, layout["chunk_bytes"] // row_bytes)
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
            config=_WRITE_ALL,
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

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        self._refresh()
        return int(self._meta["length"])

    def keys(self) -> list[str]:
        return sorted(k for k, spec in self._meta["columns"].items() if spec["count"] > 0)

    def key_counts(self) -> dict[str, int]:
        return {k: int(self._meta["columns"][k]["count"]) for k in self.keys()}

    def format_info(self) -> dict[str, Any]:
        return {k: self._meta[k] for k in ("format", "version", "generation") if k in self._meta}

    def schema(self) -> dict[str, ColumnInfo]:
        out = {}
        for key in self.keys():
            spec = self._meta["columns"][key]
            if spec["kind"] == "object":
                out[key] = ColumnInfo(dtype="object", shape=(), per_atom=False)
            else:
                shape = tuple(spec["shape"])
                per_atom = spec["kind"] == "atom"
                dtype = str(np.dtype(spec["dtype"]))
                out[key] = ColumnInfo(dtype, (-1, *shape) if per_atom else shape, per_atom)
        return out

    def columns(self, index: int = 0) -> list[str]:
        return self._guarded(lambda: self._columns(index))  # type: ignore[no-any-return]

    def _columns(self, index: int) -> list[str]:
        n = self._meta["length"]
        return [
            k
            for k, spec in self._meta["columns"].items()
            if spec["count"] == n
            or (spec["count"] and bool(self._slab(spec["id"] + "/present", n, index, index + 1)[0]))
        ]

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self._guarded(lambda: self._read_rows(indices, keys))  # type: ignore[no-any-return]

    def _read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        frames, where = np.unique(idx, return_inverse=True)
        wanted = (
            self._meta["columns"]
            if keys is None
            else {k: self._meta["columns"][k] for k in keys if k in self._meta["columns"]}
        )
        rows: list[dict[str, Any]] = [{} for _ in frames]
        for key, spec in wanted.items():
            if not spec["count"]:
                continue
            values, present = self._read_values(spec, frames)
            for j in np.flatnonzero(present).tolist():
                rows[j][key] = values[j]
        if len(frames) == len(idx) and (where == np.arange(len(idx))).all():
            return rows
        return expand_rows(rows, where)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        return self._guarded(lambda: self._read_column(key, indices))  # type: ignore[no-any-return]

    def _read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        spec = self._meta["columns"].get(key)
        idx = np.asarray(indices, dtype=np.int64)
        if spec is None or not spec["count"]:
            return [MISSING] * len(idx)
        frames, where = np.unique(idx, return_inverse=True)
        values, present = self._read_values(spec, frames)
        if spec["kind"] == "frame" and present.all():
            return np.asarray(values)[where]  # one stacked array, no per-frame objects
        if len(frames) == len(idx) and present.all() and (where == np.arange(len(idx))).all():
            return values
        out = [values[j] if present[j] else MISSING for j in where.tolist()]
        return out

    def _read_values(self, spec: dict[str, Any], frames: np.ndarray) -> tuple[Any, np.ndarray]:
        """Values of one column at sorted unique ``frames``, and which frames carry it."""
        base, length = spec["id"], self._meta["length"]
        n = len(frames)
        present = (
            np.ones(n, bool) if spec["count"] == length else self._take(base + "/present", length, frames)
        )
        kind = spec["kind"]
        if kind == "scalar":
            values = self._take(base + "/values", length, frames)
            return (values.tolist() if spec["type"] in ("f", "i", "b") else list(values)), present
        if kind in ("frame", "atom") and 0 in spec["shape"]:  # written before issue 19: no data to read
            return self._empty_values(spec, frames), present
        if kind == "frame":
            values = self._take(base + "/values", length, frames)
            if not spec["shape"]:  # 0-d arrays stay 0-d arrays, not the numpy scalars iteration gives
                return [v.reshape(()) for v in values[:, None]], present
            return values, present
        if kind == "atom":
            offsets = self._atom_offsets()
            return self._take_ragged(base + "/values", offsets, frames), present
        offsets = self._byte_offsets(spec)
        blobs = self._take_ragged(base + "/values", offsets, frames)
        return [
            decode_value(b.tobytes()) if p else None for b, p in zip(blobs, present, strict=True)
        ], present

    def _empty_values(self, spec: dict[str, Any], frames: np.ndarray) -> list[np.ndarray]:
        """Values of a column whose rows hold no element (a zero-length axis): zarr cannot read
        its empty chunk grid, and nothing needs reading. Stores written now keep such values in
        object columns; this reads the typed columns of older stores."""
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if spec["kind"] == "frame":
            return [np.zeros(shape, dtype) for _ in frames.tolist()]
        offsets = self._atom_offsets()
        return [np.zeros((int(offsets[i + 1] - offsets[i]), *shape), dtype) for i in frames.tolist()]

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write: the writers' lock (local stores), the current record, earlier writes'
        garbage removed. On failure, what the write made is removed and a full disk becomes
        a :class:`DiskFullError`; the store stays at its last commit."""
        self._check_writable()
        with self._lock.exclusive() if self._lock is not None else nullcontext():
            if self._remote:  # the version our commit will be conditional on, read before the record
                self._etag, self._document = record_version(self._group.store)
            self._refresh()
            self._began = int(self._meta.get("generation", 0))
            self._next_id = max(int(self._meta.get("next_id", 0)), _first_free(self._meta))
            self._created, self._forks = [], {}
            try:
                self._collect(self._meta.get("retired", []))
                yield
            except BaseException as exc:
                self._deferred = None
                self._forget()
                with suppress(Exception):  # best effort: the next writer collects what is left
                    self._collect(self._created)
                if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                    raise disk_full(exc, self._target) from exc
                if self._remote and isinstance(exc, Exception) and not isinstance(exc, ConcurrentCommitError):
                    with suppress(Exception):  # arrays we read may have been collected after a commit
                        if self._remote_generation() != self._began:
                            raise self._conflict() from exc
                raise
            finally:
                self._forks = {}

    def _collect(self, names: Sequence[str]) -> None:
        """Remove arrays no record uses: ``names`` (retired or made by a failed write); in a
        local store (whose lock we hold) also every other unused array and temporary file."""
        if not self._remote:
            collect_garbage(Path(self._target), self._meta, everything=True)
            return
        for name in names:
            if name not in array_names(self._meta):
                zarr_sync(self._group.store.delete_dir(name))

    def _new_id(self, prefix: str) -> str:
        """A name no array of this store has had: ``c<k>`` for columns, ``n<k>`` for atom counts."""
        name = new_name(prefix, self._next_id, self._remote)
        self._next_id += 1
        self._created.append(name)
        return name

    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows:
            return
        with self._writing():
            self._extend(rows)

    def _extend(self, rows: Sequence[dict[str, Any]]) -> None:
        meta = self._meta
        n0, atoms0 = meta["length"], meta["atoms"]
        carried = Counter(chain.from_iterable(rows))  # key -> rows carrying it, in C
        if carried.get("arrays.numbers") == len(rows):
            counts = np.fromiter(map(len, map(itemgetter("arrays.numbers"), rows)), np.int64, len(rows))
        else:
            counts = np.array([_n_atoms(r) for r in rows], dtype=np.int64)
        columns = {k: dict(v) for k, v in meta["columns"].items()}
        batches: dict[str, tuple[np.ndarray, Any]] = {}
        widened: dict[str, tuple[np.ndarray, Any]] = {}  # columns rewritten whole as object columns
        retired: list[str] = []
        for key, count in carried.items():  # plan and check every column before anything is written
            everywhere = count == len(rows)
            values = list(map(itemgetter(key), rows)) if everywhere else [r.get(key, MISSING) for r in rows]
            present = np.ones(len(rows), bool) if everywhere else None
            spec = columns.get(key)
            if spec is None:  # a new column: guess from its first value, check all; mixed? look at all
                first = next(j for j, v in enumerate(values) if v is not MISSING)
                cid = self._new_id("c")
                spec = _infer_spec(key, values[first : first + 1], counts[first : first + 1], cid)
                try:
                    batches[key] = _encode_batch(key, spec, values, counts, present)
                except _Misfit:
                    spec = _infer_spec(key, values, counts, cid)
                    batches[key] = _encode_batch(key, spec, values, counts, present)
            else:
                try:
                    batches[key] = _encode_batch(key, spec, values, counts, present)
                except _Misfit:  # a value of another type: the column holds several types from now on
                    spec = _object_spec(self._new_id("c"))
                    retired.append(columns[key]["id"])
                    stored = self._stored_values(columns[key])
                    widened[key] = _encode_batch(key, spec, stored + values, counts)
            columns[key] = spec
        n1, atoms1 = n0 + len(rows), atoms0 + int(counts.sum())
        counts_name = self._counts_name()
        if self._remote:  # no lock: never write into an array a committed record names
            counts_name, moved = self._relocate(columns, widened)
            retired += moved
        self._deferred = []  # every array is created or grown, then written, in one concurrent batch
        try:
            self._write_range(counts_name, n0, n1, counts, (), np.int64)
            for key, spec in columns.items():
                if key in widened:
                    present, data = widened[key]
                    self._append_column(spec, present, data, counts, 0, n1, 0, atoms1)
                else:
                    present, data = batches.get(key, (np.zeros(len(rows), bool), None))
                    self._append_column(spec, present, data, counts, n0, n1, atoms0, atoms1)
                spec["count"] += int(present.sum())
            zarr_sync(_gather(self._deferred))
        finally:
            self._deferred = None
        self._commit(retired=retired, n_atoms=counts_name, length=n1, atoms=atoms1, columns=columns)

    def _relocate(
        self, columns: dict[str, dict[str, Any]], widened: Collection[str]
    ) -> tuple[str, list[str]]:
        """Object stores: new names for the atom-count array and every committed column an
        ``extend`` writes (``columns`` is changed), each array forked from the committed one
        (see :mod:`._zarr_remote`). Returns the atom-count array's name and the names retired."""
        committed, retired = self._committed_arrays(), []
        counts = self._new_id("n")
        if self._counts_name() in committed:
            self._forks[counts] = self._counts_name()
            retired.append(self._counts_name())
        for key, spec in columns.items():
            old = self._meta["columns"].get(key)
            if old is None or key in widened:
                continue
            spec["id"] = self._new_id("c")
            retired.append(old["id"])
            for leaf in ("/values", "/sizes", "/present"):
                if old["id"] + leaf in committed:
                    self._forks[spec["id"] + leaf] = old["id"] + leaf
        return counts, retired

    def _write_range(
        self,
        name: str,
        start: int,
        stop: int,
        data: Any,
        tail: tuple[int, ...],
        dtype: Any,
        scale: float = 1.0,
    ) -> None:
        """Write ``data`` at rows ``start:stop`` of array ``name``, growing or creating it.

        Inside ``extend`` the write joins the batch run at its end; otherwise it runs now.
        """
        dtype = np.dtype(dtype)
        source = self._forks.get(name)
        if source is not None:  # rewrites the shard object it starts in: with its committed rows
            start, data = self._kept_rows(source, start, data, tail, dtype)
        if self._direct is not None and handles(dtype):
            data = np.asarray(data, dtype).reshape(stop - start, *tail)
            root, fresh = Path(self._target), name not in self._committed_arrays()
            if fresh:
                chunk, shard = self._chunking(tail, dtype, scale)
                write_new_array(root, name, stop, start, data, chunk, shard, self._direct)
            if fresh or write_rows(root, name, stop, start, data, self._direct):
                self._arrays.pop(name, None)  # its zarr handle would hold the old shape
                return
        put = self._put(name, start, stop, data, tail, dtype, scale)
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
        self, name: str, start: int, stop: int, data: Any, tail: tuple[int, ...], dtype: Any, scale: float
    ) -> None:
        source = self._forks.get(name)
        if source is not None:
            arr = await fork_array(self._group.store_path, source, name, start, stop)
            self._arrays[name] = zarr.Array(arr)
        elif name in self._committed_arrays():
            arr = self._arrays.get(name)
            arr = arr.async_array.with_config(_WRITE_ALL) if arr is not None else await self._open_async(name)
            if arr.shape[0] != stop:
                await arr.resize((stop, *arr.shape[1:]))
            self._arrays[name] = zarr.Array(arr)  # the handle readers use sees the new shape
        else:
            arr = await self._create(name, stop, tail, dtype, scale)
        if stop > start:
            await arr.setitem(slice(start, stop), data)

    async def _open_async(self, name: str) -> Any:
        arr = await zarr_async.open_array(store=self._group.store_path, path=name, zarr_format=3)
        arr = arr.with_config(_WRITE_ALL)
        self._arrays[name] = zarr.Array(arr)
        return arr

    def _append_column(
        self,
        spec: dict[str, Any],
        present: np.ndarray,
        data: Any,
        counts: np.ndarray,
        n0: int,
        n1: int,
        atoms0: int,
        atoms1: int,
    ) -> None:
        base, kind = spec["id"], spec["kind"]
        if spec.get("present", True):
            self._write_range(base + "/present", n0, n1, present, (), bool)
        elif spec["count"] != n0 or not present.all():  # the first frame without it: flag them all
            before = np.full(n0, spec["count"] == n0, bool)
            self._write_range(base + "/present", 0, n1, np.concatenate([before, present]), (), bool)
            spec["present"] = True
        tail, dtype = tuple(spec.get("shape", ())), spec.get("dtype", "uint8")
        if kind == "atom":
            mean = atoms1 / max(n1, 1)
            if data is None:
                data = np.zeros((atoms1 - atoms0, *tail), dtype)
            self._write_range(base + "/values", atoms0, atoms1, data, tail, dtype, mean)
        elif kind == "object":
            blob, sizes = data if data is not None else (b"", np.zeros(n1 - n0, np.int64))
            start = spec["nbytes"]
            self._write_range(base + "/sizes", n0, n1, sizes, (), np.int64)
            self._write_range(
                base + "/values", start, start + len(blob), np.frombuffer(blob, np.uint8), (), np.uint8, 256
            )
            spec["nbytes"] = start + len(blob)
        else:
            if data is None:
                data = np.zeros((n1 - n0, *tail), dtype)
            self._write_range(base + "/values", n0, n1, data, tail, dtype)

    def _commit(self, retired: Sequence[str] = (), **changes: Any) -> None:
        """Publish the new record: the one write that makes a write visible. ``retired``:
        arrays it stops using (the next writer deletes them). On an object store the record is
        replaced only if no other writer committed since this write began."""
        store = self._group.store
        if self._remote and not conditional(store) and self._remote_generation() != self._began:
            raise self._conflict()
        meta = {
            **self._meta,
            "n_atoms": self._counts_name(),
            **changes,
            "version": FORMAT_VERSION,
            "generation": self._began + 1,
            "next_id": self._next_id,
            "retired": sorted(set(retired)),
        }
        meta = seal(meta)
        if not self._remote:
            self._group.attrs[_ATTR] = meta
        else:
            document = {**self._document, "attributes": {**self._document.get("attributes", {}), _ATTR: meta}}
            if not publish(store, document, self._etag):
                raise self._conflict()
        self._meta = meta
        self._created = []
        self._offsets = None
        self._cache.clear()

    def _conflict(self) -> ConcurrentCommitError:
        return ConcurrentCommitError(
            f"{self._target}: another writer committed to this store while this write ran "
            f"(generation {self._began} became {self._remote_generation()}); this write was not "
            "committed. Object stores have no lock: run one writer at a time, then repeat the write"
        )

    def _remote_generation(self) -> int:
        """The generation of the record as the object store holds it now."""
        group = zarr.open_group(self._target, mode="r", storage_options=self._storage_options)
        return int(group.attrs.asdict().get(_ATTR, {}).get("generation", 0))

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        latest = {int(i): row for i, row in zip(np.asarray(indices).tolist(), rows, strict=True)}
        order = sorted(latest)  # a repeated row: the last value wins, as in a list
        rows = [latest[i] for i in order]
        with self._writing():
            known = self._meta["columns"]
            removed = [{k for k in known if k not in row} for row in rows]
            counts = np.fromiter(map(_n_atoms, rows), np.int64, len(rows))
            self._rewrite(np.array(order, np.int64), rows, removed, counts)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        merged: dict[int, dict[str, Any]] = {}
        for i, update in zip(np.asarray(indices).tolist(), updates, strict=True):
            merged.setdefault(int(i), {}).update(update)
        order = sorted(merged)
        with self._writing():
            self._rewrite(np.array(order, np.int64), [merged[i] for i in order], [()] * len(order))

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        order = np.unique(np.asarray(indices, np.int64))
        with self._writing():
            gone = {k for k in keys if k in self._meta["columns"]}
            if gone and len(order):
                self._rewrite(order, [{}] * len(order), [gone] * len(order))

    def _encode_rows(
        self,
        key: str,
        spec: dict[str, Any] | None,
        values: list[Any],
        counts: np.ndarray,
        indices: np.ndarray,
        dropping: np.ndarray,
        label: Callable[[int], str],
    ) -> tuple[dict[str, Any], Any, np.ndarray | None]:
        """How the replaced rows ``indices`` store ``values`` of ``key`` (MISSING: not set):
        ``(spec, data, None)``, or for a column widened to an object column
        ``(spec, data of every frame, present flags of every frame)``."""
        if spec is None:  # a new column: guess from its first value, check all; mixed? look at all
            first = next(j for j, v in enumerate(values) if v is not MISSING)
            cid = self._new_id("c")
            spec = _infer_spec(key, values[first : first + 1], counts[first : first + 1], cid)
            try:
                return spec, _encode_batch(key, spec, values, counts, label=label)[1], None
            except _Misfit:
                spec = _infer_spec(key, values, counts, cid)
                return spec, _encode_batch(key, spec, values, counts, label=label)[1], None
        if all(v is MISSING for v in values):  # only removals: nothing to encode
            if spec["kind"] == "object":
                return spec, (b"", np.zeros(len(values), np.int64)), None
            rows = int(counts.sum()) if spec["kind"] == "atom" else len(values)
            return spec, np.zeros((rows, *spec["shape"]), spec["dtype"]), None
        try:
            return spec, _encode_batch(key, spec, values, counts, label=label)[1], None
        except _Misfit:  # a value of another type: the column holds several types from now on
            stored = self._stored_values(spec)
            for i, value, gone in zip(indices.tolist(), values, dropping.tolist(), strict=True):
                if value is not MISSING or gone:
                    stored[i] = value
            wide = _object_spec(self._new_id("c"))
            present, data = _encode_batch(key, wide, stored, np.zeros(len(stored), np.int64))
            return wide, data, present

    def _stored_values(self, spec: dict[str, Any]) -> list[Any]:
        """Every committed frame's value of a column, MISSING where a frame lacks it."""
        n = self._meta["length"]
        if not n or not spec["count"]:
            return [MISSING] * n
        values, present = self._read_values(spec, np.arange(n))
        return [v if p else MISSING for v, p in zip(values, present.tolist(), strict=True)]


async def _gather(writes: list[Any]) -> None:
    """Run zarr writes together on zarr's event loop: their encoding and I/O overlap."""
    await asyncio.gather(*writes)


def _compressors(name: str | None, level: int) -> list[Any]:
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


def _n_atoms(row: dict[str, Any]) -> int:
    for key in ("arrays.numbers", "arrays.positions"):
        if key in row:
            return len(row[key])
    return 0


def _first_free(meta: dict[str, Any]) -> int:
    """One past the largest array number a record uses (version-1 records keep no counter)."""
    numbers = [int(name[1:].partition("x")[0]) for name in array_names(meta) if name[1:2].isdigit()]
    return max(numbers, default=-1) + 1


def _is_per_atom_key(key: str) -> bool:
    return key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)


def _signature(given: list[Any]) -> set[Any]:
    """The distinct (dtype, shape) of numeric numpy values; None stands for anything else (zarr
    hands back native byte order, so arrays of the other byte order count as anything else)."""
    return {
        (v.dtype.str, v.shape)
        if type(v) is np.ndarray and v.dtype.kind in _NUMERIC and v.dtype.isnative
        else None
        for v in given
    }


def _infer_spec(key: str, values: list[Any], counts: np.ndarray, column_id: str) -> dict[str, Any]:
    """How a new column is stored, from the values it first arrives with."""
    present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    given = [v for v in values if v is not MISSING]
    spec: dict[str, Any] = {"id": column_id, "count": 0, "present": False}
    signature = _signature(given)
    if None not in signature:
        dtypes = {dtype for dtype, _ in signature}
        tails = {shape[1:] for _, shape in signature if shape}
        # a zero-length axis in a row (a value of shape (2, 0)) makes zarr's chunk grid empty:
        # such values go to an object column, which keeps any shape
        if _is_per_atom_key(key) and len(dtypes) == 1 and len(tails) == 1 and 0 not in (tail := tails.pop()):
            lengths = np.fromiter((v.shape[0] if v.ndim else -1 for v in given), np.int64, len(given))
            if np.array_equal(lengths, counts[present]):
                return {**spec, "kind": "atom", "dtype": dtypes.pop(), "shape": list(tail)}
        if len(signature) == 1 and not _is_per_atom_key(key):
            dtype, shape = signature.pop()
            if 0 not in shape:
                return {**spec, "kind": "frame", "dtype": dtype, "shape": list(shape)}
    code = scalar_type_code(given)
    if code is not None:
        return {**spec, "kind": "scalar", "type": code, "dtype": type_code_dtype(code).str, "shape": []}
    return _object_spec(column_id)


def _encode_batch(
    key: str,
    spec: dict[str, Any],
    values: list[Any],
    counts: np.ndarray,
    present: np.ndarray | None = None,
    label: Callable[[int], str] = "frame {}".format,
) -> tuple[np.ndarray, Any]:
    """(present flags, data to write) for one column of a batch.

    ``present`` may be given when the caller knows every row carries the key. A value that does
    not fit the column exactly raises :class:`InvalidDataError` (the caller widens the column
    to an object column); ``label(j)`` names value ``j`` in messages ("frame 3", "row 7").
    """
    if present is None:
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    everywhere = bool(present.all())
    given = values if everywhere else [v for v in values if v is not MISSING]
    kind = spec["kind"]
    if kind == "object":
        return present, _encode_objects(key, values, label)
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    if 0 in shape:  # an older store's typed column of empty rows: zarr cannot grow it, so widen it
        raise _conflict(key, spec, "a value for a column zarr cannot write", label(0))
    if kind in ("atom", "frame") and everywhere:
        data = _stack_uniform(given, kind, dtype, shape, counts)
        if data is not None:
            return present, data
    if kind == "scalar":
        if given and scalar_type_code(given) != spec["type"]:  # exact types only: never convert
            code = spec["type"]
            j = next(j for j, v in enumerate(values) if v is not MISSING and scalar_type_code([v]) != code)
            raise _conflict(key, spec, f"a value of type {type(values[j]).__name__}", label(j))
        data = np.zeros(len(values), dtype)
        data[present] = given
        return present, data
    expected = [(dtype.str, (c, *shape) if kind == "atom" else shape) for c in counts[present].tolist()]
    got = [(v.dtype.str, v.shape) if type(v) is np.ndarray else None for v in given]
    if got != expected:  # one list comparison in C; find the culprit only on failure
        j = next(j for j, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        bad = given[j]
        what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
        raise _conflict(key, spec, what, label(int(np.flatnonzero(present)[j])))
    if kind == "atom":
        if present.all():
            return present, np.concatenate(given) if given else np.zeros((0, *shape), dtype)
        parts = [
            v if v is not MISSING else np.zeros((int(c), *shape), dtype)
            for v, c in zip(values, counts, strict=True)
        ]
        return present, np.concatenate(parts)
    if present.all():
        return present, np.stack(given)
    data = np.zeros((len(values), *shape), dtype)
    data[present] = given
    return present, data


def _stack_uniform(
    given: list[Any], kind: str, dtype: np.dtype[Any], shape: tuple[int, ...], counts: np.ndarray
) -> np.ndarray | None:
    """The batch as one array when every value is an ndarray of the stored dtype and shape, else None.

    Type, dtype and length checks run through ``map`` in C; numpy checks the shapes while it
    joins the values. None sends the caller to the slow path, which names the bad value.
    """
    if not given or set(map(type, given)) != {np.ndarray} or set(map(_DTYPE, given)) != {dtype}:
        return None
    try:
        if kind == "atom":
            lengths = np.fromiter(map(len, given), np.int64, len(given))
            if not np.array_equal(lengths, counts):
                return None
            data = np.concatenate(given)
        else:
            data = np.stack(given)
    except (ValueError, TypeError):
        return None
    return data if data.shape[1:] == shape else None


def _encode_objects(key: str, values: list[Any], label: Callable[[int], str]) -> tuple[bytes, np.ndarray]:
    """(msgpack blobs joined, size of each) of an object column's values; MISSING takes 0 bytes."""
    blobs = []
    for j, value in enumerate(values):
        try:
            blobs.append(encode_value(value) if value is not MISSING else b"")
        except SerializationError as exc:
            raise SerializationError(f"{label(j)}: key {key!r}: {exc}; nothing was written") from exc
    return b"".join(blobs), np.fromiter(map(len, blobs), np.int64, len(blobs))


def _object_spec(column_id: str) -> dict[str, Any]:
    """A new object column: msgpack values, which hold every storable value exactly."""
    return {"id": column_id, "count": 0, "present": False, "kind": "object", "nbytes": 0}


class _Misfit(InvalidDataError):
    """A value that does not fit its column's stored type exactly (the column is widened)."""


def _conflict(key: str, spec: dict[str, Any], got: str, where: str) -> _Misfit:
    stored = {
        "scalar": f"Python/numpy scalars of type code {spec.get('type')!r}",
        "frame": f"arrays of dtype {spec.get('dtype')} and shape {tuple(spec.get('shape', ()))}",
        "atom": f"per-atom arrays of dtype {spec.get('dtype')} and shape (n_atoms, "
        f"{', '.join(map(str, spec.get('shape', ())))})",
    }[spec["kind"]]
    return _Misfit(
        f"{where}: column {key!r} stores {stored}, but got {got}; nothing was written. Convert the value "
        "to the stored type, or use another key"
    )

"""Zarr backend: one typed column per key, ragged per-atom arrays, sharded, crash-safe appends.

On-disk layout (version 1)
--------------------------
A Zarr v3 group. Its attribute ``asebytes_nodes`` holds::

    {"format": "asebytes_nodes.zarr", "version": 1, "generation": commits so far,
     "length": committed frames, "atoms": committed atoms,
     "columns": {key: {"id": "c3", "kind": ..., "dtype": ..., "shape": [...],
                       "type": ..., "count": frames carrying it, "nbytes": ...}}}

and its arrays are::

    n_atoms          int64 (frames,)     atom count per frame; per-atom offsets are its cumsum
    c<k>/present     bool  (frames,)     does frame i carry the key? Only once some frame
                                         lacks it (``"present": true`` in its record); until
                                         then every frame carries it
    c<k>/values      kind "scalar": (frames,)            one exact scalar type (``type`` code,
                                                         see :func:`~asebytes_nodes.codec.scalar_type_code`)
                     kind "frame":  (frames, *shape)     numpy arrays of one shape and dtype
                     kind "atom":   (atoms, *shape)      per-atom arrays, all frames concatenated
                     kind "object": uint8 (nbytes,)      msgpack values (strings, lists, dicts, ...)
    c<k>/sizes       int64 (frames,)     kind "object" only: bytes of frame i's value

Column names are ids (``c0``, ``c1``...) so keys may hold dots and slashes. Arrays are
chunked along their first axis to about ``chunk_bytes`` and sharded to about
``shard_bytes``, so a store is a few files per column whatever its length.

An ``extend`` writes its data past the committed length and commits ``length``
(with the column table) last, in the group's metadata: a writer killed mid-way
leaves a store that opens with the earlier frames. Data past ``length`` is ignored
and overwritten by the next ``extend``. Replacing rows (``db[i] = atoms``, ``update``)
writes in place. Every commit bumps ``generation``, so a reader that sees the same
record knows nothing was written since (local stores re-read ``zarr.json`` directly
before each read, a few tens of microseconds).

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
   (a record without it reads as generation 0).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..codec import decode_value, encode_value, scalar_misfit, scalar_type_code, type_code_dtype
from ..convert import copy_row
from ..errors import (
    InvalidDataError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from ..validation import PER_ATOM_CALC
from ._base import MISSING, ColumnInfo, WritableBackend, check_format_record

try:
    import zarr
    from zarr.api import asynchronous as zarr_async
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
    from zarr.core.sync import sync as zarr_sync

    from ._zarr_shards import chunk_codec, handles, write_new_array, write_rows  # numcodecs, crc32c: zarr's
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The Zarr backend needs zarr>=3. Run: pip install "asebytes-nodes[zarr]"'
    ) from exc

__all__ = ["ZarrBackend"]

FORMAT_NAME = "asebytes_nodes.zarr"
FORMAT_VERSION = 1
_ATTR = "asebytes_nodes"
_NUMERIC = frozenset("biufc")
_DTYPE = attrgetter("dtype")
_SLAB_BYTES = 64 << 20  # read a contiguous slab instead of scattered chunks below this size


class ZarrBackend(WritableBackend):
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
    """

    name: ClassVar[str] = "zarr"
    extensions: ClassVar[tuple[str, ...]] = (".zarr",)
    schemes: ClassVar[tuple[str, ...]] = ("s3", "gs", "gcs", "az", "abfs")
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
        self._open()

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        self._arrays: dict[str, Any] = {}
        self._offsets: np.ndarray | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._deferred: list[Any] | None = None
        kwargs: dict[str, Any] = {"storage_options": self._storage_options} if self._remote else {}
        if not self._remote and self.readonly and not Path(self._target).exists():
            raise StoreNotFoundError(f"{self._target}: no such Zarr store (opened read-only)")
        try:
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
            meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "length": 0, "atoms": 0, "columns": {}}
            if not self.readonly:
                self._group.attrs[_ATTR] = meta
        else:
            check_format_record(self._target, meta, FORMAT_NAME, FORMAT_VERSION, "Zarr")
        self._meta: dict[str, Any] = meta

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
        group = zarr.open_group(self._target, mode="r" if self.readonly else "a", **kwargs)
        meta: Any = group.attrs.asdict().get(_ATTR, self._meta)
        if meta != self._meta:
            self._group, self._meta, self._arrays, self._offsets = group, meta, {}, None
            self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self._target,
            "readonly": self.readonly,
            "storage_options": self._storage_options,
            "layout": self._layout,
            "cache_bytes": self._cache_limit,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["target"],
            readonly=state["readonly"],
            storage_options=state["storage_options"],
            cache_bytes=state["cache_bytes"],
            **state["layout"],
        )

    @property
    def location(self) -> str:
        return self._target

    # -- helpers -----------------------------------------------------------------------------
    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self._group[name]
        return arr

    def _atom_offsets(self) -> np.ndarray:
        """Cumulative atom counts of the committed frames (length + 1 entries)."""
        n = self._meta["length"]
        if self._offsets is None or len(self._offsets) != n + 1:
            counts = self._slab("n_atoms", n, 0, n)
            self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return self._offsets

    def _byte_offsets(self, spec: dict[str, Any]) -> np.ndarray:
        n = self._meta["length"]
        sizes = self._slab(spec["id"] + "/sizes", n, 0, n)
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def _cached(self, name: str, extent: int) -> np.ndarray | None:
        """The first ``extent`` rows of array ``name``, decoded, if they fit in the cache."""
        hit = self._cache.get(name)
        if hit is not None and len(hit) == extent:
            self._cache.move_to_end(name)
            return hit
        arr = self._array(name)
        nbytes = extent * arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        if nbytes > self._cache_limit:
            return None
        hit = self._cache[name] = arr[:extent] if extent else np.zeros((0, *arr.shape[1:]), arr.dtype)
        held = sum(a.nbytes for a in self._cache.values())
        while held > self._cache_limit:
            held -= self._cache.popitem(last=False)[1].nbytes
        return hit

    def _slab(self, name: str, extent: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of array ``name`` (committed rows: ``extent``) as a private copy."""
        cached = self._cached(name, extent)
        if cached is not None:
            return cached[lo:hi].copy()
        arr = self._array(name)
        return arr[lo:hi] if hi > lo else np.zeros((0, *arr.shape[1:]), arr.dtype)

    def _take(self, name: str, extent: int, frames: np.ndarray) -> np.ndarray:
        """Rows ``frames`` (sorted, unique) of array ``name``: a private copy."""
        lo, hi = int(frames[0]), int(frames[-1]) + 1
        cached = self._cached(name, extent)
        if cached is not None:
            return cached[lo:hi].copy() if hi - lo == len(frames) else cached[frames]
        arr = self._array(name)
        row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        if (hi - lo) * row_bytes <= _SLAB_BYTES or hi - lo <= 2 * len(frames):
            slab = arr[lo:hi]
            return slab if hi - lo == len(frames) else slab[frames - lo]
        return arr.oindex[frames]

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
        )
        self._arrays[name] = zarr.Array(arr)
        return arr

    def _committed_arrays(self) -> set[str]:
        """Arrays that hold committed frames; any other name may be (re)created from scratch."""
        names = {"n_atoms"} if self._meta["length"] else set()
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

    def check(self) -> list[str]:
        """The layout's own invariants (array lengths, counts, offsets), then every row."""
        self._refresh()
        n, atoms, where = self._meta["length"], self._meta["atoms"], self._target
        problems = []

        def short(name: str, extent: int) -> bool:
            if name not in self._group:
                problems.append(f"{where}/{name}: array missing")
                return True
            if self._array(name).shape[0] < extent:
                problems.append(f"{where}/{name}: {self._array(name).shape[0]} rows, needs {extent}")
                return True
            return False

        if not short("n_atoms", n) and int(self._slab("n_atoms", n, 0, n).sum()) != atoms:
            problems.append(f"{where}/n_atoms: sums to {int(self._atom_offsets()[-1])}, record says {atoms}")
        for key, spec in self._meta["columns"].items():
            base = f"{spec['id']}/"
            if not spec.get("present", True):
                if spec["count"] != n:
                    problems.append(f"column {key!r}: no present flags, but {spec['count']} of {n} frames")
            elif not short(base + "present", n):
                carried = int(self._slab(base + "present", n, 0, n).sum())
                if carried != spec["count"]:
                    problems.append(f"column {key!r}: {carried} frames flagged, record says {spec['count']}")
            if spec["kind"] == "object":
                if not short(base + "sizes", n) and int(self._byte_offsets(spec)[-1]) != spec["nbytes"]:
                    problems.append(f"column {key!r}: value sizes do not add up to {spec['nbytes']} bytes")
                short(base + "values", spec["nbytes"])
            else:
                short(base + "values", atoms if spec["kind"] == "atom" else n)
        return problems or super().check()

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
        seen: set[int] = set()
        out = []
        for j in where.tolist():  # a repeated index gets its own copy, never shared arrays
            out.append(copy_row(rows[j]) if j in seen else rows[j])
            seen.add(j)
        return out

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
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
        if kind == "frame":
            return self._take(base + "/values", length, frames), present
        if kind == "atom":
            offsets = self._atom_offsets()
            return self._take_ragged(base + "/values", offsets, frames), present
        offsets = self._byte_offsets(spec)
        blobs = self._take_ragged(base + "/values", offsets, frames)
        return [
            decode_value(b.tobytes()) if p else None for b, p in zip(blobs, present, strict=True)
        ], present

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows:
            return
        self._refresh()
        meta = self._meta
        n0, atoms0 = meta["length"], meta["atoms"]
        carried = Counter(chain.from_iterable(rows))  # key -> rows carrying it, in C
        if carried.get("arrays.numbers") == len(rows):
            counts = np.fromiter(map(len, map(itemgetter("arrays.numbers"), rows)), np.int64, len(rows))
        else:
            counts = np.array([_n_atoms(r) for r in rows], dtype=np.int64)
        columns = {k: dict(v) for k, v in meta["columns"].items()}
        batches: dict[str, tuple[np.ndarray, Any]] = {}
        for key, count in carried.items():  # plan and check every column before anything is written
            everywhere = count == len(rows)
            values = list(map(itemgetter(key), rows)) if everywhere else [r.get(key, MISSING) for r in rows]
            present = np.ones(len(rows), bool) if everywhere else None
            spec = columns.get(key)
            if spec is None:  # a new column: guess from its first value, check all; mixed? look at all
                first = next(j for j, v in enumerate(values) if v is not MISSING)
                cid = f"c{len(columns)}"
                spec = _infer_spec(key, values[first : first + 1], counts[first : first + 1], cid)
                try:
                    batches[key] = _encode_batch(key, spec, values, counts, present)
                except InvalidDataError:
                    spec = _infer_spec(key, values, counts, cid)
                    batches[key] = _encode_batch(key, spec, values, counts, present)
            else:
                batches[key] = _encode_batch(key, spec, values, counts, present)
            columns[key] = spec
        n1, atoms1 = n0 + len(rows), atoms0 + int(counts.sum())
        self._deferred = []  # every array is created or grown, then written, in one concurrent batch
        try:
            self._write_range("n_atoms", n0, n1, counts, (), np.int64)
            for key, spec in columns.items():
                present, data = batches.get(key, (np.zeros(len(rows), bool), None))
                self._append_column(spec, present, data, counts, n0, n1, atoms0, atoms1)
                spec["count"] += int(present.sum())
            zarr_sync(_gather(self._deferred))
        finally:
            self._deferred = None
        self._commit(length=n1, atoms=atoms1, columns=columns)

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

    async def _put(
        self, name: str, start: int, stop: int, data: Any, tail: tuple[int, ...], dtype: Any, scale: float
    ) -> None:
        if name in self._committed_arrays():
            arr = self._arrays.get(name)
            arr = arr.async_array if arr is not None else await self._open_async(name)
            if arr.shape[0] != stop:
                await arr.resize((stop, *arr.shape[1:]))
        else:
            arr = await self._create(name, stop, tail, dtype, scale)
        if stop > start:
            await arr.setitem(slice(start, stop), data)

    async def _open_async(self, name: str) -> Any:
        arr = await zarr_async.open_array(store=self._group.store_path, path=name, zarr_format=3)
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

    def _commit(self, **changes: Any) -> None:
        """Publish new metadata: the one write that makes appended data visible."""
        meta = {**self._meta, **changes, "generation": int(self._meta.get("generation", 0)) + 1}
        self._group.attrs[_ATTR] = meta
        self._meta = meta
        self._offsets = None
        self._cache.clear()

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        for i, row in zip(np.asarray(indices).tolist(), rows, strict=True):
            self._set_atom_count(i, _n_atoms(row))
            gone = [k for k in self._meta["columns"] if k not in row]
            self._replace(i, row, gone)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        for i, update in zip(np.asarray(indices).tolist(), updates, strict=True):
            self._replace(i, update, [])

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        for i in np.asarray(indices).tolist():
            self._replace(i, {}, [k for k in keys if k in self._meta["columns"]])

    def _replace(self, i: int, values: dict[str, Any], gone: list[str]) -> None:
        """Set ``values`` and remove ``gone`` keys in frame ``i``, checking every value first."""
        n = self._meta["length"]
        columns = {k: dict(v) for k, v in self._meta["columns"].items()}
        count = np.array([_n_atoms_of(self, i)], np.int64)
        plans = {}
        for key, value in values.items():
            spec = columns.get(key) or _infer_spec(key, [value], count, f"c{len(columns)}")
            if key not in columns:  # a key the store has not seen: an all-absent column first
                columns[key] = spec
                self._append_column(spec, np.zeros(n, bool), None, np.zeros(n), 0, n, 0, self._meta["atoms"])
            plans[key] = _encode_batch(key, spec, [value], count)
        for key, (_, data) in plans.items():
            self._write_value(columns[key], i, data)
            columns[key]["count"] += self._set_present(columns[key], i, True)
        for key in gone:
            columns[key]["count"] += self._set_present(columns[key], i, False)
        self._commit(columns=columns)

    def _set_present(self, spec: dict[str, Any], i: int, value: bool) -> int:
        """Flag frame ``i``; returns the change in the column's count."""
        if not spec.get("present", True):  # every frame carries it so far
            if value:
                return 0
            n = self._meta["length"]
            self._write_range(spec["id"] + "/present", 0, n, np.ones(n, bool), (), bool)
            spec["present"] = True
        arr = self._array(spec["id"] + "/present")
        was = bool(arr[i])
        if was != value:
            arr[i] = value
        return int(value) - int(was)

    def _write_value(self, spec: dict[str, Any], i: int, data: Any) -> None:
        base, kind = spec["id"], spec["kind"]
        if kind == "atom":
            offsets = self._atom_offsets()
            self._array(base + "/values")[offsets[i] : offsets[i + 1]] = data
        elif kind == "object":
            blob, _ = data
            offsets = self._byte_offsets(spec)
            self._splice(
                base + "/values",
                int(offsets[i]),
                int(offsets[i + 1]),
                np.frombuffer(blob, np.uint8),
                spec["nbytes"],
            )
            spec["nbytes"] += len(blob) - int(offsets[i + 1] - offsets[i])
            self._array(base + "/sizes")[i] = len(blob)
        else:
            self._array(base + "/values")[i] = data[0]

    def _splice(self, name: str, start: int, stop: int, new: np.ndarray, total: int) -> None:
        """Replace rows ``start:stop`` of a ragged array by ``new``, moving the rows after them."""
        arr = self._array(name)
        tail = arr[stop:total] if total > stop else arr[0:0]
        end = start + len(new) + len(tail)
        if arr.shape[0] < end or len(new) != stop - start:
            arr.resize((max(end, 1), *arr.shape[1:]))
        if len(new):
            arr[start : start + len(new)] = new
        if len(tail) and len(new) != stop - start:
            arr[start + len(new) : end] = tail

    def _set_atom_count(self, i: int, count: int) -> None:
        """Frame ``i`` gets ``count`` atoms: move every per-atom column's later atoms."""
        offsets = self._atom_offsets()
        old = int(offsets[i + 1] - offsets[i])
        if old == count:
            return
        total = int(offsets[-1])
        for spec in self._meta["columns"].values():
            if spec["kind"] == "atom":
                zeros = np.zeros((count, *spec["shape"]), spec["dtype"])
                self._splice(spec["id"] + "/values", int(offsets[i]), int(offsets[i + 1]), zeros, total)
        self._array("n_atoms")[i] = count
        self._commit(atoms=total - old + count)


async def _gather(writes: list[Any]) -> None:
    """Run zarr writes together on zarr's event loop: their encoding and I/O overlap."""
    await asyncio.gather(*writes)


def _compressors(name: str | None, level: int) -> Any:
    if name in (None, "none"):
        return None
    if name == "gzip":
        return GzipCodec(level=level)
    if name == "zstd-raw":
        return ZstdCodec(level=level)
    if name in ("lz4", "lz4hc", "zstd", "zlib", "blosclz"):
        return BloscCodec(cname=name, clevel=level, shuffle="shuffle")  # type: ignore[arg-type]
    raise ValueError(
        f"unknown compressor {name!r}; use 'lz4', 'lz4hc', 'zstd', 'zlib', 'blosclz', 'gzip' or None"
    )


def _n_atoms(row: dict[str, Any]) -> int:
    for key in ("arrays.numbers", "arrays.positions"):
        if key in row:
            return len(row[key])
    return 0


def _n_atoms_of(backend: ZarrBackend, i: int) -> int:
    offsets = backend._atom_offsets()
    return int(offsets[i + 1] - offsets[i])


def _is_per_atom_key(key: str) -> bool:
    return key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)


def _signature(given: list[Any]) -> set[Any]:
    """The distinct (dtype, shape) of numeric numpy values; None stands for anything else."""
    return {
        (v.dtype.str, v.shape) if type(v) is np.ndarray and v.dtype.kind in _NUMERIC else None for v in given
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
        if _is_per_atom_key(key) and len(dtypes) == 1 and len(tails) == 1:
            lengths = np.fromiter((v.shape[0] if v.ndim else -1 for v in given), np.int64, len(given))
            if np.array_equal(lengths, counts[present]):
                return {**spec, "kind": "atom", "dtype": dtypes.pop(), "shape": list(tails.pop())}
        if len(signature) == 1 and not _is_per_atom_key(key):
            dtype, shape = signature.pop()
            return {**spec, "kind": "frame", "dtype": dtype, "shape": list(shape)}
    code = scalar_type_code(given)
    if code is not None:
        return {**spec, "kind": "scalar", "type": code, "dtype": type_code_dtype(code).str, "shape": []}
    return {**spec, "kind": "object", "nbytes": 0}


def _encode_batch(
    key: str, spec: dict[str, Any], values: list[Any], counts: np.ndarray, present: np.ndarray | None = None
) -> tuple[np.ndarray, Any]:
    """(present flags, data to write) for one column of a batch; refuses values that do not fit.

    ``present`` may be given when the caller knows every row carries the key.
    """
    if present is None:
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    everywhere = bool(present.all())
    given = values if everywhere else [v for v in values if v is not MISSING]
    kind = spec["kind"]
    if kind == "object":
        blobs = [encode_value(v) if v is not MISSING else b"" for v in values]
        return present, (b"".join(blobs), np.array([len(b) for b in blobs], np.int64))
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    if kind in ("atom", "frame") and everywhere:
        data = _stack_uniform(given, kind, dtype, shape, counts)
        if data is not None:
            return present, data
    if kind == "scalar":
        bad = scalar_misfit(given, spec["type"])
        if bad is not None:
            raise _conflict(key, spec, f"a value of type {type(bad).__name__}")
        data = np.zeros(len(values), dtype)
        data[present] = given
        return present, data
    expected = [(dtype.str, (c, *shape) if kind == "atom" else shape) for c in counts[present].tolist()]
    got = [(v.dtype.str, v.shape) if type(v) is np.ndarray else None for v in given]
    if got != expected:  # one list comparison in C; find the culprit only on failure
        bad = next(v for v, g, e in zip(given, got, expected, strict=True) if g != e)
        what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
        raise _conflict(key, spec, what)
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


def _conflict(key: str, spec: dict[str, Any], got: str) -> InvalidDataError:
    stored = {
        "scalar": f"Python/numpy scalars of type code {spec.get('type')!r}",
        "frame": f"arrays of dtype {spec.get('dtype')} and shape {tuple(spec.get('shape', ()))}",
        "atom": f"per-atom arrays of dtype {spec.get('dtype')} and shape (n_atoms, "
        f"{', '.join(map(str, spec.get('shape', ())))})",
    }[spec["kind"]]
    return InvalidDataError(
        f"column {key!r} stores {stored}, but got {got}; nothing was written. Convert the value "
        "to the stored type, or use another key"
    )

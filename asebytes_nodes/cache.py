"""``cache_to``: keep every row read from a slow source in a local writable store.

``ASEIO(source, cache_to="cache.lmdb")`` wraps the source's backend in a
:class:`CachedBackend`. The first read of a row converts it from the source and appends
it to the cache; every later read of that row, in this process or another, after a
restart or from several worker processes at once, is served by the cache.

Cache layout (version 1)
------------------------
Any writable backend holds the cache; LMDB is the one to use with several processes
(its appends are atomic transactions that serialise across processes).

* row 0, the header: ``{"info._asebytes_cache": <JSON>}`` with ``format``, ``version``
  and the source record: what :meth:`HFBackend.cache_record` reports (URI, dataset
  fingerprint or a stream's data files with their sizes and times, split, name, revision,
  column mapping; a transformed stream object is known by its instance), or for other
  backends their name and location (for a store without one, a token of its instance),
  plus the source length.
  Processes that open one new cache at the same moment may each append a header: row 0
  decides, and the later ones (rows without a source row number) are skipped;
* every other row: one source row plus ``"info._asebytes_cache_row": i``, its row number
  in the source, written in the same append as the row itself. Rows are appended in the
  order they are first read.

A handle keeps ``source row -> cache row`` in memory and rescans rows appended since
its last look whenever a row seems missing, so rows filled by other processes are
found. Two processes that fill the same row at once both append it: the copies are
identical and the first one is used. An interrupted append leaves no partial row, so a
half-filled cache resumes where it stopped. Column views of fully cached rows read the
cache; otherwise they read the source and fill nothing.

A stream without a row count (its length is recorded as unknown) is cached the same way:
rows are read forward as they are asked for, and iteration runs until the stream ends.

A cache filled from another source, split, configuration, mapping or length refuses to
open with :class:`~asebytes_nodes.errors.CacheMismatchError`. To reset a cache, delete it
with its side files (``LMDBBackend.remove_store(path)``: the file and its lock file) or choose another
``cache_to`` path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from .backends._base import ReadableBackend, WritableBackend, check_format_record
from .errors import CacheMismatchError, RowIndexError, StoreCorruptedError, UnsupportedOperationError
from .indexing import distinct

__all__ = ["CACHE_FORMAT_VERSION", "CachedBackend"]

CACHE_FORMAT = "asebytes_nodes.cache"
CACHE_FORMAT_VERSION = 1
HEADER_KEY = "info._asebytes_cache"
ROW_KEY = "info._asebytes_cache_row"


def source_record(source: ReadableBackend) -> dict[str, Any]:
    """What identifies ``source`` to a cache, as plain JSON types."""
    hook = getattr(source, "cache_record", None)
    record = dict(hook()) if callable(hook) else {"backend": source.name, "location": source.location}
    record["length"] = len(source) if source.length_known() else None  # a stream without a count
    result: dict[str, Any] = json.loads(json.dumps(record, sort_keys=True, default=str))
    return result


def source_of(cache: ReadableBackend) -> str:
    """What the cache store ``cache`` was filled from, as its header records it."""
    raw = cache.read_row(0, [HEADER_KEY]).get(HEADER_KEY)
    try:
        record = json.loads(raw)["source"] if isinstance(raw, str) else {}
    except (ValueError, KeyError, TypeError):
        record = {}
    where = record.get("location") or record.get("source") or "another source"
    return str(where) if record.get("split") is None else f"{where} (split {record['split']!r})"


class CachedBackend(ReadableBackend):
    """A read-only view of ``source`` whose rows are kept in ``cache`` once read.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("hf://user/dataset", split="train", cache_to="train.lmdb")  # doctest: +SKIP

    Parameters
    ----------
    source
        The backend to read from.
    cache
        A path or URI opened with the registry (``"cache.lmdb"``), or a writable backend
        instance. It must copy the rows it is given (every built-in backend does).
    """

    name: ClassVar[str] = "cached"
    read_batch_size: ClassVar[int] = 4096

    def __init__(self, source: ReadableBackend, cache: str | os.PathLike[str] | WritableBackend) -> None:
        from .registry import open_backend, resolve_backend

        self._source = source
        kind = type(cache) if isinstance(cache, ReadableBackend) else resolve_backend(cache).load()
        if not issubclass(kind, WritableBackend):  # refused before opening: an ASE file must not exist
            where = repr(cache) if isinstance(cache, ReadableBackend) else repr(os.fspath(cache))
            raise UnsupportedOperationError(
                f"cache_to needs a writable store, got {where}: the {kind.name} backend reads stores but "
                "does not write them; pass a path such as 'cache.lmdb'"
            )
        store = cache if isinstance(cache, ReadableBackend) else open_backend(cache)
        if not isinstance(store, WritableBackend) or store.readonly:
            raise UnsupportedOperationError(
                f"cache_to needs a writable store, got {store!r} opened read-only; pass a path such as "
                "'cache.lmdb'"
            )
        self._cache: WritableBackend = store
        self._record = source_record(source)
        self._bounded = source.length_known()
        self._index = np.full(len(source) if self._bounded else 0, -1, dtype=np.int64)
        self._scanned = 0  # cache rows already looked at
        self._check_header()
        self._scan()

    # -- the header ------------------------------------------------------------------------
    def _where(self) -> str:
        return self._cache.location or repr(self._cache)

    def _check_header(self) -> None:
        header = {"format": CACHE_FORMAT, "version": CACHE_FORMAT_VERSION, "source": self._record}
        if len(self._cache) == 0:
            self._cache.extend([{HEADER_KEY: json.dumps(header, sort_keys=True)}])
        raw = self._cache.read_row(0, [HEADER_KEY]).get(HEADER_KEY)
        try:
            stored = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            raise CacheMismatchError(
                f"{self._where()} is not a cache (its first row has no cache header); pass a new path "
                "to cache_to, or delete this store if it is an old cache"
            )
        check_format_record(self._where(), stored, CACHE_FORMAT, CACHE_FORMAT_VERSION, "cache")
        filled = stored.get("source") or {}
        if filled != self._record:
            changed = sorted(k for k in {*filled, *self._record} if filled.get(k) != self._record.get(k))
            what = "; ".join(f"{k}: {filled.get(k)!r} there, {self._record.get(k)!r} here" for k in changed)
            if "length" in changed:
                what += "; the source grew or shrank since the cache was filled (cache a finished store)"
            if "instance" in changed:
                what += (
                    "; a source without a location is known only by its instance: to reuse a cache "
                    "across instances, give its backend a `location` (the path or URI of its data), or, "
                    "for a transformed datasets stream, open its files by URI (hf://path/data.parquet) "
                    "or pass an untransformed stream or a downloaded datasets.Dataset"
                )
            raise CacheMismatchError(
                f"{self._where()} was filled from another source ({what}); delete the cache to reset "
                f"it ({type(self._cache).__name__}.remove_store(path) removes it with its side files), "
                "or choose another cache_to path"
            )

    # -- the index -------------------------------------------------------------------------
    def _scan(self) -> None:
        """Index the cache rows appended since the last scan (by any process)."""
        stop = len(self._cache)
        start = max(self._scanned, 1)
        if stop <= start:
            return
        values = self._cache.read_column(ROW_KEY, np.arange(start, stop))
        numbers = np.fromiter(
            (int(v) if isinstance(v, (int, np.integer)) else -1 for v in values), np.int64, stop - start
        )
        if not self._bounded:
            self._grow(int(numbers.max(initial=-1)) + 1)
        elif (numbers >= len(self._index)).any():
            raise StoreCorruptedError(
                f"{self._where()}: a cached row claims source row {int(numbers.max())}, but the source "
                f"has {len(self._index)} rows; delete the cache to reset it"
            )
        rows, first = np.unique(numbers, return_index=True)
        keep = (rows >= 0) & (self._index[np.maximum(rows, 0)] < 0)
        self._index[rows[keep]] = start + first[keep]
        self._scanned = stop

    def _grow(self, size: int) -> None:
        """Make room in the index of a source of unknown length for rows below ``size``."""
        if size > len(self._index):
            grown = np.full(max(size, 2 * len(self._index)), -1, dtype=np.int64)
            grown[: len(self._index)] = self._index
            self._index = grown

    def _locate(self, rows: np.ndarray) -> np.ndarray:
        """Cache rows of source ``rows``, filling the cache with those it lacks."""
        if not self._bounded:
            self._grow(int(rows.max()) + 1)
        where = self._index[rows]
        if (where < 0).any():
            self._scan()
            where = self._index[rows]
        missing = distinct(rows[where < 0])
        if missing.size:
            fresh = self._source.read_rows(missing)
            self._cache.extend([{**row, ROW_KEY: i} for i, row in zip(missing.tolist(), fresh, strict=True)])
            self._scan()
            where = self._index[rows]
        return where

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index) if self._bounded else len(self._source)

    def length_known(self) -> bool:
        return self._bounded or self._source.length_known()

    def iter_rows(self, keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row in order through the cache; for a stream without a count, until it ends."""
        if self._bounded:
            yield from super().iter_rows(keys)
            return
        start = 0
        while True:
            batch = np.arange(start, start + self.read_batch_size)
            try:
                rows = self.read_rows(batch, keys)
            except RowIndexError:  # the stream ends inside this batch: finish row by row
                for i in batch.tolist():
                    try:
                        yield self.read_row(i, keys)
                    except RowIndexError:
                        return
            yield from rows
            start += self.read_batch_size

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size == 0:
            return []
        found = self._cache.read_rows(self._locate(rows), keys)
        if keys is None:
            for row in found:
                del row[ROW_KEY]
        return found

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def columns(self, index: int = 0) -> list[str]:
        return list(self.read_row(index))

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        rows = np.asarray(indices, dtype=np.int64)
        if not self._bounded and rows.size:
            self._grow(int(rows.max()) + 1)
        where = self._index[rows]
        if (where < 0).any():
            self._scan()
            where = self._index[rows]
        if (where < 0).any():
            return self._source.read_column(key, rows)
        return self._cache.read_column(key, where)

    def keys(self) -> list[str]:
        return self._source.keys()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def source(self) -> ReadableBackend:
        """The backend rows come from."""
        return self._source

    @property
    def cache(self) -> WritableBackend:
        """The store rows are kept in."""
        return self._cache

    @property
    def location(self) -> str | None:
        return self._source.location

    def close(self) -> None:
        self._cache.close()
        self._source.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "cache": self._cache}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["cache"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<CachedBackend {self._source!r} cached in {self._cache!r}>"

"""LMDB backend: one file, one msgpack blob per row, atomic batch writes.

On-disk layout
--------------
A single LMDB data file at the given path (``subdir=False``) plus LMDB's
``<path>-lock`` file beside it. One unnamed database holds:

=====================  =====================================================
key                    value
=====================  =====================================================
``b"m:format"``        msgpack ``{"format": "asebytes_nodes.lmdb", "version": N}``
``b"m:length"``        number of rows, u64 big endian
``b"m:keys"``          msgpack ``{key: number of rows carrying it}``
``b"r" + u64 BE i``    row ``i``, encoded by :mod:`asebytes_nodes.codec`
=====================  =====================================================

Rows sort after all meta keys, so appends use LMDB's append mode. The length is
committed in the same transaction as the rows, so a reader never sees a
half-written ``extend`` and a killed writer leaves the earlier rows intact.

Version history
---------------
1. First layout (asebytes-nodes 0.1).

Process rules (py-lmdb): one environment per file per process, shared by
every handle on that path; an environment inherited through ``fork`` is
closed and reopened in the child; reads open no write transaction, so the
data file's bytes are unchanged by reading.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..codec import decode_row, decode_value, encode_row, encode_value
from ..errors import (
    FormatVersionError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from ._base import MISSING, WritableBackend

try:
    import lmdb
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The LMDB backend needs the lmdb package. Run: pip install "asebytes-nodes[lmdb]"'
    ) from exc

__all__ = ["LMDBBackend"]

FORMAT_NAME = "asebytes_nodes.lmdb"
FORMAT_VERSION = 1
_META_FORMAT = b"m:format"
_META_LENGTH = b"m:length"
_META_KEYS = b"m:keys"
_U64 = struct.Struct(">Q")
_INITIAL_MAP_SIZE = 1 << 30  # address space only: the file grows with its data


def _row_key(i: int) -> bytes:
    return b"r" + _U64.pack(i)


class _SharedEnv:
    """One open LMDB environment, shared by every handle on the same file in this process."""

    def __init__(self, env: Any, writable: bool) -> None:
        self.env = env
        self.writable = writable
        self.pid = os.getpid()
        self.users = 0
        self.lock = threading.RLock()


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: Path, readonly: bool, map_size: int) -> _SharedEnv:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared = _ENVS.get(key)
        if shared is not None and shared.pid != os.getpid():  # inherited through fork
            shared.env.close()
            shared = None
        if shared is not None and (readonly or shared.writable):
            shared.users += 1
            return shared
        if shared is not None:  # a writer needs an environment opened for writing
            if shared.users:
                raise PermissionError(
                    f"{path}: already opened read-only in this process because the file is not "
                    "writable; a writable handle cannot share it"
                )
            shared.env.close()
        exists = path.exists()
        if not exists and readonly:
            raise StoreNotFoundError(f"{path}: no such LMDB store (opened read-only)")
        writable = not readonly or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        if not writable and not readonly:
            raise PermissionError(f"{path}: the file or its folder is not writable")
        try:
            # An explicit map_size is honoured (LMDB raises it to the data already stored);
            # the default reserves address space only, the file grows with its data.
            size = map_size or max(_INITIAL_MAP_SIZE, 2 * path.stat().st_size if exists else 0)
            env = lmdb.open(
                str(path),
                subdir=False,
                readonly=not writable,
                lock=os.access(path.parent, os.W_OK) or Path(str(path) + "-lock").exists(),
                map_size=size,
                max_dbs=0,
                meminit=False,
                max_readers=1024,
            )
        except lmdb.InvalidError as exc:
            raise StoreCorruptedError(f"{path}: not an LMDB file or damaged ({exc})") from exc
        except lmdb.Error as exc:
            raise StoreCorruptedError(f"{path}: cannot open as LMDB ({exc})") from exc
        shared = _SharedEnv(env, writable)
        shared.users = 1
        _ENVS[key] = shared
        return shared


def _release_env(path: Path, shared: _SharedEnv) -> None:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users <= 0 and _ENVS.get(key) is shared:
            del _ENVS[key]
            if shared.pid == os.getpid():
                shared.env.close()


class LMDBBackend(WritableBackend):
    """Rows in a single-file LMDB database.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("frames.lmdb")  # doctest: +SKIP

    Parameters
    ----------
    path
        The data file (created if missing unless ``readonly``).
    readonly
        Refuse every write. Reading never changes the data file.
    map_size
        Initial address space in bytes (default 1 GiB, or twice the file); it doubles on
        demand whenever a write finds it full.
    """

    name: ClassVar[str] = "lmdb"
    extensions: ClassVar[tuple[str, ...]] = (".lmdb",)
    schemes: ClassVar[tuple[str, ...]] = ("lmdb",)
    supports_insert: ClassVar[bool] = True
    supports_delete: ClassVar[bool] = True
    supports_drop_keys: ClassVar[bool] = True

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, map_size: int = 0
    ) -> None:
        path = str(path)
        if path.startswith("lmdb://"):
            path = path[len("lmdb://") :]
        self._path = Path(path).expanduser()
        self.readonly = readonly
        self._map_size = map_size
        self._shared: _SharedEnv | None = None
        self._open()

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        self._shared = _acquire_env(self._path, self.readonly, self._map_size)
        try:
            self._check_format()
        except BaseException:
            self.close()
            raise

    def _check_format(self) -> None:
        with self._txn() as txn:
            raw = txn.get(_META_FORMAT)
            if raw is None:
                if txn.stat()["entries"]:
                    raise StoreCorruptedError(
                        f"{self._path}: an LMDB file, but not an asebytes-nodes store "
                        "(no format record)"
                    )
                fmt = None
            else:
                fmt = decode_value(bytes(raw))
        if fmt is None:
            if not self.readonly:
                with self._write_txn() as txn:
                    txn.put(_META_FORMAT, encode_value({"format": FORMAT_NAME, "version": FORMAT_VERSION}))
                    txn.put(_META_LENGTH, _U64.pack(0))
                    txn.put(_META_KEYS, encode_value({}))
            return
        if not isinstance(fmt, dict) or fmt.get("format") != FORMAT_NAME:
            raise StoreCorruptedError(f"{self._path}: unknown format record {fmt!r}")
        if int(fmt.get("version", 0)) > FORMAT_VERSION:
            raise FormatVersionError(
                f"{self._path}: written with LMDB layout version {fmt['version']}, but this "
                f"asebytes-nodes reads up to version {FORMAT_VERSION}; upgrade asebytes-nodes"
            )

    @property
    def _env(self) -> Any:
        shared = self._shared
        if shared is None:
            raise ValueError(f"{self._path}: the store is closed")
        if shared.pid != os.getpid():  # we were forked: reopen in this process
            self._shared = None
            self._open()
            shared = self._shared
            assert shared is not None
        return shared.env

    def close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            _release_env(self._path, shared)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self._path), "readonly": self.readonly, "map_size": self._map_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], readonly=state["readonly"], map_size=state["map_size"])  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self._path)

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def _txn(self) -> Iterator[Any]:
        env = self._env
        while True:
            try:
                txn = env.begin(buffers=True)
            except lmdb.MapResizedError:  # another process grew the map
                env.set_mapsize(0)
                continue
            break
        try:
            yield txn
        finally:
            txn.abort()

    @contextmanager
    def _write_txn(self) -> Iterator[Any]:
        with self._env_lock():
            with self._env.begin(write=True) as txn:
                yield txn

    @contextmanager
    def _env_lock(self) -> Iterator[None]:
        assert self._shared is not None
        with self._shared.lock:
            yield

    def _write(self, work: Any) -> None:
        """Run ``work(txn)`` in one write transaction, growing the map and retrying when full."""
        env = self._env
        while True:
            try:
                with self._write_txn() as txn:
                    work(txn)
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                env.set_mapsize(0)

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._txn() as txn:
            return self._length(txn)

    @staticmethod
    def _length(txn: Any) -> int:
        raw = txn.get(_META_LENGTH)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def _get(self, txn: Any, i: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        raw = txn.get(_row_key(i))
        if raw is None:
            raise StoreCorruptedError(f"{self._path}: row {i} is missing from the file")
        return decode_row(raw, keys)

    def columns(self, index: int = 0) -> list[str]:
        with self._txn() as txn:
            return list(self._get(txn, index))

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        with self._txn() as txn:
            return self._get(txn, index, keys)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        get = self._get
        with self._txn() as txn:
            return [get(txn, i, keys) for i in np.asarray(indices).tolist()]

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any]:
        keys = (key,)
        with self._txn() as txn:
            return [self._get(txn, i, keys).get(key, MISSING) for i in np.asarray(indices).tolist()]

    def keys(self) -> list[str]:
        with self._txn() as txn:
            return sorted(self._key_counts(txn))

    @staticmethod
    def _key_counts(txn: Any) -> dict[str, int]:
        raw = txn.get(_META_KEYS)
        return {} if raw is None else decode_value(bytes(raw))

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]  # every row encodes before the transaction starts

        def work(txn: Any) -> None:
            n = self._length(txn)
            counts = self._key_counts(txn)
            for row in rows:
                for key in row:
                    counts[key] = counts.get(key, 0) + 1
            txn.cursor().putmulti(
                [(_row_key(n + k), blob) for k, blob in enumerate(blobs)], append=True
            )
            txn.put(_META_LENGTH, _U64.pack(n + len(blobs)))
            txn.put(_META_KEYS, encode_value(counts))

        if blobs:
            self._write(work)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]

        def work(txn: Any) -> None:
            counts = self._key_counts(txn)
            for i, row, blob in zip(indices, rows, blobs, strict=True):
                _count(counts, self._get(txn, int(i)), -1)
                _count(counts, row, +1)
                txn.put(_row_key(int(i)), blob)
            txn.put(_META_KEYS, encode_value(counts))

        self._write(work)

    def update_rows(
        self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]
    ) -> None:
        self._check_writable()
        for update in updates:
            encode_row(update)  # refuse unserialisable values before the transaction

        def work(txn: Any) -> None:
            counts = self._key_counts(txn)
            for i, update in zip(indices, updates, strict=True):
                row = self._get(txn, int(i))
                _count(counts, row, -1)
                row.update(update)
                _count(counts, row, +1)
                txn.put(_row_key(int(i)), encode_row(row))
            txn.put(_META_KEYS, encode_value(counts))

        self._write(work)

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()

        def work(txn: Any) -> None:
            counts = self._key_counts(txn)
            for i in indices:
                row = self._get(txn, int(i))
                dropped = {k: None for k in keys if k in row}
                _count(counts, dropped, -1)
                for k in dropped:
                    del row[k]
                txn.put(_row_key(int(i)), encode_row(row))
            txn.put(_META_KEYS, encode_value(counts))

        self._write(work)

    def insert_rows(self, index: int, rows: Sequence[dict[str, Any]]) -> None:
        """Insert before ``index``; moves every later row, so it costs O(rows after index)."""
        self._check_writable()
        blobs = [encode_row(r) for r in rows]
        k = len(blobs)

        def work(txn: Any) -> None:
            n = self._length(txn)
            for i in range(n - 1, index - 1, -1):
                txn.put(_row_key(i + k), bytes(txn.get(_row_key(i))))
            for j, blob in enumerate(blobs):
                txn.put(_row_key(index + j), blob)
            counts = self._key_counts(txn)
            for row in rows:
                _count(counts, row, +1)
            txn.put(_META_LENGTH, _U64.pack(n + k))
            txn.put(_META_KEYS, encode_value(counts))

        if blobs:
            self._write(work)

    def delete_rows(self, indices: Sequence[int] | np.ndarray) -> None:
        """Delete rows; moves every later row, so it costs O(rows after the first deleted)."""
        self._check_writable()
        drop = sorted({int(i) for i in indices})
        if not drop:
            return

        def work(txn: Any) -> None:
            n = self._length(txn)
            counts = self._key_counts(txn)
            for i in drop:
                _count(counts, self._get(txn, i), -1)
            dropset = set(drop)
            target = drop[0]
            for i in range(drop[0], n):
                if i in dropset:
                    continue
                txn.put(_row_key(target), bytes(txn.get(_row_key(i))))
                target += 1
            for i in range(target, n):
                txn.delete(_row_key(i))
            txn.put(_META_LENGTH, _U64.pack(target))
            txn.put(_META_KEYS, encode_value(counts))

        self._write(work)


def _count(counts: dict[str, int], row: dict[str, Any], sign: int) -> None:
    for key in row:
        left = counts.get(key, 0) + sign
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)

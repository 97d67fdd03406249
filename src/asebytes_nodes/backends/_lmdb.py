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
``b"m:scalars"``       msgpack ``{key: type code}`` of scalar columns kept in blocks
``b"c" + u16 BE len``  block ``b`` of a scalar column: 512 presence bytes (bool),
``+ key + u64 BE b``   then 512 values (rows ``512 b`` to ``512 b + 511``)
``b"r" + u64 BE i``    row ``i``, encoded by :mod:`asebytes_nodes.codec`
=====================  =====================================================

Rows sort after all other keys, so appends use LMDB's append mode. A column
whose values all share one exact scalar type (Python ``float`` -> code ``f``,
``int`` in int64 range -> ``i``, ``bool`` -> ``b``, a numpy scalar -> ``n`` +
``dtype.str``) is also kept in blocks, so reading it (``db["calc.energy"]``)
costs one LMDB read per 512 rows instead of decoding every row; a column that
stops being one type loses its blocks and is read from the rows. Rows stay the
source of truth; blocks are written in the same transaction. The length is
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

from ..codec import (
    decode_row,
    decode_value,
    encode_row,
    encode_value,
    maybe_scalar,
    scalar_type_code,
    type_code_dtype,
)
from ..errors import (
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from ._base import MISSING, WritableBackend, check_format_record

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
_META_SCALARS = b"m:scalars"
_BLOCK = 512  # rows per scalar column block
_U64 = struct.Struct(">Q")
_INITIAL_MAP_SIZE = 1 << 30  # address space only: the file grows with its data


def _read_scalar_column(txn: Any, key: str, code: str, rows: np.ndarray) -> list[Any]:
    """One scalar column from its blocks: one LMDB read per block, no row decoding."""
    dtype = type_code_dtype(code)
    blocks = rows // _BLOCK
    unique = np.unique(blocks)
    masks = np.zeros((len(unique), _BLOCK), bool)
    values = np.zeros((len(unique), _BLOCK), dtype)
    for j, block in enumerate(unique.tolist()):
        raw = txn.get(_block_key(key, block))
        if raw is not None:
            masks[j] = np.frombuffer(raw, bool, _BLOCK)
            values[j] = np.frombuffer(raw, dtype, _BLOCK, _BLOCK)
    where = np.searchsorted(unique, blocks), rows % _BLOCK
    picked = values[where]
    out: list[Any] = picked.tolist() if code in ("f", "i", "b") else list(picked)
    for j in np.flatnonzero(~masks[where]).tolist():
        out[j] = MISSING
    return out


def _row_key(i: int) -> bytes:
    return b"r" + _U64.pack(i)


class _SharedEnv:
    """One open LMDB environment, shared by every handle on the same file in this process."""

    def __init__(self, env: Any, writable: bool, key: str, inode: int) -> None:
        self.env = env
        self.writable = writable
        self.key = key
        self.inode = inode
        self.stale = False
        self.pid = os.getpid()
        self.users = 0
        self.lock = threading.RLock()


# Keyed by real path. A file replaced under the same name (a conversion moved into
# place) has a new inode: its old environment is closed and marked stale, and every
# handle on it reopens the new file on its next use.
_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return -1


def _acquire_env(path: Path, readonly: bool, map_size: int) -> _SharedEnv:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared = _ENVS.get(key)
        if shared is not None and shared.inode != _inode(path):
            shared.env.close()
            shared.stale = True
            del _ENVS[key]
            shared = None
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
        shared = _SharedEnv(env, writable, key, _inode(path))
        shared.users = 1
        _ENVS[shared.key] = shared
        return shared


def _release_env(shared: _SharedEnv) -> None:
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users <= 0 and _ENVS.get(shared.key) is shared:
            del _ENVS[shared.key]
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
        check_format_record(str(self._path), fmt, FORMAT_NAME, FORMAT_VERSION, "LMDB")

    @property
    def _env(self) -> Any:
        shared = self._shared
        if shared is None:
            raise ValueError(f"{self._path}: the store is closed")
        if shared.pid != os.getpid() or shared.stale:  # forked, or the file was replaced: reopen
            self._shared = None
            self._open()
            shared = self._shared
            assert shared is not None
        return shared.env

    def close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            _release_env(shared)

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
        with self._txn() as txn:
            code = _read_meta(txn, _META_SCALARS).get(key)
            if code is not None:
                return _read_scalar_column(txn, key, code, np.asarray(indices, dtype=np.int64))
            keys = (key,)
            return [self._get(txn, i, keys).get(key, MISSING) for i in np.asarray(indices).tolist()]

    def keys(self) -> list[str]:
        with self._txn() as txn:
            return sorted(self._key_counts(txn))

    def key_counts(self) -> dict[str, int]:
        with self._txn() as txn:
            return dict(sorted(self._key_counts(txn).items()))

    def format_info(self) -> dict[str, Any]:
        with self._txn() as txn:
            raw = txn.get(_META_FORMAT)
        return dict(decode_value(bytes(raw))) if raw is not None else {}

    @staticmethod
    def _key_counts(txn: Any) -> dict[str, int]:
        return _read_meta(txn, _META_KEYS)

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]  # every row encodes before the transaction starts

        def work(txn: Any) -> None:
            n = self._length(txn)
            book = _Bookkeeping(txn)
            book.appended(n, rows)
            txn.cursor().putmulti(
                [(_row_key(n + k), blob) for k, blob in enumerate(blobs)], append=True
            )
            txn.put(_META_LENGTH, _U64.pack(n + len(blobs)))
            book.commit()

        if blobs:
            self._write(work)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]

        def work(txn: Any) -> None:
            book = _Bookkeeping(txn)
            for i, row, blob in zip(np.asarray(indices).tolist(), rows, blobs, strict=True):
                book.replaced(i, self._get(txn, i), row)
                txn.put(_row_key(i), blob)
            book.commit()

        self._write(work)

    def update_rows(
        self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]
    ) -> None:
        self._check_writable()
        for update in updates:
            encode_row(update)  # refuse unserialisable values before the transaction

        def work(txn: Any) -> None:
            book = _Bookkeeping(txn)
            for i, update in zip(np.asarray(indices).tolist(), updates, strict=True):
                old = self._get(txn, i)
                new = {**old, **update}
                book.replaced(i, old, new)
                txn.put(_row_key(i), encode_row(new))
            book.commit()

        self._write(work)

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()

        def work(txn: Any) -> None:
            book = _Bookkeeping(txn)
            for i in np.asarray(indices).tolist():
                old = self._get(txn, i)
                new = {k: v for k, v in old.items() if k not in keys}
                book.replaced(i, old, new)
                txn.put(_row_key(i), encode_row(new))
            book.commit()

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
            txn.put(_META_LENGTH, _U64.pack(n + k))
            book = _Bookkeeping(txn)
            book.inserted(rows)
            book.rebuild_from(index, n + k, lambda i, keys: self._get(txn, i, keys))
            book.commit()

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
            book = _Bookkeeping(txn)
            for i in drop:
                book.replaced(None, self._get(txn, i), {})
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
            book.rebuild_from(drop[0], target, lambda i, keys: self._get(txn, i, keys))
            book.commit()

        self._write(work)


def _count(counts: dict[str, int], row: dict[str, Any], sign: int) -> None:
    for key in row:
        left = counts.get(key, 0) + sign
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)


def _block_key(key: str, block: int) -> bytes:
    return _block_prefix(key) + _U64.pack(block)


def _block_prefix(key: str) -> bytes:
    name = key.encode()
    return b"c" + struct.pack(">H", len(name)) + name


class _Bookkeeping:
    """What one write transaction must keep in step with the rows: key counts and the
    scalar column blocks (see the layout at the top of the module)."""

    def __init__(self, txn: Any) -> None:
        self.txn = txn
        self.counts: dict[str, int] = _read_meta(txn, _META_KEYS)
        self.codes: dict[str, str] = _read_meta(txn, _META_SCALARS)
        self.blocks: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, key: str, block: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.blocks.get((key, block))
        if found is None:
            dtype = type_code_dtype(self.codes[key])
            raw = self.txn.get(_block_key(key, block))
            if raw is None:
                found = (np.zeros(_BLOCK, bool), np.zeros(_BLOCK, dtype))
            else:
                found = (
                    np.frombuffer(raw, bool, _BLOCK).copy(),
                    np.frombuffer(raw, dtype, _BLOCK, _BLOCK).copy(),
                )
            self.blocks[(key, block)] = found
        return found

    def _fill(self, key: str, start: int, values: list[Any]) -> None:
        """Write values of rows ``start, start + 1, ...`` (MISSING where absent)."""
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
        data = np.zeros(len(values), type_code_dtype(self.codes[key]))
        data[present] = [v for v in values if v is not MISSING]
        stop = start + len(values)
        for block in range(start // _BLOCK, (stop - 1) // _BLOCK + 1):
            lo, hi = max(start, block * _BLOCK), min(stop, (block + 1) * _BLOCK)
            mask, vals = self._block(key, block)
            mask[lo - block * _BLOCK : hi - block * _BLOCK] = present[lo - start : hi - start]
            vals[lo - block * _BLOCK : hi - block * _BLOCK] = data[lo - start : hi - start]

    def _demote(self, key: str) -> None:
        """The column stopped being one scalar type: drop its blocks, read it from rows."""
        del self.codes[key]
        self.blocks = {k: v for k, v in self.blocks.items() if k[0] != key}
        prefix = _block_prefix(key)
        cursor = self.txn.cursor()
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix) and cursor.delete():
                pass

    def appended(self, start: int, rows: Sequence[dict[str, Any]]) -> None:
        known = set(self.counts)
        seen: set[str] = set()
        for row in rows:
            _count(self.counts, row, +1)
            seen.update(row)
        for key in seen - (known - self.codes.keys()):  # new keys and block columns
            if key not in self.codes and not maybe_scalar(next(r[key] for r in rows if key in r)):
                continue  # a new key whose first value is no scalar: read from rows
            values = [row.get(key, MISSING) for row in rows]
            present = [v for v in values if v is not MISSING]
            if not present:
                continue
            code = scalar_type_code(present)
            if key not in self.codes and key not in known and code is not None:
                self.codes[key] = code
            if key in self.codes:
                if code == self.codes[key]:
                    self._fill(key, start, values)
                else:
                    self._demote(key)

    def inserted(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            _count(self.counts, row, +1)

    def replaced(self, i: int | None, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Row ``i`` changed from ``old`` to ``new`` (``i`` None: rows move, rebuild follows)."""
        _count(self.counts, old, -1)
        _count(self.counts, new, +1)
        if i is None:
            return
        for key in (old.keys() | new.keys()) & self.codes.keys():
            if key not in new:
                self._fill(key, i, [MISSING])
            elif scalar_type_code([new[key]]) == self.codes[key]:
                self._fill(key, i, [new[key]])
            else:
                self._demote(key)

    def rebuild_from(self, first: int, length: int, read: Any) -> None:
        """Rows from ``first`` on moved: rewrite every scalar block from there."""
        start = first // _BLOCK * _BLOCK
        keys = list(self.codes)
        rows = [read(i, keys) for i in range(start, length)]
        for key in keys:
            prefix = _block_prefix(key)
            cursor = self.txn.cursor()
            if cursor.set_range(_block_key(key, start // _BLOCK)):
                while cursor.key().startswith(prefix) and cursor.delete():
                    pass
            self.blocks = {k: v for k, v in self.blocks.items() if k[0] != key}
            values = [row.get(key, MISSING) for row in rows]
            present = [v for v in values if v is not MISSING]
            if present and scalar_type_code(present) != self.codes[key]:
                self._demote(key)
            elif present:
                self._fill(key, start, values)

    def commit(self) -> None:
        for (key, block), (mask, vals) in self.blocks.items():
            self.txn.put(_block_key(key, block), mask.tobytes() + vals.tobytes())
        self.txn.put(_META_KEYS, encode_value(self.counts))
        self.txn.put(_META_SCALARS, encode_value(self.codes))


def _read_meta(txn: Any, key: bytes) -> dict[str, Any]:
    raw = txn.get(key)
    return {} if raw is None else decode_value(bytes(raw))

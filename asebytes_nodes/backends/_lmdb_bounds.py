"""Reads from an LMDB transaction that refuse a value claiming to run past the end of the file.

py-lmdb touches every page of a value inside ``get`` (its ``preload``) before Python sees it.
A value kept on overflow pages (more than about 2 kB: rows of large frames, scalar column
blocks) takes its size from its leaf node, which LMDB does not compare with the file: a
flipped bit in that size made the reading process die with ``SIGBUS``. :class:`BoundedTxn`
positions a cursor on the key first (LMDB then reads the leaf node, not the value), reads the
node header just before the key, and for an overflow value compares the end of its pages with
the size of the file before asking py-lmdb for the value. Values kept inside their leaf page
are bounded by py-lmdb's patched LMDB (``validate-node-read-size``: a value must end inside its
page), and the file holds every page a snapshot names (checked on open, see :mod:`._lmdb_check`).

LMDB leaf node (``lmdb/mdb.c``): ``mn_lo``, ``mn_hi`` (the value size, low and high 16 bits),
``mn_flags`` (``F_BIGDATA`` = 1: the value is on overflow pages and the node holds their first
page number, 8 bytes after the key), ``mn_ksize``, then the key. An overflow value starts
16 bytes (the page header) into its first page.
"""

from __future__ import annotations

import ctypes
import operator
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreCorruptedError
from ._lmdb_blocks import describe_key
from ._lmdb_check import lmdb_failure

try:
    import lmdb
except ImportError:  # pragma: no cover - _lmdb raises the MissingExtraError first
    lmdb = None  # type: ignore[assignment]

__all__ = ["BoundedTxn", "EmptyTxn"]

_NODE = struct.Struct("=HHHH")  # mn_lo, mn_hi, mn_flags, mn_ksize (native order, as LMDB writes)
_U64_AT = ctypes.c_uint64.from_address  # the node header (or a page number) as one native integer
_LITTLE = sys.byteorder == "little"
# mn_flags is the third u16 of the header: bits 32-47 of that integer on little-endian hosts
_BIGDATA_BIT = 1 << 32 if sys.byteorder == "little" else 1 << 16  # F_BIGDATA = 1
_PAGE_HEADER = 16
_U8 = np.dtype(np.uint8)


def _numpy_address(view: memoryview) -> int:
    return int(np.frombuffer(view, _U8).ctypes.data)


def _buffer_field() -> int | None:
    """Offset of the data pointer inside a memoryview object, found by looking (None: not found).

    Reading the pointer there costs 0.2 us against 1 us through numpy, paid on every row read;
    it is checked on two views here, and numpy is used wherever the layout is different.
    """
    data = bytes(range(64))
    views = [memoryview(data), memoryview(data)[3:]]
    known = [_numpy_address(view) for view in views]
    size = sys.getsizeof(views[0])
    pairs = list(zip(views, known, strict=True))
    candidates = [
        offset
        for offset in range(16, size - 7, 8)
        if all(ctypes.c_void_p.from_address(id(view) + offset).value == at for view, at in pairs)
    ]
    return candidates[0] if len(candidates) == 1 else None


_FIELD = _buffer_field()


def _address(view: memoryview) -> int:
    """Where the bytes of ``view`` live in memory."""
    if _FIELD is None:
        return _numpy_address(view)
    return ctypes.c_void_p.from_address(id(view) + _FIELD).value or 0


class EmptyTxn:
    """The read transaction of a store whose file is not made yet (it is made by the first
    write, so that opening a mistyped path leaves nothing behind): it holds nothing."""

    def __enter__(self) -> EmptyTxn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def main(self) -> EmptyTxn:
        return self

    def get(self, key: bytes) -> None:
        return None

    small = get

    def keys(self, start: bytes = b"") -> Iterator[bytes]:
        return iter(())


_MANY = 8  # keys from which get_many works with numpy rather than one key at a time
_SECOND = operator.itemgetter(1)


def _words(addresses: np.ndarray) -> np.ndarray:
    """The native 8-byte words (``uint64``) at ``addresses`` (``int64``, of live objects or
    mapped pages), read with numpy through one view of the memory spanning them (nothing but
    these words is touched)."""
    lo = int(addresses.min())
    windows = np.asarray(_Windows(lo, int(addresses.max()) - lo + 1))
    return windows[addresses - lo].view(np.uint64)


class _Windows:
    """``count`` overlapping 8-byte windows of memory from address ``at``, for numpy (no copy;
    ctypes array types would be cached per length, without bound)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, at: int, count: int) -> None:
        self.__array_interface__ = {
            "data": (at, True),
            "shape": (count,),
            "strides": (1,),
            "typestr": "|V8",
            "version": 3,
        }


class BoundedTxn:
    """An LMDB transaction (opened with ``buffers=True``) on database ``db`` (None: the main
    one) whose :meth:`get` is bounded; as a context manager, a read that ends with the block.

    ``path`` names the data file in errors and is measured when a value seems to end past
    the known size (another process may have grown the file since).
    """

    __slots__ = ("_cursor", "_db", "_path", "_psize", "_size", "_txn")

    def __init__(self, txn: Any, path: Path, psize: int, size: list[int], db: Any = None) -> None:
        self._txn = txn
        self._path = path
        self._psize = psize
        self._size = size  # shared by the environment's transactions: [bytes of the file]
        self._db = db
        self._cursor: Any = None  # opened by the first get

    def __enter__(self) -> BoundedTxn:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, trace: Any) -> None:
        """End the transaction; LMDB's errors (a damaged page: MDB_CORRUPTED,
        MDB_PAGE_NOTFOUND...) and unnamed corruption errors come out naming the store."""
        self._txn.abort()
        if isinstance(exc, lmdb.Error):
            raise lmdb_failure(self._path, exc) from exc
        if isinstance(exc, StoreCorruptedError) and str(self._path) not in str(exc):
            raise type(exc)(f"{self._path}: {exc}") from exc

    def main(self) -> BoundedTxn:
        """The same transaction on the main database."""
        return self if self._db is None else BoundedTxn(self._txn, self._path, self._psize, self._size)

    def get(self, key: bytes) -> Any:
        """The value of ``key`` (a memoryview into the map) or None; refuses an overflow value
        whose claimed size runs past the end of the file."""
        cursor = self._cursor
        if cursor is None:
            self._cursor = cursor = self._txn.cursor(db=self._db)
        if not cursor.set_key(key):
            return None
        found = cursor.key()  # kept alive while its address is read
        where = _address(found)
        node = _U64_AT(where - _NODE.size).value
        if node & _BIGDATA_BIT:
            if _LITTLE:
                size, ksize = node & 0xFFFFFFFF, node >> 48  # (mn_hi << 16 | mn_lo), mn_ksize
            else:
                lo, hi, _, ksize = _NODE.unpack(node.to_bytes(8, sys.byteorder))
                size = lo | hi << 16
            page = _U64_AT(where + ksize).value * self._psize
            if page + _PAGE_HEADER + size > self._size[0]:
                self._refuse_past_end(key, page, size)
        return cursor.value()

    def get_many(self, keys: Sequence[bytes]) -> list[Any]:
        """The values of ``keys`` (None where absent), each bounded as by :meth:`get`. Many keys
        of a little-endian host: found by py-lmdb's ``getmulti`` without touching the values,
        their leaf nodes read and bounded with numpy, then the values fetched by ``getmulti``."""
        cursor = self._cursor
        if cursor is None:
            self._cursor = cursor = self._txn.cursor(db=self._db)
        if len(keys) >= _MANY and _FIELD is not None and _LITTLE:
            found = cursor.getmulti(keys, values=False)
            if len(found) == len(keys):  # else some are absent: read one by one, None for those
                self._bound(keys, found)
                return list(map(_SECOND, cursor.getmulti(keys)))
        return list(map(self.get, keys))

    def _bound(self, keys: Sequence[bytes], found: list[Any]) -> None:
        """Refuse an overflow value among those of ``keys`` (``found``: their keys as views
        into the map) whose claimed size runs past the end of the file."""
        at = _words(np.fromiter(map(id, found), np.int64, len(found)) + (_FIELD or 0)).view(np.int64)
        nodes = _words(at - _NODE.size)
        big = np.flatnonzero(nodes & np.uint64(_BIGDATA_BIT))
        if not len(big):
            return
        sizes, ksizes = nodes[big] & np.uint64(0xFFFFFFFF), nodes[big] >> np.uint64(48)
        pages = _words(at[big] + ksizes.view(np.int64)) * np.uint64(self._psize)
        for j in np.flatnonzero(pages + np.uint64(_PAGE_HEADER) + sizes > np.uint64(self._size[0])).tolist():
            self._refuse_past_end(keys[int(big[j])], int(pages[j]), int(sizes[j]))

    def _refuse_past_end(self, key: bytes, page: int, size: int) -> None:
        """Raise unless the file grew (another process wrote) or the page is a new one."""
        self._size[0] = known = os.stat(self._path).st_size
        # a page at or past the end is one this write transaction allocated (in memory)
        if page < known < page + _PAGE_HEADER + size:
            raise StoreCorruptedError(
                f"{self._path}: {describe_key(key)} claims {size} bytes from offset "
                f"{page + _PAGE_HEADER}, past the end of the file ({known} bytes): the file is "
                "damaged; restore it from a copy, or run `asebytes-nodes validate` to list every damaged row"
            )

    def small(self, key: bytes) -> Any:
        """The value of a record the layout keeps small (a few bytes: ``m:length``), without
        the bound: such a value lives inside its leaf page, where LMDB bounds it, and one
        flipped bit cannot both move it to overflow pages and change its size."""
        return self._txn.get(key, db=self._db)

    def keys(self, start: bytes = b"") -> Iterator[bytes]:
        """Every key from ``start`` on, in order (values are not touched)."""
        cursor = self._txn.cursor(db=self._db)
        if cursor.set_range(start):
            for key in cursor.iternext(keys=True, values=False):
                yield bytes(key)

    def put(self, key: bytes, value: bytes) -> Any:
        return self._txn.put(key, value, db=self._db)

    def delete(self, key: bytes) -> Any:
        return self._txn.delete(key, db=self._db)

    def cursor(self) -> Any:
        return self._txn.cursor(db=self._db)

    def id(self) -> int:
        return int(self._txn.id())

    def snapshot(self) -> tuple[list[int], Any, int]:
        """What identifies the data this transaction reads: its environment's size record (one
        per environment), its database and its LMDB transaction id."""
        return self._size, self._db, int(self._txn.id())

    def stat(self) -> dict[str, int]:
        return dict(self._txn.stat(self._db))

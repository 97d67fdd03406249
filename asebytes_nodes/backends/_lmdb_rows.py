"""LMDB row keys and the in-place row edits (replace, update, drop keys, insert, delete).

Kept apart from :mod:`._lmdb` so each module reads at one sitting. Each edit encodes its rows
before the transaction starts (a value that cannot be stored is refused before anything is
written) and runs inside the backend's ``_write``: one LMDB transaction, so a kill leaves every
row old or new. Insert and delete move the later rows, re-sealing each for its new key.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codec import encode_row
from ..errors import StoreCorruptedError

_META_LENGTH = b"m:length"
_U64 = struct.Struct(">Q")
_PAGE_OVERHEAD = 64  # bytes LMDB adds per stored value (node header, page slack), roughly


def _row_key(i: int) -> bytes:
    return b"r" + _U64.pack(i)


def _size(blobs: Sequence[bytes]) -> int:
    """About the bytes LMDB needs to store ``blobs`` (values, node headers, page slack)."""
    return sum(map(len, blobs)) + _PAGE_OVERHEAD * len(blobs)


class RowEdits:
    """The LMDB backend's in-place edits; it provides ``_write``, ``_get``, ``_put``,
    ``_record``, ``_length``, ``_book`` and ``_check_writable``."""

    _path: Any
    _write: Any
    _get: Any
    _put: Any
    _record: Any
    _length: Any
    _book: Any
    _check_writable: Any

    def _move(self, txn: Any, src: int, dst: int) -> None:
        """Move row ``src`` to ``dst``, checking its checksum and sealing it for its new key."""
        body = self._record(txn, _row_key(src))
        if body is None:
            raise StoreCorruptedError(f"{self._path}: row {src} is missing from the file")
        self._put(txn, _row_key(dst), bytes(body))

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]

        def work(txn: Any) -> None:
            book = self._book(txn)
            for i, row, blob in zip(np.asarray(indices).tolist(), rows, blobs, strict=True):
                book.replaced(i, self._get(txn, i), row)
                self._put(txn, _row_key(i), blob)
            book.commit()

        self._write(work, _size(blobs))

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(update) for update in updates]  # refuse unserialisable values first

        def work(txn: Any) -> None:
            book = self._book(txn)
            for i, update in zip(np.asarray(indices).tolist(), updates, strict=True):
                old = self._get(txn, i)
                new = {**old, **update}
                book.replaced(i, old, new)
                self._put(txn, _row_key(i), encode_row(new))
            book.commit()

        self._write(work, 2 * _size(blobs))

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        rows = np.asarray(indices).tolist()

        def work(txn: Any) -> None:
            book = self._book(txn)
            for i in rows:
                old = self._get(txn, i)
                new = {k: v for k, v in old.items() if k not in keys}
                book.replaced(i, old, new)
                self._put(txn, _row_key(i), encode_row(new))
            book.commit()

        self._write(work, _PAGE_OVERHEAD * len(rows))

    def insert_rows(self, index: int, rows: Sequence[dict[str, Any]]) -> None:
        """Insert before ``index``; moves every later row, so it costs O(rows after index)."""
        self._check_writable()
        blobs = [encode_row(r) for r in rows]
        k = len(blobs)

        def work(txn: Any) -> None:
            n = self._length(txn)
            for i in range(n - 1, index - 1, -1):
                self._move(txn, i, i + k)
            for j, blob in enumerate(blobs):
                self._put(txn, _row_key(index + j), blob)
            self._put(txn, _META_LENGTH, _U64.pack(n + k))
            book = self._book(txn)
            book.inserted(rows)
            book.rebuild_from(index, n + k, lambda i, keys: self._get(txn, i, keys))
            book.commit()

        if blobs:
            self._write(work, _size(blobs))

    def delete_rows(self, indices: Sequence[int] | np.ndarray) -> None:
        """Delete rows; moves every later row, so it costs O(rows after the first deleted)."""
        self._check_writable()
        drop = sorted({int(i) for i in indices})
        if not drop:
            return

        def work(txn: Any) -> None:
            n = self._length(txn)
            book = self._book(txn)
            for i in drop:
                book.replaced(None, self._get(txn, i), {})
            dropset = set(drop)
            target = drop[0]
            for i in range(drop[0], n):
                if i in dropset:
                    continue
                self._move(txn, i, target)
                target += 1
            for i in range(target, n):
                txn.delete(_row_key(i))
            self._put(txn, _META_LENGTH, _U64.pack(target))
            book.rebuild_from(drop[0], target, lambda i, keys: self._get(txn, i, keys))
            book.commit()

        self._write(work, 0)

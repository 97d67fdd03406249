"""Scalar column blocks of the LMDB backend (``c...`` keys; layout in :mod:`._lmdb`).

Every function here reads and writes through two callables of the backend, so that
checksums (layout version 2) are verified and added in one place: ``get(key)`` returns a
stored value without its checksum (None if absent) or raises ``StoreCorruptedError``
naming the record; ``put(key, value)`` stores a value with its checksum.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codec import decode_value, encode_value
from ..errors import StoreCorruptedError
from ._columns import maybe_scalar, scalar_type_code, type_code_dtype
from ._keys import MISSING

__all__ = ["BLOCK", "Bookkeeping", "block_key", "describe_key", "read_meta", "read_scalar_column"]

BLOCK = 512  # rows per scalar column block
_U64 = struct.Struct(">Q")
_KEY_LENGTH = struct.Struct(">H")
META_KEYS = b"m:keys"
META_SCALARS = b"m:scalars"

Get = Callable[[bytes], Any]
Put = Callable[[bytes, bytes], None]


def block_key(key: str, block: int) -> bytes:
    return block_prefix(key) + _U64.pack(block)


def block_prefix(key: str) -> bytes:
    name = key.encode()
    return b"c" + _KEY_LENGTH.pack(len(name)) + name


def describe_key(key: bytes) -> str:
    """A stored key in words, for error messages."""
    if key[:1] == b"r" and len(key) == 9:
        return f"row {_U64.unpack_from(key, 1)[0]}"
    if key[:1] == b"c" and len(key) >= 11:
        n = _KEY_LENGTH.unpack_from(key, 1)[0]
        block = _U64.unpack_from(key, 3 + n)[0] if len(key) == 11 + n else -1
        name = key[3 : 3 + n].decode(errors="replace")
        return f"column {name!r} block {block} (rows {block * BLOCK}-{block * BLOCK + BLOCK - 1})"
    return f"record {bytes(key)!r}"


def read_meta(get: Get, key: bytes, required: bool = True) -> dict[str, Any]:
    """A msgpack record; a missing ``required`` one means a damaged page hid it."""
    raw = get(key)
    if raw is None:
        if required:
            raise StoreCorruptedError(
                f"{describe_key(key)} is missing: the file is damaged (a page LMDB reads it from); "
                "restore the file from a copy"
            )
        return {}
    return decode_value(bytes(raw))


def _gather(
    get: Get, key: str, code: str, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(values, present, absent, found) of ``rows`` from the blocks of one scalar column: one
    LMDB read per block; ``present``: the row's block holds its value; ``absent``: per block
    read, no block stored; ``found``: each row's block in that order (None if none is absent)."""
    dtype = type_code_dtype(code)
    n = len(rows)
    # consecutive rows (a whole column, a slice): their blocks in order, the values one slice
    run = n > 1 and int(rows[-1]) - int(rows[0]) == n - 1 and bool((rows[1:] > rows[:-1]).all())
    if run:
        low = int(rows[0]) // BLOCK
        unique = np.arange(low, int(rows[-1]) // BLOCK + 1)
    else:
        blocks = rows // BLOCK
        low = int(blocks.min()) if n else 0
        unique = np.flatnonzero(np.bincount(blocks - low)) + low  # sorted, as np.unique (cheaper)
    masks = np.zeros((len(unique), BLOCK), bool)
    values = np.zeros((len(unique), BLOCK), dtype)
    absent = np.zeros(len(unique), bool)
    for j, block in enumerate(unique.tolist()):
        raw = get(block_key(key, block))
        if raw is None:
            absent[j] = True
        else:
            masks[j] = np.frombuffer(raw, bool, BLOCK)
            values[j] = np.frombuffer(raw, dtype, BLOCK, BLOCK)
    if run:
        start = int(rows[0]) - low * BLOCK
        cut = slice(start, start + n)
        found = rows // BLOCK - low if absent.any() else None
        return values.reshape(-1)[cut], masks.reshape(-1)[cut], absent, found
    found = np.searchsorted(unique, blocks)
    where = found, rows % BLOCK
    return values[where], masks[where], absent, found


def read_scalar_column(
    get: Get,
    key: str,
    code: str,
    rows: np.ndarray,
    from_rows: Callable[[list[int]], list[Any]],
    within: Callable[[np.ndarray], None],
) -> list[Any]:
    """One scalar column from its blocks: one LMDB read per block, no row decoding.

    Rows whose block is absent (never written, or hidden by a damaged page) are read
    through ``from_rows(row numbers)``: the rows are the source of truth. ``within(rows)``
    refuses rows past the store's end, which blocks show as lacking the key.
    """
    picked, present, absent, found = _gather(get, key, code, rows)
    if not present.all():
        within(rows[~present])
    out: list[Any] = picked.tolist() if code in ("f", "i", "b") else list(picked)
    for j in np.flatnonzero(~present).tolist():
        out[j] = MISSING
    if found is not None and absent.any():
        slow = np.flatnonzero(absent[found])
        for j, value in zip(slow.tolist(), from_rows(rows[slow].tolist()), strict=True):
            out[j] = value
    return out


def scalar_array(get: Get, key: str, code: str, rows: np.ndarray) -> np.ndarray | None:
    """``np.asarray(read_scalar_column(...))`` without the Python list, when every row's block
    holds its value; else None (the caller reads the column as a list)."""
    picked, present, _, _ = _gather(get, key, code, rows)
    return picked if present.all() else None


def _count(counts: dict[str, int], row: dict[str, Any], sign: int) -> None:
    for key in row:
        left = counts.get(key, 0) + sign
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)


def _delete_from(txn: Any, start: bytes, prefix: bytes) -> None:
    """Delete every key from ``start`` on that begins with ``prefix``."""
    cursor = txn.cursor()
    if cursor.set_range(start):
        while bytes(cursor.key()).startswith(prefix) and cursor.delete():
            pass


class Bookkeeping:
    """What one write transaction must keep in step with the rows: key counts and the
    scalar column blocks (see the layout in :mod:`._lmdb`)."""

    def __init__(self, txn: Any, get: Get, put: Put, strict: bool) -> None:
        self.txn = txn
        self.get = get
        self.put = put
        self.counts: dict[str, int] = read_meta(get, META_KEYS)
        self.codes: dict[str, str] = read_meta(get, META_SCALARS, strict)
        self.blocks: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, key: str, block: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.blocks.get((key, block))
        if found is None:
            dtype = type_code_dtype(self.codes[key])
            raw = self.get(block_key(key, block))
            if raw is None:
                found = (np.zeros(BLOCK, bool), np.zeros(BLOCK, dtype))
            else:
                found = (
                    np.frombuffer(raw, bool, BLOCK).copy(),
                    np.frombuffer(raw, dtype, BLOCK, BLOCK).copy(),
                )
            self.blocks[(key, block)] = found
        return found

    def _fill(self, key: str, start: int, values: list[Any]) -> None:
        """Write values of rows ``start, start + 1, ...`` (MISSING where absent)."""
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
        data = np.zeros(len(values), type_code_dtype(self.codes[key]))
        data[present] = [v for v in values if v is not MISSING]
        stop = start + len(values)
        for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            lo, hi = max(start, block * BLOCK), min(stop, (block + 1) * BLOCK)
            mask, vals = self._block(key, block)
            mask[lo - block * BLOCK : hi - block * BLOCK] = present[lo - start : hi - start]
            vals[lo - block * BLOCK : hi - block * BLOCK] = data[lo - start : hi - start]

    def _demote(self, key: str) -> None:
        """The column stopped being one scalar type: drop its blocks, read it from rows."""
        del self.codes[key]
        self.blocks = {k: v for k, v in self.blocks.items() if k[0] != key}
        prefix = block_prefix(key)
        _delete_from(self.txn, prefix, prefix)

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
        start = first // BLOCK * BLOCK
        keys = list(self.codes)
        rows = [read(i, keys) for i in range(start, length)]
        for key in keys:
            _delete_from(self.txn, block_key(key, start // BLOCK), block_prefix(key))
            self.blocks = {k: v for k, v in self.blocks.items() if k[0] != key}
            values = [row.get(key, MISSING) for row in rows]
            present = [v for v in values if v is not MISSING]
            if present and scalar_type_code(present) != self.codes[key]:
                self._demote(key)
            elif present:
                self._fill(key, start, values)

    def commit(self) -> None:
        # sorted: the same rows give the same bytes whatever Python's string hash seed (shards, DVC)
        for (key, block), (mask, vals) in sorted(self.blocks.items(), key=lambda item: item[0]):
            self.put(block_key(key, block), mask.tobytes() + vals.tobytes())
        self.put(META_KEYS, encode_value(dict(sorted(self.counts.items()))))
        self.put(META_SCALARS, encode_value(dict(sorted(self.codes.items()))))

"""Arrow tables <-> flat rows, one vectorised conversion per column.

Reading turns a whole ``pyarrow.Table`` (a batch of dataset rows) into row dicts: each
column is converted once with numpy (nested lists are flattened and split at their
offsets), never through one Python dict per dataset row (the readers of mapped columns,
with their checks, are in :mod:`._hf_readers`). Writing builds the *flat layout* below,
which reads back exactly.

Flat layout (version 1)
-----------------------
One column per flat key, named by the key (``arrays.positions``, ``calc.energy``,
``info.smiles``, ``cell`` ...); null where a row does not carry the key.

=====================================================  ==========================================
values of the column (every row that carries it)       Arrow type
=====================================================  ==========================================
Python ``float`` / ``int`` (int64 range) / ``bool``    ``double`` / ``int64`` / ``bool``
Python ``str``                                         ``string``
numpy scalars of one dtype, except float64, int64      that type (``float32``, ``int32``,
and bool (those would read back as Python scalars)     ``uint8`` ...), read back as numpy scalars
numpy arrays (ndim >= 1) of one numeric or bool dtype  ``list<fixed_size_list<...>>``: the first
and one shape after the first axis                     axis varies per row, the others are fixed
anything else: lists, dicts, tuples, None, string      ``binary``: each value encoded by
arrays, complex, float64/int64/bool numpy scalars,     :mod:`asebytes_nodes.codec` (msgpack with
columns that mix types                                 numpy types; decoding never runs code)
=====================================================  ==========================================

The column types alone say how to read a value back, so the layout survives any tool
that keeps Arrow types (``datasets`` drops custom schema metadata). The layout version is
the value of the ``_asebytes_nodes_layout`` column (int8, the same in every row; a column
rather than metadata for the same reason); readers refuse a newer one. Columns whose names
are not flat keys are read like unmapped columns of any dataset (``info.<name>``).

Version history
---------------
1. First layout (asebytes-nodes 0.1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codec import decode_value, encode_value
from ..errors import InvalidDataError, MissingExtraError, StoreCorruptedError
from ..rows import rows_from_atoms
from ._columns import scalar_type_code, type_code_dtype
from ._keys import MISSING

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'Reading datasets through Arrow needs pyarrow. Run: pip install "asebytes-nodes[hf]"'
    ) from exc

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["LAYOUT_COLUMN", "LAYOUT_VERSION", "layout_version", "rows_to_arrow", "write_parquet"]

LAYOUT_COLUMN = "_asebytes_nodes_layout"
LAYOUT_VERSION = 1

_AMBIGUOUS = frozenset(("<f8", "<i8", "|b1"))  # numpy scalars that would read back as Python ones
_NUMERIC = frozenset("biuf")


# -- reading: building blocks ---------------------------------------------------------------
def _column(table: pa.Table, name: str) -> pa.Array:
    """One column as one array; extension types (``datasets``' ``Array2D`` ...) as their storage."""
    chunked = table.column(name)
    arr = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
    return arr.storage if isinstance(arr, pa.ExtensionArray) else arr


def _with_missing(values: list[Any], arr: pa.Array) -> list[Any]:
    if arr.null_count:
        for j in np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)).tolist():
            values[j] = MISSING
    return values


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _nested(arr: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """A list column as (values of shape (elements, *tail), row offsets), or None when the
    inner lists are ragged, hold nulls, or the leaves are not numbers.

    The values are copied out of Arrow's buffers, so callers own them.
    """
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    child = arr.flatten()
    tail: list[int] = []
    while _is_list(child.type):
        if child.null_count:
            return None
        if pa.types.is_fixed_size_list(child.type):
            tail.append(child.type.list_size)
        else:
            inner = pc.list_value_length(child).to_numpy(zero_copy_only=False)
            size = int(inner[0]) if len(inner) else 0
            if len(inner) and (inner != size).any():
                return None
            tail.append(size)
        child = child.flatten()
    if child.null_count or not (pa.types.is_integer(child.type) or pa.types.is_floating(child.type)
                                or pa.types.is_boolean(child.type)):
        return None
    leaf = np.array(child.to_numpy(zero_copy_only=False), copy=True)
    return leaf.reshape(int(offsets[-1]), *tail), offsets


def _split(values: np.ndarray, offsets: np.ndarray) -> list[Any]:
    bounds = offsets.tolist()
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _scalars(arr: pa.Array, exact: bool) -> list[Any]:
    """Primitive values: Python scalars, or numpy scalars for exact non-64-bit types."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or (
        pa.types.is_large_binary(t)
    ):
        return _with_missing(arr.to_pylist(), arr)
    filled = arr.fill_null(pa.scalar(False if pa.types.is_boolean(t) else 0, t)) if arr.null_count else arr
    values = filled.to_numpy(zero_copy_only=False)
    if exact and values.dtype.str not in _AMBIGUOUS:
        return _with_missing(list(values), arr)
    return _with_missing(values.tolist(), arr)


def _natural(arr: pa.Array) -> list[Any]:
    """Values of a column of any dataset: numbers, strings, arrays for numeric lists."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _natural(arr.dictionary_decode())
    if pa.types.is_null(t):
        return [MISSING] * len(arr)
    if _is_list(t):
        nested = _nested(arr)
        if nested is None:
            return _with_missing(arr.to_pylist(), arr)
        return _with_missing(_split(*nested), arr)
    if pa.types.is_temporal(t) or pa.types.is_decimal(t):
        return _with_missing(pc.cast(arr, pa.string()).to_pylist(), arr)
    if pa.types.is_primitive(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_binary(t) or pa.types.is_large_binary(t)
    ):
        return _scalars(arr, exact=False)
    return _with_missing(arr.to_pylist(), arr)


def _flat(arr: pa.Array, column: str) -> list[Any]:
    """Values of a flat-layout column, exactly as written."""
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = arr.to_pylist()
        try:
            return [MISSING if v is None else decode_value(v) for v in values]
        except StoreCorruptedError as exc:
            raise StoreCorruptedError(f"column {column!r}: {exc}") from None
    if _is_list(t):
        nested = _nested(arr)
        if nested is not None:
            return _with_missing(_split(*nested), arr)
        return _natural(arr)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or (
        pa.types.is_string(t) or pa.types.is_large_string(t)
    ):
        return _scalars(arr, exact=True)
    return _natural(arr)


# -- writing --------------------------------------------------------------------------------
def _encoded(values: list[Any], where: str) -> pa.Array:
    blobs: list[bytes | None] = []
    for i, v in enumerate(values):
        if v is MISSING:
            blobs.append(None)
            continue
        try:
            blobs.append(encode_value(v))
        except InvalidDataError as exc:
            raise type(exc)(f"row {i}: key {where!r}: {exc}") from None
    return pa.array(blobs, type=pa.binary())


def _arrays_column(given: list[np.ndarray], present: np.ndarray) -> pa.Array:
    lengths = np.zeros(len(present), dtype=np.int64)
    lengths[present] = [len(v) for v in given]
    offsets = np.zeros(len(present) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tail = given[0].shape[1:]
    flat = np.concatenate(given) if given else np.zeros(0)
    child: pa.Array = pa.array(flat.reshape(-1))
    for size in reversed(tail):
        child = pa.FixedSizeListArray.from_arrays(child, size)
    large = offsets[-1] >= 2**31
    offset_array = pa.array(offsets, pa.int64() if large else pa.int32())
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(offset_array, child, mask=pa.array(~present))


def _column_array(key: str, values: list[Any]) -> pa.Array:
    present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    given = [v for v in values if v is not MISSING]
    code = scalar_type_code(given) if given else None
    dtype = None if code is None else type_code_dtype(code)
    if dtype is not None and (
        code in ("f", "i", "b") or (dtype.str not in _AMBIGUOUS and dtype.kind in _NUMERIC)
    ):
        data: np.ndarray = np.zeros(len(values), dtype)
        data[present] = given
        return pa.array(data, mask=~present)
    if given and all(type(v) is str for v in given):
        return pa.array([v if v is not MISSING else None for v in values], type=pa.string())
    if given and all(type(v) is np.ndarray for v in given):
        first = given[0]
        if (first.ndim >= 1 and first.dtype.kind in _NUMERIC and first.dtype.isnative
                and 0 not in first.shape[1:]
                and all(v.dtype == first.dtype and v.shape[1:] == first.shape[1:] and v.ndim == first.ndim
                        for v in given)):
            return _arrays_column(given, present)
    return _encoded(values, key)


def rows_to_arrow(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A table in the flat layout (module docstring); columns in first-seen key order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = {key: _column_array(key, [row.get(key, MISSING) for row in rows]) for key in keys}
    columns[LAYOUT_COLUMN] = pa.array(np.full(len(rows), LAYOUT_VERSION, np.int8))
    return pa.table(columns)


def layout_version(column: pa.ChunkedArray | pa.Array, where: str) -> int:
    """The flat layout version a ``_asebytes_nodes_layout`` column records; refuses newer ones."""
    from ..errors import FormatVersionError

    version = pc.max(column).as_py() or LAYOUT_VERSION
    if version > LAYOUT_VERSION:
        raise FormatVersionError(
            f"{where}: written with flat parquet layout version {version}, but this asebytes-nodes "
            f"reads up to version {LAYOUT_VERSION}; upgrade asebytes-nodes"
        )
    return int(version)


def write_parquet(
    images: Iterable[Atoms], path: str | os.PathLike[str], *, row_group_size: int = 4096
) -> None:
    """Write frames to one parquet file in the flat layout, readable through ``datasets``.

    >>> write_parquet(frames, "data/train.parquet")  # doctest: +SKIP
    >>> ASEIO("hf://data/train.parquet", split="train")  # doctest: +SKIP

    Frames are checked first (like ``ASEIO.extend``); a bad frame writes nothing. Column
    types follow the values of this call, so write the shards of one dataset in one call
    or check that their schemas agree (``datasets`` refuses shards that differ).
    """
    import pyarrow.parquet as pq

    table = rows_to_arrow(rows_from_atoms(images))
    pq.write_table(table, os.fspath(path), row_group_size=row_group_size)

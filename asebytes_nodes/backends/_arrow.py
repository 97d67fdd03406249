"""Arrow tables <-> flat rows, one vectorised conversion per column.

Reading turns a whole ``pyarrow.Table`` (a batch of dataset rows) into row dicts: each
column is converted once with numpy (nested lists are flattened and split at their
offsets), never through one Python dict per dataset row. Writing builds the *flat
layout* below, which reads back exactly.

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
from ..validation import check_key
from ._columns import scalar_type_code, type_code_dtype
from ._hf_mapping import ColumnMapping
from ._keys import MISSING, is_per_atom

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'Reading datasets through Arrow needs pyarrow. Run: pip install "asebytes-nodes[hf]"'
    ) from exc

if TYPE_CHECKING:
    from ase import Atoms

__all__ = [
    "LAYOUT_COLUMN",
    "LAYOUT_VERSION",
    "Reader",
    "layout_version",
    "plan_readers",
    "rows_to_arrow",
    "table_to_rows",
    "write_parquet",
]

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


# -- reading: one reader per flat key -------------------------------------------------------
def _fill_nulls(stacked: np.ndarray, arr: pa.Array) -> list[Any]:
    """One cell or pbc per row: a null row (or an all-null column, Arrow's ``null`` type) is a
    zero cell or a non-periodic pbc, as ASE builds an Atoms without them."""
    valid = np.ones(len(arr), dtype=bool) if not arr.null_count else (
        arr.is_valid().to_numpy(zero_copy_only=False)
    )
    out = np.zeros((len(arr), *stacked.shape[1:]), dtype=stacked.dtype)
    out[valid] = stacked
    return list(out)


def _place(stacked: Any, arr: pa.Array) -> list[Any]:
    """One value per row from values stacked over the non-null rows."""
    if not arr.null_count:
        return list(stacked)
    out: list[Any] = [MISSING] * len(arr)
    valid = np.flatnonzero(arr.is_valid().to_numpy(zero_copy_only=False)).tolist()
    for j, value in zip(valid, stacked, strict=True):
        out[j] = value
    return out


def _voigt(s: np.ndarray) -> np.ndarray:
    """(n, 3, 3) -> (n, 6), symmetrised like ``ase.stress.full_3x3_to_voigt_6_stress``."""
    return np.stack(
        [s[:, 0, 0], s[:, 1, 1], s[:, 2, 2], (s[:, 1, 2] + s[:, 2, 1]) / 2,
         (s[:, 0, 2] + s[:, 2, 0]) / 2, (s[:, 0, 1] + s[:, 1, 0]) / 2],
        axis=1,
    )


class Reader:
    """Turns the source column(s) of one flat key into one value per row (``MISSING`` if absent).

    ``kind`` is ``flat`` (flat layout), ``natural`` (any column), or one of the mapped parts
    ``positions``, ``numbers``, ``cell``, ``pbc``, ``stress``. ``extra`` names the columns a
    stress reader also needs: the volume-normalised flag and the cell.
    """

    def __init__(
        self, key: str, column: str, kind: str, extra: tuple[str, ...] = (), factor: float = 1.0
    ) -> None:
        self.key = key
        self.column = column
        self.kind = kind
        self.columns = (column, *extra)
        self.factor = factor

    def read(self, table: pa.Table, rows: np.ndarray) -> list[Any]:
        """Values of the rows of ``table``, which are dataset rows ``rows`` (for messages)."""
        arr = _column(table, self.column)
        kind = self.kind
        if kind == "flat":
            return _flat(arr, self.column)
        if kind == "natural":
            return _natural(arr)
        if kind == "numbers":
            return self._numbers(arr, rows)
        if kind == "positions":
            return self._positions(arr, rows)
        if kind == "cell":
            return _fill_nulls(self._per_frame(arr, rows, (9,)).reshape(-1, 3, 3).astype(np.float64), arr)
        if kind == "pbc":
            return _fill_nulls(self._per_frame(arr, rows, (3,)) != 0, arr)
        return _place(self._stress(table, arr, rows), arr)

    def _fail(self, rows: np.ndarray, what: str) -> InvalidDataError:
        return InvalidDataError(
            f"column {self.column!r} (mapped to {self.key!r}) must hold {what} "
            f"(rows {int(rows[0])} to {int(rows[-1])}); fix the mapping or the data"
        )

    def _per_frame(self, arr: pa.Array, rows: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
        """The non-null rows as one (rows, size) array; every row must hold one of ``sizes`` numbers."""
        if pa.types.is_null(arr.type):  # every row null
            return np.zeros((0, sizes[0]))
        nested = _nested(arr)
        if nested is None:
            raise self._fail(rows, f"lists of {' or '.join(map(str, sizes))} numbers")
        values, offsets = nested
        per_element = int(np.prod(values.shape[1:], dtype=np.int64))
        counts = np.diff(offsets)[arr.is_valid().to_numpy(zero_copy_only=False)] * per_element
        if len(counts) == 0:
            return np.zeros((0, sizes[0]))
        if counts.min() != counts.max() or int(counts[0]) not in sizes:
            raise self._fail(rows, f"{' or '.join(map(str, sizes))} numbers in every row")
        return values.reshape(len(counts), int(counts[0]))

    def _positions(self, arr: pa.Array, rows: np.ndarray) -> list[Any]:
        nested = _nested(arr)
        if nested is not None and nested[0].ndim == 1 and not (nested[1] % 3).any():
            nested = nested[0].reshape(-1, 3), nested[1] // 3  # 3n numbers per row
        if nested is None or nested[0].shape[1:] != (3,):
            raise self._fail(rows, "lists of 3 numbers per atom")
        return _with_missing(_split(nested[0].astype(np.float64, copy=False), nested[1]), arr)

    def _stress(self, table: pa.Table, arr: pa.Array, rows: np.ndarray) -> np.ndarray:
        """Voigt stress in eV/Å³ with ASE's sign (see :mod:`._hf_mapping`)."""
        flat = self._per_frame(arr, rows, (6, 9)).astype(np.float64)
        stress = (_voigt(flat.reshape(-1, 3, 3)) if flat.shape[1] == 9 else flat) * self.factor
        if len(self.columns) == 1:
            return stress
        norm_name, cell_name = self.columns[1:]
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        norm = _column(table, norm_name).fill_null(False).to_numpy(zero_copy_only=False)[valid]
        if norm.any():
            cells = Reader("cell", cell_name, "cell").read(table, rows)
            picked = np.flatnonzero(valid)[norm].tolist()
            missing = [j for j in picked if cells[j] is MISSING]
            if missing:
                raise InvalidDataError(
                    f"row {int(rows[missing[0]])}: {norm_name!r} says the stress was multiplied by "
                    f"the cell volume, but the row has no cell in {cell_name!r}"
                )
            volumes = np.abs(np.linalg.det(np.stack([cells[j] for j in picked])))
            stress[norm] /= volumes[:, None]
        return stress

    def _numbers(self, arr: pa.Array, rows: np.ndarray) -> list[Any]:
        child = arr.flatten()
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False), out=offsets[1:])
        if pa.types.is_string(child.type) or pa.types.is_large_string(child.type):
            from ase.data import atomic_numbers

            encoded = pc.dictionary_encode(child)
            symbols = encoded.dictionary.to_pylist()
            unknown = [s for s in symbols if s not in atomic_numbers]
            if unknown:
                raise InvalidDataError(
                    f"column {self.column!r}: unknown chemical symbol {unknown[0]!r} "
                    f"(rows {int(rows[0])} to {int(rows[-1])}); symbols must be ASE element symbols"
                )
            lookup = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
            values = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
        elif pa.types.is_integer(child.type) and not child.null_count:
            values = child.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            raise self._fail(rows, "lists of atomic numbers or of chemical symbols")
        return _with_missing(_split(values, offsets), arr)


def plan_readers(columns: Sequence[str], mapping: ColumnMapping) -> dict[str, Reader]:
    """One reader per flat key, in row order; unmapped columns become ``info.<column>``.

    Raises ``UnknownKeyError`` naming a required column the dataset lacks, with the
    available ones.
    """
    from ..errors import UnknownKeyError

    columns = [c for c in columns if c != LAYOUT_COLUMN]
    present = set(columns)
    readers: dict[str, Reader] = {}
    if mapping.flat:
        for name in columns:
            if name in mapping.exclude:
                continue
            try:
                readers[check_key(name)] = Reader(name, name, "flat")
            except KeyError:
                readers["info." + name] = Reader("info." + name, name, "natural")
        if not {"arrays.positions", "arrays.numbers"} & set(readers):
            raise UnknownKeyError(
                "a flat-layout dataset needs an 'arrays.positions' or 'arrays.numbers' column; "
                f"available columns: {', '.join(columns)}"
            )
        return readers
    required = set(mapping.required if mapping.required is not None else mapping.mapped())
    if mapping.required is None:
        required -= {"cell", "pbc"}
    required |= {"arrays.positions", "arrays.numbers"}
    kinds = {"arrays.positions": "positions", "arrays.numbers": "numbers", "cell": "cell", "pbc": "pbc"}
    for key, column in mapping.mapped().items():
        if column not in present:
            if key in required:
                raise UnknownKeyError(
                    f"the mapping reads {key!r} from column {column!r}, which the dataset does not "
                    f"have; available columns: {', '.join(columns)}"
                )
            continue
        if key == "calc.stress":
            norm = mapping.stress_volume_normalized
            extra = (norm, mapping.cell) if norm in present and mapping.cell in present else ()
            readers[key] = Reader(key, column, "stress", extra, mapping.stress_factor)
        else:
            readers[key] = Reader(key, column, kinds.get(key, "natural"))
    consumed = mapping.consumed()
    for name in columns:
        if name not in consumed and "info." + name not in readers:
            readers["info." + name] = Reader("info." + name, name, "natural")
    return readers


def table_to_rows(
    table: pa.Table, readers: dict[str, Reader], rows: np.ndarray, keys: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Row dicts for the rows of ``table`` (dataset rows ``rows``), optionally only ``keys``.

    Per-atom mapped values must match the frame's atom count; an error names the row.
    """
    wanted = readers if keys is None else {k: readers[k] for k in keys if k in readers}
    out: list[dict[str, Any]] = [{} for _ in range(table.num_rows)]
    counts: np.ndarray | None = None
    for key, reader in wanted.items():
        values = reader.read(table, rows)
        if reader.kind in ("natural", "positions", "numbers") and is_per_atom(key):
            counts = _check_atoms(key, reader.column, values, counts, rows)
        for row, value in zip(out, values, strict=True):
            if value is not MISSING:
                row[key] = value
    return out


def _check_atoms(
    key: str, column: str, values: list[Any], counts: np.ndarray | None, rows: np.ndarray
) -> np.ndarray:
    lengths = np.fromiter((len(v) if v is not MISSING and hasattr(v, "__len__") else -1 for v in values),
                          np.int64, len(values))
    if counts is None:
        return lengths
    bad = (lengths >= 0) & (counts >= 0) & (lengths != counts)
    if bad.any():
        j = int(np.argmax(bad))
        raise InvalidDataError(
            f"row {int(rows[j])}: column {column!r} (read as {key!r}) has {lengths[j]} entries, "
            f"but the frame has {counts[j]} atoms"
        )
    return np.where(counts >= 0, counts, lengths)


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

"""Mapped dataset columns -> row values: one :class:`Reader` per flat key, vectorised over rows.

Each reader converts its column(s) of a batch at once with Arrow and numpy. Values a write
would refuse are refused here, naming the column and the dataset row: a column of the wrong
Arrow type (a string cell, one atomic number per row), a row of the wrong size (a cell of 6
numbers, forces of 2 components per atom), a per-atom value whose atom count disagrees with
the row's atomic numbers, a volume-normalised stress without a cell to divide by. The checks
cost a few Arrow or numpy calls per batch; finding the row is done only once a check has failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InvalidDataError, UnknownKeyError
from ..validation import check_key
from ._arrow import LAYOUT_COLUMN, _column, _flat, _is_list, _natural, _nested, _split, _with_missing
from ._hf_mapping import ColumnMapping
from ._keys import MISSING, PER_ATOM_CALC, is_per_atom

__all__ = ["Reader", "column_values", "needed_columns", "plan_readers", "table_to_rows"]

_ATOM_KINDS = ("positions", "atoms")  # readers whose values run over atoms, checked against the numbers


# -- locating a bad row (error paths only) ------------------------------------------------------
def _lengths(arr: pa.Array) -> np.ndarray:
    return pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)


def _row_of(arr: pa.Array, element: int) -> int:
    """The row (of ``arr``, a list column) holding flattened element ``element``."""
    offsets = np.cumsum(_lengths(arr))
    return int(np.searchsorted(offsets, element, side="right"))


def _irregular_row(arr: pa.Array) -> int | None:
    """The first row whose inner lists hold nulls or differ in length from the most common one:
    why :func:`._arrow._nested` refused the column; None when its leaves are no numbers."""
    owner = np.repeat(np.arange(len(arr)), _lengths(arr))  # the row of each element
    child = arr.flatten()
    while True:
        bad = child.is_null().to_numpy(zero_copy_only=False)
        if not _is_list(child.type):
            return int(owner[np.argmax(bad)]) if bad.any() else None
        inner = _lengths(child)
        sizes, seen = np.unique(inner[~bad], return_counts=True)
        if len(sizes):
            bad |= inner != sizes[np.argmax(seen)]
        if bad.any():
            return int(owner[np.argmax(bad)])
        owner, child = np.repeat(owner, inner), child.flatten()


def _shape_text(tail: tuple[int, ...]) -> str:
    return "(" + ", ".join(["n_atoms", *map(str, tail)]) + ("," if not tail else "") + ")"


# -- values a cell with null lattice vectors (OPTIMADE slabs, molecules) -------------------------
def _null_vectors_as_zero(arr: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """A cell column whose lattice vectors may be null, or lists of nulls (OPTIMADE's
    ``lattice_vectors`` of a non-periodic direction), as (numbers, offsets) with zero vectors
    there; None when a vector is partly null or the column is not made of vectors of 3 numbers."""
    rows = _lengths(arr)
    child = arr.flatten()
    if _is_list(child.type):  # rows of vectors
        leaves = child.flatten()
        present = child.is_valid().to_numpy(zero_copy_only=False)
        if _is_list(leaves.type) or (pc.list_value_length(child).fill_null(3).to_numpy() != 3).any():
            return None
        slots = np.repeat(present, 3)
        rows = rows * 3
    else:
        leaves, slots = child, np.ones(len(child), dtype=bool)
    if not (pa.types.is_integer(leaves.type) or pa.types.is_floating(leaves.type)) or len(slots) % 3:
        return None
    values = np.zeros(len(slots))
    nulls = np.ones(len(slots), dtype=bool)
    values[slots] = leaves.fill_null(0).to_numpy(zero_copy_only=False)
    nulls[slots] = leaves.is_null().to_numpy(zero_copy_only=False)
    by_vector = nulls.reshape(-1, 3)
    if (by_vector.any(axis=1) & ~by_vector.all(axis=1)).any():
        return None
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(rows, out=offsets[1:])
    return values, offsets


# -- readers ----------------------------------------------------------------------------------
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

    ``kind`` is ``flat`` (flat layout), ``natural`` (any column), ``atoms`` (a mapped per-atom
    column), or one of the mapped parts ``positions``, ``numbers``, ``cell``, ``pbc``, ``stress``.
    ``volume`` (stress only) names the volume-normalised flag column and the cell column, None
    when the dataset has no cell column.
    """

    def __init__(
        self, key: str, column: str, kind: str, factor: float = 1.0,
        volume: tuple[str, str | None] | None = None,
    ) -> None:  # fmt: skip
        self.key = key
        self.column = column
        self.kind = kind
        self.factor = factor
        self.volume = volume
        self.columns = (column, *(c for c in volume or () if c is not None))

    def read(self, table: pa.Table, rows: np.ndarray) -> list[Any]:
        """Values of the rows of ``table``, which are dataset rows ``rows`` (for messages)."""
        arr = _column(table, self.column)
        kind = self.kind
        if kind == "flat":
            return _flat(arr, self.column)
        if kind == "natural":
            return _natural(arr)
        if pa.types.is_null(arr.type) and kind not in ("cell", "pbc"):  # every row null
            return [MISSING] * len(arr)
        if kind == "atoms":
            return self._per_atom(arr, rows)
        if kind == "numbers":
            return self._numbers(arr, rows)
        if kind == "positions":
            return self._positions(arr, rows)
        if kind == "cell":
            return _fill_nulls(self.cells(arr, rows), arr)
        if kind == "pbc":
            if pa.types.is_boolean(arr.type):  # one flag per row: all three directions, as ASE's pbc=True
                flags = arr.fill_null(False).to_numpy(zero_copy_only=False)
                return list(np.repeat(flags[:, None], 3, axis=1))
            return _fill_nulls(self._per_frame(arr, rows, (3,)) != 0, arr)
        return _place(self._stress(table, arr, rows), arr)

    def _fail(self, what: str, rows: np.ndarray, j: int | None, arr: pa.Array) -> InvalidDataError:
        """``j``: the bad row of the batch; None blames the column's Arrow type."""
        where = f"row {int(rows[j])}: " if j is not None else ""
        got = "" if j is not None else f", but it is of Arrow type {arr.type}"
        return InvalidDataError(
            f"{where}column {self.column!r} (mapped to {self.key!r}) must hold {what}{got}; "
            "fix the mapping or the data"
        )

    def _lists(self, arr: pa.Array, rows: np.ndarray, what: str) -> None:
        if not _is_list(arr.type):
            raise self._fail(what, rows, None, arr)

    def cells(self, arr: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The non-null rows' cells, (rows, 3, 3) float64; null lattice vectors are zero vectors."""
        return self._per_frame(arr, rows, (9,), lattice=True).reshape(-1, 3, 3).astype(np.float64)

    def _per_frame(
        self, arr: pa.Array, rows: np.ndarray, sizes: tuple[int, ...], lattice: bool = False
    ) -> np.ndarray:
        """The non-null rows as one (rows, size) array; every row must hold one of ``sizes`` numbers."""
        what = f"{' or '.join(map(str, sizes))} numbers in every row"
        if pa.types.is_null(arr.type):  # every row null
            return np.zeros((0, sizes[0]))
        self._lists(arr, rows, f"lists of {what}")
        nested = _nested(arr)
        if nested is None and lattice:
            nested = _null_vectors_as_zero(arr)
        if nested is None:
            note = " (a lattice vector may be null as a whole, not in part)" if lattice else ""
            raise self._fail(what + note, rows, _irregular_row(arr), arr)
        values, offsets = nested
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        counts = np.diff(offsets) * int(np.prod(values.shape[1:], dtype=np.int64))
        held = counts[valid]
        if len(held) == 0:
            return np.zeros((0, sizes[0]))
        if held.min() != held.max() or int(held[0]) not in sizes:
            bad = valid & ~np.isin(counts, sizes)
            if not bad.any():  # sizes mixed
                bad = valid & (counts != held[0])
            j = int(np.argmax(bad))
            raise self._fail(f"{what}, not {int(counts[j])}", rows, j, arr)
        return values.reshape(len(held), int(held[0]))

    def _positions(self, arr: pa.Array, rows: np.ndarray) -> list[Any]:
        what = "lists of 3 numbers per atom"
        self._lists(arr, rows, what)
        nested = _nested(arr)
        if nested is None:
            raise self._fail(what, rows, _irregular_row(arr), arr)
        values, offsets = nested
        if values.ndim == 1:  # 3n numbers per row
            if (offsets % 3).any():
                raise self._fail(what, rows, int(np.argmax(np.diff(offsets) % 3 != 0)), arr)
            values, offsets = values.reshape(-1, 3), offsets // 3
        if values.shape[1:] != (3,):
            raise self._fail(f"{what}, not {values.shape[1:]}", rows, _first_held(arr, offsets), arr)
        return _with_missing(_split(values.astype(np.float64, copy=False), offsets), arr)

    def _per_atom(self, arr: pa.Array, rows: np.ndarray) -> list[Any]:
        """A mapped per-atom column: a list per row; ``calc.*`` results in the shape ASE gives them."""
        tails = PER_ATOM_CALC.get(self.key[5:]) if self.key.startswith("calc.") else None
        what = "a list per row, one entry per atom"
        self._lists(arr, rows, what)
        if tails is None:
            return _natural(arr)
        what = "numbers of shape " + " or ".join(map(_shape_text, tails))
        nested = _nested(arr)
        if nested is None:
            raise self._fail(what, rows, _irregular_row(arr), arr)
        values, offsets = nested
        if not len(values):  # no atoms or only nulls in this batch: nothing tells the trailing shape
            values = values.reshape(0, *tails[0])
        if values.shape[1:] not in tails:
            j = _first_held(arr, offsets)
            shape = (int(offsets[j + 1] - offsets[j]), *values.shape[1:])
            raise self._fail(f"{what}, not {shape}", rows, j, arr)
        return _with_missing(_split(values, offsets), arr)

    def _stress(self, table: pa.Table, arr: pa.Array, rows: np.ndarray) -> np.ndarray:
        """Voigt stress in eV/Å³ with ASE's sign (see :mod:`._hf_mapping`)."""
        flat = self._per_frame(arr, rows, (6, 9)).astype(np.float64)
        stress = (_voigt(flat.reshape(-1, 3, 3)) if flat.shape[1] == 9 else flat) * self.factor
        if self.volume is None:
            return stress
        flag_name, cell_name = self.volume
        flags = _column(table, flag_name)
        if pa.types.is_null(flags.type):
            return stress
        if not pa.types.is_boolean(flags.type):
            raise InvalidDataError(
                f"column {flag_name!r} (whether {self.column!r} holds stress times the cell volume) must "
                f"hold booleans, but it is of Arrow type {flags.type}; fix the data, or the mapping's "
                "stress_volume_normalized"
            )
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        norm = flags.fill_null(False).to_numpy(zero_copy_only=False)[valid]
        if not norm.any():
            return stress
        picked = np.flatnonzero(valid)[norm]
        said = f"{flag_name!r} says the stress in {self.column!r} was multiplied by the cell volume"
        if cell_name is None:
            raise InvalidDataError(f"row {int(rows[picked[0]])}: {said}, but the dataset has no cell column")
        cell_arr = _column(table, cell_name)
        has = np.zeros(len(cell_arr), dtype=bool)
        if not pa.types.is_null(cell_arr.type):
            has = cell_arr.is_valid().to_numpy(zero_copy_only=False)
        lacking = picked[~has[picked]]
        if len(lacking):
            raise InvalidDataError(
                f"row {int(rows[lacking[0]])}: {said}, but the row has no cell in {cell_name!r}"
            )
        cells = np.zeros((len(cell_arr), 3, 3))
        cells[has] = Reader("cell", cell_name, "cell").cells(cell_arr, rows)
        volumes = np.abs(np.linalg.det(cells[picked]))
        if not volumes.all():
            j = int(picked[np.argmin(volumes)])
            raise InvalidDataError(f"row {int(rows[j])}: {said}, but its cell in {cell_name!r} has no volume")
        stress[norm] /= volumes[:, None]
        return stress

    def _numbers(self, arr: pa.Array, rows: np.ndarray) -> list[Any]:
        what = "lists of atomic numbers or of chemical symbols"
        self._lists(arr, rows, what)
        child = arr.flatten()
        if child.null_count:
            null = int(np.argmax(child.is_null().to_numpy(zero_copy_only=False)))
            raise self._fail(what, rows, _row_of(arr, null), arr)
        if pa.types.is_string(child.type) or pa.types.is_large_string(child.type):
            from ase.data import atomic_numbers

            encoded = pc.dictionary_encode(child)
            symbols = encoded.dictionary.to_pylist()
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            unknown = [i for i, s in enumerate(symbols) if s not in atomic_numbers]
            if unknown:
                element = int(np.argmax(np.isin(codes, unknown)))
                raise InvalidDataError(
                    f"row {int(rows[_row_of(arr, element)])}: column {self.column!r}: unknown chemical "
                    f"symbol {symbols[codes[element]]!r}; symbols must be ASE element symbols"
                )
            values = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)[codes]
        elif pa.types.is_integer(child.type):
            values = child.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            raise self._fail(what, rows, None, arr)
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(_lengths(arr), out=offsets[1:])
        return _with_missing(_split(values, offsets), arr)


def _first_held(arr: pa.Array, offsets: np.ndarray) -> int:
    """The first non-null row holding atoms (else the first non-null row): where a shape shows."""
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    held = valid & (np.diff(offsets) > 0)
    return int(np.argmax(held if held.any() else valid))


def plan_readers(columns: Sequence[str], mapping: ColumnMapping) -> dict[str, Reader]:
    """One reader per flat key, in row order; unmapped columns become ``info.<column>``.

    Raises ``UnknownKeyError`` naming a required column the dataset lacks, with the
    available ones.
    """
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
        flag = mapping.stress_volume_normalized
        if key == "calc.stress" and flag is not None and flag in present:
            cell = mapping.cell if mapping.cell is not None and mapping.cell in present else None
            readers[key] = Reader(key, column, "stress", mapping.stress_factor, (flag, cell))
        elif key == "calc.stress":
            readers[key] = Reader(key, column, "stress", mapping.stress_factor)
        else:
            readers[key] = Reader(key, column, kinds.get(key) or ("atoms" if is_per_atom(key) else "natural"))
    consumed = mapping.consumed()
    for name in columns:
        if name not in consumed and "info." + name not in readers:
            readers["info." + name] = Reader("info." + name, name, "natural")
    return readers


def needed_columns(readers: dict[str, Reader], keys: Iterable[str] | None) -> tuple[str, ...]:
    """The dataset columns reading ``keys`` (None: every key) takes, with the atomic numbers'
    column whenever a per-atom value is checked against them."""
    wanted = readers.values() if keys is None else [readers[k] for k in keys if k in readers]
    columns = dict.fromkeys(c for r in wanted for c in r.columns)
    numbers = readers.get("arrays.numbers")
    if numbers is not None and numbers.kind == "numbers" and any(r.kind in _ATOM_KINDS for r in wanted):
        columns[numbers.column] = None
    return tuple(columns)


def _atom_counts(table: pa.Table, readers: dict[str, Reader]) -> np.ndarray | None:
    """Each row's atom count: the length of its atomic numbers (-1 where null), from Arrow."""
    numbers = readers.get("arrays.numbers")
    if numbers is None or numbers.kind != "numbers" or numbers.column not in table.column_names:
        return None
    arr = _column(table, numbers.column)
    if not _is_list(arr.type):
        return None  # the numbers reader refuses the column
    return pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False)


def column_values(
    table: pa.Table, readers: dict[str, Reader], key: str, rows: np.ndarray,
    counts: np.ndarray | None = None,
) -> list[Any]:  # fmt: skip
    """The values of ``key`` in the rows of ``table`` (dataset rows ``rows``); per-atom values must
    match the row's atom count (``counts``, else taken from the table), and an error names the row."""
    reader = readers[key]
    values = reader.read(table, rows)
    if reader.kind in _ATOM_KINDS:
        counts = _atom_counts(table, readers) if counts is None else counts
        if counts is not None:
            _check_atoms(reader, values, counts, rows)
    return values


def table_to_rows(
    table: pa.Table, readers: dict[str, Reader], rows: np.ndarray, keys: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Row dicts for the rows of ``table`` (dataset rows ``rows``), optionally only ``keys``."""
    wanted = list(readers) if keys is None else [k for k in keys if k in readers]
    counts = _atom_counts(table, readers) if any(readers[k].kind in _ATOM_KINDS for k in wanted) else None
    out: list[dict[str, Any]] = [{} for _ in range(table.num_rows)]
    for key in wanted:
        for row, value in zip(out, column_values(table, readers, key, rows, counts), strict=True):
            if value is not MISSING:
                row[key] = value
    return out


def _check_atoms(reader: Reader, values: list[Any], counts: np.ndarray, rows: np.ndarray) -> None:
    lengths = np.fromiter((-1 if v is MISSING else len(v) for v in values), np.int64, len(values))
    bad = (lengths >= 0) & (counts >= 0) & (lengths != counts)
    if bad.any():
        j = int(np.argmax(bad))
        raise InvalidDataError(
            f"row {int(rows[j])}: column {reader.column!r} (read as {reader.key!r}) has {lengths[j]} "
            f"entries, but the frame has {counts[j]} atoms"
        )

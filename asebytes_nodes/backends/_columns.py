"""The column model: what one key's values are, as a typed column and as a ``schema`` entry.

Columnar backends (Zarr, H5MD) keep each key as one typed column, inferred from the values it
first arrives with (:func:`infer`) and held to exactly that type afterwards (:func:`check`, one
conflict message). A :class:`Column` is one of five kinds:

======== ====================================================================================
kind     values
======== ====================================================================================
scalar   one exact scalar type, named by a type code (:func:`scalar_type_code`)
frame    numpy arrays of one dtype and shape per frame
atom     per-atom numpy arrays: one dtype, the atom count first, one shape after it
string   ``str`` (formats that have a string type)
object   anything else, encoded (msgpack)
======== ====================================================================================

Which values a format can keep typed differs (HDF5 has no complex numbers here, Zarr no
strings); :class:`Typed` says so. Per-atom or not is the key model's answer
(:func:`~._keys.is_per_atom`), never a guess from shapes, so every backend describes a key the
same way: :func:`describe_value` for a stored value, :meth:`Column.info` for a typed column.

Every backend's schema uses :class:`ColumnInfo`: ``per_atom`` and the ``-1`` atom axis by the
key model; dtype a numpy name for numpy values, else the Python type's name (a scalar column of
type code ``f`` is ``float``, one of numpy float32 scalars ``float32``); an object column shows
what its first stored value is (:func:`first_value`).

Reads share the row helpers here: :func:`sorted_unique` (read each row once, in order),
:func:`take` (one slab or a point selection), :func:`expand_rows` / :func:`expand_values` (hand
rows or values back in the caller's order, a repeated one as its own copy), :func:`copy_row`.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from ..errors import ColumnTypeError
from ._keys import MISSING, is_per_atom

__all__ = [
    "OBJECT",
    "SLAB_BYTES",
    "Column",
    "ColumnInfo",
    "Typed",
    "check",
    "conflict",
    "copy_row",
    "describe_value",
    "expand_rows",
    "expand_values",
    "first_value",
    "infer",
    "maybe_scalar",
    "scalar_type_code",
    "sorted_unique",
    "take",
    "type_code_dtype",
]

_DTYPE, _SHAPE = attrgetter("dtype"), attrgetter("shape")
SLAB_BYTES = 64 << 20  # read one contiguous slab instead of scattered rows below this size


# -- schema entries ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnInfo:
    """What one column holds: dtype and shape as seen on a row that carries it.

    ``dtype`` is a numpy dtype name for numpy values, else the Python type's name (``float``,
    ``int``, ``str``, ``list``...). ``shape`` is the per-row shape with the atom axis written as
    ``-1`` for per-atom values (``arrays.*`` and ASE's per-atom ``calc.*`` results).
    """

    dtype: str
    shape: tuple[int, ...]
    per_atom: bool


def describe_value(key: str, value: Any) -> ColumnInfo:
    """ColumnInfo of one stored value of ``key``."""
    if isinstance(value, np.ndarray):
        shape = tuple(int(s) for s in value.shape)
        per_atom = bool(shape) and is_per_atom(key)
        return ColumnInfo(str(value.dtype), (-1, *shape[1:]) if per_atom else shape, per_atom)
    if isinstance(value, np.generic):
        return ColumnInfo(str(value.dtype), (), False)
    return ColumnInfo(type(value).__name__, (), False)


def first_value(read_column: Callable[[np.ndarray], Any], length: int, batch: int = 1024) -> Any:
    """The first stored value of a column whose values ``read_column(rows)`` reads (MISSING where a
    row lacks it), batch by batch: what an object column's schema entry describes."""
    for start in range(0, length, batch):
        for value in read_column(np.arange(start, min(start + batch, length))):
            if value is not MISSING:
                return value
    return MISSING


# -- scalar type codes ---------------------------------------------------------------------------
def scalar_type_code(values: Sequence[Any]) -> str | None:
    """The type code of a column's values, or None unless all share one exact scalar type.

    ``f``: Python float, ``i``: Python int in int64 range, ``b``: Python bool, ``n<dtype.str>``:
    numpy scalars of one dtype. Columnar stores keep such columns as one typed array and give
    back exactly these types.
    """
    types = set(map(type, values))
    if len(types) != 1:
        return None
    kind = types.pop()
    if kind is float:
        return "f"
    if kind is bool:
        return "b"
    if kind is int:
        return "i" if -(2**63) <= min(values) and max(values) < 2**63 else None
    if issubclass(kind, np.generic) and np.dtype(kind).kind in "biufc":
        return "n" + np.dtype(kind).str
    return None


def maybe_scalar(value: Any) -> bool:
    """Could ``value`` belong to a scalar column (cheap test before :func:`scalar_type_code`)?"""
    return type(value) in (float, int, bool) or isinstance(value, np.generic)


_PYTHON_CODES = {"f": (np.float64, "float"), "i": (np.int64, "int"), "b": (np.bool_, "bool")}


def type_code_dtype(code: str) -> np.dtype[Any]:
    """The numpy dtype that stores a scalar column of type ``code``."""
    python = _PYTHON_CODES.get(code)
    return np.dtype(python[0] if python else code[1:])


def _type_code_name(code: str) -> str:
    """The schema dtype of a scalar column: the Python type's name, or the numpy dtype's."""
    python = _PYTHON_CODES.get(code)
    return python[1] if python else str(np.dtype(code[1:]))


# -- typed columns -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Typed:
    """Which values a format keeps in typed columns (everything else goes to object columns)."""

    #: numpy kinds of typed arrays and scalars
    kinds: str = "biufc"
    #: ``str`` values (without NUL characters) get a string column
    strings: bool = False
    #: 0-d arrays get a frame column of shape ``()``
    zero_d: bool = True
    #: arrays of non-native byte order stay typed (else they are objects)
    any_byte_order: bool = False


@dataclass(frozen=True)
class Column:
    """How one key is stored: its kind, dtype (``dtype.str``), per-row shape (after the atom axis
    for ``atom``) and scalar type code (``scalar`` only)."""

    kind: str
    dtype: str = "object"
    shape: tuple[int, ...] = ()
    code: str | None = None

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Column:
        """The column a backend's record entry describes (``kind``, ``dtype``, ``shape``, ``type``)."""
        return cls(spec["kind"], spec.get("dtype", "object"), tuple(spec.get("shape", ())), spec.get("type"))

    def fields(self) -> dict[str, Any]:
        """The record entry's fields (``shape`` as a list, ``type`` only for scalars)."""
        out: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}
        if self.code is not None:
            out["type"] = self.code
        return out

    def info(self, key: str, sample: Callable[[], Any]) -> ColumnInfo:
        """The schema entry of ``key``; ``sample()`` gives one stored value (object columns only)."""
        if self.kind == "scalar":
            return ColumnInfo(_type_code_name(str(self.code)), (), False)
        if self.kind == "string":
            return ColumnInfo("str", (), False)
        if self.kind == "object":
            return describe_value(key, sample())
        dtype = str(np.dtype(self.dtype))
        if self.kind == "atom":
            return ColumnInfo(dtype, (-1, *self.shape), True)
        return ColumnInfo(dtype, self.shape, False)

    def stores(self) -> str:
        """What the column holds, in words."""
        if self.kind == "scalar":
            return f"Python/numpy scalars of type code {self.code!r}"
        if self.kind == "string":
            return "strings"
        if self.kind == "atom":
            tail = "".join(f", {n}" for n in self.shape)
            return f"per-atom arrays of dtype {self.dtype} and shape (n_atoms{tail})"
        return f"arrays of dtype {self.dtype} and shape {self.shape}"


OBJECT = Column("object")


def infer(key: str, given: Sequence[Any], counts: np.ndarray, typed: Typed) -> Column:
    """The column for a new key from the values it first arrives with (``given``, none MISSING;
    ``counts``: the atom counts of their frames).

    Arrays go to a frame or per-atom column (by the key model) when all share one dtype and
    shape; a zero-length axis in a row makes an object column (chunked formats cannot hold
    empty chunks). Scalars of one exact type go to a scalar column, strings to a string column
    where the format has one.
    """
    per_atom = is_per_atom(key)
    if given and set(map(type, given)) == {np.ndarray}:
        dtypes = set(map(_DTYPE, given))
        dtype = next(iter(dtypes))
        if len(dtypes) == 1 and dtype.kind in typed.kinds and (typed.any_byte_order or dtype.isnative):
            shapes = list(map(_SHAPE, given))
            if per_atom:
                tails = {shape[1:] for shape in shapes}
                lengths = [shape[0] if shape else -1 for shape in shapes]
                if len(tails) == 1 and 0 not in (tail := tails.pop()) and lengths == counts.tolist():
                    return Column("atom", dtype.str, tail)
            elif len(set(shapes)) == 1 and 0 not in (shape := shapes[0]) and (shape or typed.zero_d):
                return Column("frame", dtype.str, shape)
    if given and not per_atom:
        code = scalar_type_code(given)
        if code is not None and type_code_dtype(code).kind in typed.kinds:
            return Column("scalar", type_code_dtype(code).str, (), code)
        if typed.strings and set(map(type, given)) == {str} and not any("\0" in v for v in given):
            return Column("string", "str")
    return OBJECT


def check(
    key: str, column: Column, values: Sequence[Any], counts: np.ndarray, label: Callable[[int], str]
) -> None:
    """Refuse ``values`` (MISSING: not set; ``counts``: atom counts of their frames) that do not
    fit ``column`` exactly, naming value ``j`` as ``label(j)``: nothing is ever converted.

    Whole passes over the values in C; the culprit is looked for only on failure.
    """
    kind = column.kind
    if kind == "object":
        return
    given = [v for v in values if v is not MISSING]
    if kind == "scalar":
        if not given or scalar_type_code(given) == column.code:
            return
        j, bad = _culprit(values, lambda v: scalar_type_code([v]) != column.code)
        raise conflict(key, column, f"a value of type {type(bad).__name__}", label(j))
    if kind == "string":
        if set(map(type, given)) <= {str} and not any("\0" in v for v in given):
            return
        j, bad = _culprit(values, lambda v: type(v) is not str or "\0" in v)
        got = "a string with a NUL character" if type(bad) is str else type(bad).__name__
        raise conflict(key, column, got, label(j))
    dtype, tail = np.dtype(column.dtype), column.shape
    present = [v is not MISSING for v in values]
    if kind == "atom":
        expected = [(dtype, (c, *tail)) for c, p in zip(counts.tolist(), present, strict=True) if p]
    else:
        expected = [(dtype, tail)] * len(given)
    found = [(v.dtype, v.shape) if type(v) is np.ndarray else None for v in given]
    if found == expected:  # one list comparison in C
        return
    first = next(j for j, (g, e) in enumerate(zip(found, expected, strict=True)) if g != e)
    j = [j for j, p in enumerate(present) if p][first]
    bad = values[j]
    what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
    raise conflict(key, column, what, label(j))


def _culprit(values: Sequence[Any], wrong: Callable[[Any], bool]) -> tuple[int, Any]:
    return next((j, v) for j, v in enumerate(values) if v is not MISSING and wrong(v))


def conflict(key: str, column: Column, got: str, where: str) -> ColumnTypeError:
    """The error for a value of ``key`` that does not fit its column, at ``where``."""
    return ColumnTypeError(
        f"{where}: column {key!r} stores {column.stores()}, but got {got}; nothing was written. A column "
        "holds one type: convert the value to the stored type, or use another key"
    )


# -- reading rows --------------------------------------------------------------------------------
def sorted_unique(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(sorted unique rows, where each index is among them); None when ``idx`` is already so."""
    if len(idx) < 2 or bool((idx[1:] > idx[:-1]).all()):
        return idx, None
    frames, where = np.unique(idx, return_inverse=True)
    return frames, where


def take(
    read: Callable[[Any], np.ndarray],
    rows: np.ndarray,
    row_bytes: int,
    *,
    slab_bytes: int = SLAB_BYTES,
    spread: int = 2,
) -> np.ndarray:
    """Rows ``rows`` (non-empty) of an on-disk array, given ``read(selection)`` of a slice or a
    sorted index array: one contiguous slab when the rows are dense, the slab is at most
    ``slab_bytes`` or spans at most ``spread`` times the rows, else a point selection.
    Repeated or unsorted rows are read once each."""
    frames, where = sorted_unique(rows)
    lo, hi = int(frames[0]), int(frames[-1]) + 1
    if hi - lo == len(frames):
        out = read(slice(lo, hi))
    elif (hi - lo) * row_bytes <= slab_bytes or hi - lo <= spread * len(frames):
        out = read(slice(lo, hi))[frames - lo]
    else:
        out = read(frames)
    return out if where is None else out[where]


def copy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of a row, fast for numpy arrays (used by in-memory stores and caches)."""
    return {key: _copy_value(value) for key, value in row.items()}


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, dict, tuple)):
        return _copy.deepcopy(value)
    return value


def expand_rows(rows: list[dict[str, Any]], where: np.ndarray | None) -> list[dict[str, Any]]:
    """``rows[j]`` for each ``j`` in ``where`` (rows read once per unique index, handed out in the
    caller's order; None: ``rows`` as they are); a repeated index gets its own copy, so no two
    rows share arrays."""
    return _expand(rows, where, copy_row)


def expand_values(values: list[Any], where: np.ndarray | None) -> list[Any]:
    """:func:`expand_rows` for the values of one column."""
    return _expand(values, where, _copy_value)


def _expand(items: list[Any], where: np.ndarray | None, copy: Callable[[Any], Any]) -> list[Any]:
    if where is None:
        return items
    if len(where) == len(items):
        return [items[j] for j in where.tolist()]
    seen: set[int] = set()
    out = []
    for j in where.tolist():
        out.append(copy(items[j]) if j in seen else items[j])
        seen.add(j)
    return out

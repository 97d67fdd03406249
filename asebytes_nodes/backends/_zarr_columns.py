"""How the Zarr backend stores one key: a column's description, inferred from values, and a batch
of values checked against it and encoded.

A column (its entry in the record's ``"columns"``, see :mod:`._zarr`) is one of four kinds:
``scalar`` (one exact Python/numpy scalar type), ``frame`` (numpy arrays of one shape and
dtype per frame), ``atom`` (per-atom arrays, frames concatenated) or ``object`` (msgpack
values of any type). :func:`infer_spec` picks the kind from the values a column first
arrives with; :func:`encode_batch` checks a batch against the column exactly (never
converting) and raises :class:`Misfit` naming the key and the frame when a value does not
fit, after which the caller widens the column to an object column.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import numpy as np

from ..codec import encode_value, scalar_type_code, type_code_dtype
from ..errors import InvalidDataError, SerializationError
from ..validation import PER_ATOM_CALC
from ._base import MISSING

__all__ = ["Misfit", "encode_batch", "infer_spec", "object_spec", "row_atoms"]

_NUMERIC = frozenset("biufc")
_DTYPE = attrgetter("dtype")


def row_atoms(row: dict[str, Any]) -> int:
    for key in ("arrays.numbers", "arrays.positions"):
        if key in row:
            return len(row[key])
    return 0


def _is_per_atom_key(key: str) -> bool:
    return key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)


def _signature(given: list[Any]) -> set[Any]:
    """The distinct (dtype, shape) of numeric numpy values; None stands for anything else (zarr
    hands back native byte order, so arrays of the other byte order count as anything else)."""
    return {
        (v.dtype.str, v.shape)
        if type(v) is np.ndarray and v.dtype.kind in _NUMERIC and v.dtype.isnative
        else None
        for v in given
    }


def infer_spec(key: str, values: list[Any], counts: np.ndarray, column_id: str) -> dict[str, Any]:
    """How a new column is stored, from the values it first arrives with."""
    present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    given = [v for v in values if v is not MISSING]
    spec: dict[str, Any] = {"id": column_id, "count": 0, "present": False}
    signature = _signature(given)
    if None not in signature:
        dtypes = {dtype for dtype, _ in signature}
        tails = {shape[1:] for _, shape in signature if shape}
        # a zero-length axis in a row (a value of shape (2, 0)) makes zarr's chunk grid empty:
        # such values go to an object column, which keeps any shape
        if _is_per_atom_key(key) and len(dtypes) == 1 and len(tails) == 1 and 0 not in (tail := tails.pop()):
            lengths = np.fromiter((v.shape[0] if v.ndim else -1 for v in given), np.int64, len(given))
            if np.array_equal(lengths, counts[present]):
                return {**spec, "kind": "atom", "dtype": dtypes.pop(), "shape": list(tail)}
        if len(signature) == 1 and not _is_per_atom_key(key):
            dtype, shape = signature.pop()
            if 0 not in shape:
                return {**spec, "kind": "frame", "dtype": dtype, "shape": list(shape)}
    code = scalar_type_code(given)
    if code is not None:
        return {**spec, "kind": "scalar", "type": code, "dtype": type_code_dtype(code).str, "shape": []}
    return object_spec(column_id)


def encode_batch(
    key: str,
    spec: dict[str, Any],
    values: list[Any],
    counts: np.ndarray,
    present: np.ndarray | None = None,
    label: Callable[[int], str] = "frame {}".format,
) -> tuple[np.ndarray, Any]:
    """(present flags, data to write) for one column of a batch.

    ``present`` may be given when the caller knows every row carries the key. A value that does
    not fit the column exactly raises :class:`InvalidDataError` (the caller widens the column
    to an object column); ``label(j)`` names value ``j`` in messages ("frame 3", "row 7").
    """
    if present is None:
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    everywhere = bool(present.all())
    given = values if everywhere else [v for v in values if v is not MISSING]
    kind = spec["kind"]
    if kind == "object":
        return present, _encode_objects(key, values, label)
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    if 0 in shape:  # an older store's typed column of empty rows: zarr cannot grow it, so widen it
        raise _conflict(key, spec, "a value for a column zarr cannot write", label(0))
    if kind in ("atom", "frame") and everywhere:
        data = _stack_uniform(given, kind, dtype, shape, counts)
        if data is not None:
            return present, data
    if kind == "scalar":
        if given and scalar_type_code(given) != spec["type"]:  # exact types only: never convert
            code = spec["type"]
            j = next(j for j, v in enumerate(values) if v is not MISSING and scalar_type_code([v]) != code)
            raise _conflict(key, spec, f"a value of type {type(values[j]).__name__}", label(j))
        data = np.zeros(len(values), dtype)
        data[present] = given
        return present, data
    expected = [(dtype.str, (c, *shape) if kind == "atom" else shape) for c in counts[present].tolist()]
    got = [(v.dtype.str, v.shape) if type(v) is np.ndarray else None for v in given]
    if got != expected:  # one list comparison in C; find the culprit only on failure
        j = next(j for j, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        bad = given[j]
        what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
        raise _conflict(key, spec, what, label(int(np.flatnonzero(present)[j])))
    if kind == "atom":
        if present.all():
            return present, np.concatenate(given) if given else np.zeros((0, *shape), dtype)
        parts = [
            v if v is not MISSING else np.zeros((int(c), *shape), dtype)
            for v, c in zip(values, counts, strict=True)
        ]
        return present, np.concatenate(parts)
    if present.all():
        return present, np.stack(given)
    data = np.zeros((len(values), *shape), dtype)
    data[present] = given
    return present, data


def _stack_uniform(
    given: list[Any], kind: str, dtype: np.dtype[Any], shape: tuple[int, ...], counts: np.ndarray
) -> np.ndarray | None:
    """The batch as one array when every value is an ndarray of the stored dtype and shape, else None.

    Type, dtype and length checks run through ``map`` in C; numpy checks the shapes while it
    joins the values. None sends the caller to the slow path, which names the bad value.
    """
    if not given or set(map(type, given)) != {np.ndarray} or set(map(_DTYPE, given)) != {dtype}:
        return None
    try:
        if kind == "atom":
            lengths = np.fromiter(map(len, given), np.int64, len(given))
            if not np.array_equal(lengths, counts):
                return None
            data = np.concatenate(given)
        else:
            data = np.stack(given)
    except (ValueError, TypeError):
        return None
    return data if data.shape[1:] == shape else None


def _encode_objects(key: str, values: list[Any], label: Callable[[int], str]) -> tuple[bytes, np.ndarray]:
    """(msgpack blobs joined, size of each) of an object column's values; MISSING takes 0 bytes."""
    blobs = []
    for j, value in enumerate(values):
        try:
            blobs.append(encode_value(value) if value is not MISSING else b"")
        except SerializationError as exc:
            raise SerializationError(f"{label(j)}: key {key!r}: {exc}; nothing was written") from exc
    return b"".join(blobs), np.fromiter(map(len, blobs), np.int64, len(blobs))


def object_spec(column_id: str) -> dict[str, Any]:
    """A new object column: msgpack values, which hold every storable value exactly."""
    return {"id": column_id, "count": 0, "present": False, "kind": "object", "nbytes": 0}


class Misfit(InvalidDataError):
    """A value that does not fit its column's stored type exactly (the column is widened)."""


def _conflict(key: str, spec: dict[str, Any], got: str, where: str) -> Misfit:
    stored = {
        "scalar": f"Python/numpy scalars of type code {spec.get('type')!r}",
        "frame": f"arrays of dtype {spec.get('dtype')} and shape {tuple(spec.get('shape', ()))}",
        "atom": f"per-atom arrays of dtype {spec.get('dtype')} and shape (n_atoms, "
        f"{', '.join(map(str, spec.get('shape', ())))})",
    }[spec["kind"]]
    return Misfit(
        f"{where}: column {key!r} stores {stored}, but got {got}; nothing was written. Convert the value "
        "to the stored type, or use another key"
    )

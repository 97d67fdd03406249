"""How the Zarr backend stores one key: the shared column model (:mod:`._columns`) applied to
Zarr's record entries, and a batch of values checked and encoded for writing.

A column (its entry in the record's ``"columns"``, see :mod:`._zarr`) is one of four kinds:
``scalar`` (one exact Python/numpy scalar type), ``frame`` (numpy arrays of one shape and
dtype per frame), ``atom`` (per-atom arrays, frames concatenated) or ``object`` (msgpack
values of any type). :func:`infer_spec` picks the kind with :func:`._columns.infer` from
the values a column first arrives with; :func:`encode_batch` checks a batch with
:func:`._columns.check` (exact types, never converting; a
:class:`~asebytes_nodes.errors.ColumnTypeError` names the key and the frame, after which
the caller widens the column to an object column) and builds the arrays to write.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import numpy as np

from ..codec import encode_value
from ..errors import SerializationError
from ._columns import Column, Typed, check, conflict, infer
from ._keys import MISSING

__all__ = ["encode_batch", "infer_spec", "object_spec"]

_DTYPE = attrgetter("dtype")
#: zarr hands back native byte order, so arrays of the other byte order are objects
_TYPED = Typed(kinds="biufc", strings=False, zero_d=True, any_byte_order=False)


def infer_spec(key: str, values: list[Any], counts: np.ndarray, column_id: str) -> dict[str, Any]:
    """How a new column is stored, from the values it first arrives with (MISSING: not set)."""
    present = np.fromiter((v is not MISSING for v in values), bool, len(values))
    column = infer(key, [v for v in values if v is not MISSING], counts[present], _TYPED)
    if column.kind == "object":
        return object_spec(column_id)
    return {"id": column_id, "count": 0, "present": False, **column.fields()}


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
    not fit the column exactly raises :class:`~asebytes_nodes.errors.ColumnTypeError` (the
    caller widens the column to an object column); ``label(j)`` names value ``j`` ("frame 3").
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
        raise conflict(key, Column.of(spec), "a value for a column zarr cannot write", label(0))
    if kind in ("atom", "frame") and everywhere:
        data = _stack_uniform(given, kind, dtype, shape, counts)
        if data is not None:
            return present, data
    check(key, Column.of(spec), values, counts, label)  # exact types only: never convert
    if kind == "scalar":
        data = np.zeros(len(values), dtype)
        data[present] = given
        return present, data
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
    joins the values (``np.array`` refuses differing shapes; for 20,000 values it takes a third
    of ``np.stack``'s time). None sends the caller to the slow path, which names the bad value.
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
            data = np.array(given)
    except (ValueError, TypeError):
        return None
    return data if data.shape[1:] == shape and data.dtype == dtype else None


def _encode_objects(key: str, values: list[Any], label: Callable[[int], str]) -> tuple[bytes, np.ndarray]:
    """(msgpack blobs joined, size of each) of an object column's values; MISSING takes 0 bytes.
    Equal strings (a label on every frame) are encoded once: 0.5 us a value otherwise."""
    blobs: list[bytes] = []
    strings: dict[str, bytes] = {}
    for j, value in enumerate(values):
        blob = strings.get(value) if type(value) is str else None
        if blob is None:
            try:
                blob = encode_value(value) if value is not MISSING else b""
            except SerializationError as exc:
                raise SerializationError(f"{label(j)}: key {key!r}: {exc}; nothing was written") from exc
            if type(value) is str:
                strings[value] = blob
        blobs.append(blob)
    return b"".join(blobs), np.fromiter(map(len, blobs), np.int64, len(blobs))


def object_spec(column_id: str) -> dict[str, Any]:
    """A new object column: msgpack values, which hold every storable value exactly."""
    return {"id": column_id, "count": 0, "present": False, "kind": "object", "nbytes": 0}

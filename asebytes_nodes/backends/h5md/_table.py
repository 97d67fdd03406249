"""The column table of our H5MD stores: where a new key goes, how it is typed (the shared column
model of :mod:`.._columns`, with what HDF5 keeps typed), and the checked, padded arrays a write
puts in its datasets. A column holds one type exactly, never converting a value: a write whose
values do not fit a column retypes it (:func:`_retyped`), every stored row and the new ones, to the
column one ``extend`` of all those values would have made (an encoded one when the types mix), so
the store ends the same however the writes were split."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ...codec import encode_value
from ...errors import ColumnTypeError, SerializationError
from .._columns import Column, Typed, check, describe_value, infer, type_code_dtype
from .._keys import MISSING
from ._clock import INDEX_VERSION, Clock, mark_version, plan_clock
from ._plan import FORMAT_NAME, PRIVATE

__all__ = ["Batch", "encode_batch", "fill", "storage_dtype"]

# What HDF5 keeps typed here: no complex numbers; 0-d arrays and NUL-holding strings are encoded
# (a dataset row would read back as a numpy scalar; variable-length strings end at a NUL);
# big-endian arrays keep their byte order.
_TYPED = Typed(kinds="biuf", strings=True, zero_d=False, any_byte_order=True)
_VLEN_BYTES = h5py.vlen_dtype(np.dtype(np.uint8))
_EMPTY_BLOB = np.zeros(0, np.uint8)

# Where keys with a standard place go; everything else goes by kind and name.
_PLACES: dict[str, tuple[str, str]] = {
    "arrays.positions": ("particles", "position"),
    "arrays.numbers": ("particles", "species"),
    "arrays.masses": ("particles", "mass"),
    "arrays.initial_charges": ("particles", "charge"),
    "arrays.momenta": ("particles", "momenta"),
    "calc.forces": ("particles", "forces"),
    "calc.energy": ("observables", "energy"),
    "calc.stress": ("observables", "stress"),
    "cell": ("particles", "box/edges"),
    "pbc": ("particles", "box/pbc"),
}
#: Keys whose element another program reads from the particle group: kept as one typed dataset
#: (a frame of another type is refused rather than moving every frame's values out of sight).
_PARTICLES = frozenset(key for key, (root, _) in _PLACES.items() if root == "particles")
_KEPT_TYPED = (
    "H5MD keeps it in the particle group, which other programs read as one typed dataset: convert "
    "the values to one dtype (such as .astype(np.float64)) before writing, or use LMDB or Zarr, which "
    "keep each frame's own; nothing was written"
)
_RESERVED = set(_PLACES.values()) | {("particles", n) for n in ("box", "force", "velocity", "id", "image")}


@dataclass
class Batch:
    """One write, checked and encoded, before the file is opened."""

    table: dict[str, Any]  # the column table after the write
    n0: int  # committed length before the write
    counts: np.ndarray  # atom count of every frame after the write
    counted: bool  # the write sets the atom counts of its rows (whole frames)
    columns: dict[str, tuple[np.ndarray, np.ndarray, Any]]  # key -> (rows, present, data)
    new: set[str]  # keys (and "velocity") whose datasets this write creates
    clock: Clock  # the step and time it sets (see _clock)
    replaced: list[str] = field(default_factory=list)  # retyped columns' old elements, set aside


def encode_batch(
    table: dict[str, Any] | None,
    stored_counts: np.ndarray | None,
    timestep: float,
    group: str,
    where: np.ndarray,
    rows: list[dict[str, Any]],
    counts: np.ndarray | None,
    full: bool,
    drop: Sequence[str],
    stored: Callable[[str, np.ndarray], Sequence[Any] | np.ndarray],
) -> Batch:
    """Check and encode ``rows`` for the sorted unique rows ``where`` of a store with column
    ``table`` (None: a new store) and atom counts ``stored_counts``.

    ``full``: each row replaces a whole frame (keys it lacks are cleared); else only the given
    keys change. ``drop`` clears keys. New keys get a column inferred from their values; a column
    whose values do not fit is retyped from all its values (``stored(key, rows)`` reads the
    committed ones, MISSING where a row lacks the key).
    """
    table = copy.deepcopy(table) if table is not None else new_table(timestep)
    n0 = table["length"]
    n1 = max(n0, int(where[-1]) + 1) if len(where) else n0  # no rows: a new file's layout only
    all_counts = np.zeros(n1, np.int64)
    if stored_counts is not None:
        all_counts[:n0] = stored_counts
    if counts is not None:
        all_counts[where] = counts
    width = max(table["width"], int(all_counts.max(initial=0)))
    table.update(length=n1, width=width, padded=table["padded"] or bool((all_counts != width).any()))
    columns = table["columns"]
    batches: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
    new: set[str] = set() if table["velocity"] else {"velocity"}
    replaced: list[str] = []
    keys = dict.fromkeys([*(columns if full else ()), *(rows[0] if rows else ())])
    if not set().union(*rows) <= keys.keys():  # later rows bring keys of their own: keep their order
        keys.update(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        values = [row.get(key, MISSING) for row in rows]
        present = np.fromiter((v is not MISSING for v in values), bool, len(values))
        at = where
        if not full and not present.all():
            at, values, present = where[present], [v for v in values if v is not MISSING], present[present]
        spec = columns.get(key)
        if spec is None:
            spec = columns[key] = new_spec(key, values, present, all_counts[at], table, group)
            new.add(key)
            if spec["kind"] == "object" and key in _PARTICLES:
                raise _mixed(key, _given(values, present), labels(at[present], n0))
        try:
            data = encode(key, spec, values, present, all_counts[at], table, key in new, labels(at, n0))
        except ColumnTypeError as exc:  # a value of another type: the column is made anew from all its values
            at, values, present = _retyped(stored(key, np.arange(n0)), at, values, n1)
            replaced += _element(spec, group)
            spec = columns[key] = new_spec(key, values, present, all_counts, table, group)
            if spec["kind"] == "object" and key in _PARTICLES:
                raise ColumnTypeError(f"{str(exc.args[0]).split('; nothing')[0]}; {_KEPT_TYPED}") from None
            new.add(key)
            data = encode(key, spec, values, present, all_counts, table, True, labels(at, n0))
        batches[key] = (at, present, data)
    for key in drop:
        absent = np.zeros(len(where), bool)
        data = encode(key, columns[key], [MISSING] * len(where), absent, all_counts[where], table, True)
        batches[key] = (where, absent, data)
    clock = plan_clock(table, n0, where, rows, full, drop, stored, labels(where, n0))
    mark_version(table)
    counted = counts is not None
    return Batch(table, n0, all_counts, counted, batches, new, clock, _emptied(replaced, table, group))


def _mixed(key: str, values: list[Any], label: Callable[[int], str]) -> ColumnTypeError:
    """The error for frames giving a particle element two types, naming the first that differs."""
    first = describe_value(key, values[0]).dtype
    j = next(j for j, v in enumerate(values) if describe_value(key, v).dtype != first)
    got = describe_value(key, values[j]).dtype
    return ColumnTypeError(
        f"{label(j)}: column {key!r} is {got} where earlier frames give {first}; {_KEPT_TYPED}"
    )


def _retyped(
    stored: Sequence[Any] | np.ndarray, at: np.ndarray, values: list[Any], n1: int
) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """Rows, values and presence of every frame of a column after the write: the ``stored``
    values of the committed frames with ``values`` written over them at rows ``at``."""
    merged = [*stored, *[MISSING] * (n1 - len(stored))]
    for i, value in zip(at.tolist(), values, strict=True):
        merged[i] = value
    present = np.fromiter((v is not MISSING for v in merged), bool, n1)
    return np.arange(n1), merged, present


def _emptied(paths: list[str], table: dict[str, Any], group: str) -> list[str]:
    """The ``paths`` retyped columns leave, with ``observables/<group>`` for its elements once no
    column is left there (one extend of the same frames would not have made the group)."""
    root = f"observables/{group}/"
    if any(p.startswith(root) for p in paths) and not any(
        spec["path"].startswith(root) for spec in table["columns"].values()
    ):
        return [p for p in paths if not p.startswith(root)] + [root[:-1]]
    return paths


def _element(spec: dict[str, Any], group: str) -> list[str]:
    """What a retyped column leaves behind: its element (a typed column's value dataset with its
    step, time and attributes: another program must not read stale rows there) and its presence
    flags."""
    found = [spec["path"].rpartition("/")[0]]
    return found + [f"{PRIVATE}/{group}/present/{spec['id']}"] if spec.get("flags") else found


def new_table(timestep: float) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": INDEX_VERSION,
        "length": 0,
        "width": 0,
        "padded": False,
        "timestep": float(timestep),
        "next": 0,
        "velocity": False,
        "columns": {},
    }


def fill(dtype: np.dtype[Any]) -> Any:
    """What pads and marks absent values: NaN for floats (znh5md reads it as missing), else 0."""
    return np.nan if dtype.kind in "fc" else np.zeros((), dtype)[()]


def storage_dtype(spec: dict[str, Any], table: dict[str, Any]) -> np.dtype[Any]:
    """The dtype of a column's dataset: species turn float64 (NaN padded) once counts differ."""
    kind = spec["kind"]
    if kind == "object":
        return np.dtype(_VLEN_BYTES)
    if kind == "string":
        return np.dtype(h5py.string_dtype())
    if kind == "scalar":
        return type_code_dtype(spec["type"])
    dtype = np.dtype(spec["dtype"])
    if table["padded"] and spec["path"].endswith("/species/value") and dtype.kind in "iub":
        return np.dtype(np.float64)
    return dtype


def new_spec(
    key: str, values: list[Any], present: np.ndarray, counts: np.ndarray, table: dict[str, Any], group: str
) -> dict[str, Any]:
    """How a new column is stored, from the values it first arrives with."""
    column = infer(key, _given(values, present), counts[present], _TYPED)
    kind, cid = column.kind, f"c{table['next']}"
    table["next"] += 1
    spec: dict[str, Any] = {"id": cid, "kind": kind, "dtype": column.dtype, "shape": list(column.shape)}
    spec["count"] = 0  # the table's JSON keeps this key order
    if column.code is not None:
        spec["type"] = column.code
    if kind == "object":
        spec["path"] = f"{PRIVATE}/{group}/encoded/{cid}"
        return spec
    place = _PLACES.get(key)
    root, name = place or ("particles" if kind == "atom" else "observables", key.partition(".")[2] or key)
    taken = {col["path"] for other, col in table["columns"].items() if other != key}  # key: retyped
    path = f"{root}/{group}/{name}/value"
    odd = name in (".", "..") or "/" in name or "\0" in name  # not an HDF5 link name as it is
    if place is None and ((root, name) in _RESERVED or odd or path in taken):
        name = key.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
        path = f"{root}/{group}/{name}/value"
        if path in taken:
            path = f"{root}/{group}/{name}~{cid}/value"
    spec["path"] = path
    return spec


def _given(values: list[Any], present: np.ndarray) -> list[Any]:
    return values if present.all() else [v for v in values if v is not MISSING]


def labels(at: np.ndarray, n0: int) -> Callable[[int], str]:
    """Names of the values written at file rows ``at`` in messages: "frame j" of an extend
    (rows from the committed length ``n0`` on), "row i" of a replaced frame."""
    return lambda j: f"frame {int(at[j]) - n0}" if at[j] >= n0 else f"row {int(at[j])}"


def encode(
    key: str,
    spec: dict[str, Any],
    values: list[Any],
    present: np.ndarray,
    counts: np.ndarray,
    table: dict[str, Any],
    fresh: bool,
    label: Callable[[int], str] = "frame {}".format,
) -> Any:
    """The data to write for rows of one column (``fresh``: the spec was just inferred from these
    values, so they fit); refuses values that do not fit the stored column exactly, naming
    value ``j`` as ``label(j)``: nothing is converted."""
    given = _given(values, present)
    kind, n = spec["kind"], len(values)
    if kind == "object":
        blobs = np.empty(n, object)
        for j, value in enumerate(values):
            try:
                blobs[j] = _EMPTY_BLOB if value is MISSING else np.frombuffer(encode_value(value), np.uint8)
            except SerializationError as exc:
                raise SerializationError(f"{label(j)}: key {key!r}: {exc}; nothing was written") from exc
        return blobs
    if kind in ("string", "scalar") or not fresh:
        check(key, Column.of(spec), values, counts, label)  # exact types only: never convert
    if kind == "string":
        return np.array([v if v is not MISSING else "" for v in values], dtype=object)
    dtype = storage_dtype(spec, table)
    if kind == "scalar":
        data = np.full(n, fill(dtype), dtype)
        data[present] = given
        return data
    tail = tuple(spec["shape"])
    if kind == "frame" and present.all():
        return np.array(given, dtype) if given else np.zeros((0, *tail), dtype)
    if kind == "frame":
        data = np.full((n, *tail), fill(dtype), dtype)
        if given:
            data[present] = np.array(given)
        return data
    width = table["width"]
    if present.all() and (counts == width).all():
        return np.array(given, dtype) if given else np.zeros((0, width, *tail), dtype)
    data = np.full((n, width, *tail), fill(dtype), dtype)
    if given:
        data[(np.arange(width) < counts[:, None]) & present[:, None]] = np.concatenate(given)
    return data

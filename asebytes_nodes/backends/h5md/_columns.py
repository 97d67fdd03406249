"""The column table of our H5MD stores: where a new key goes and how it is typed (inferred from
the values it first arrives with), and the checked, padded arrays a write puts in its datasets.
A column holds one type exactly: values that do not fit are refused, never converted."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ...codec import encode_value, scalar_type_code, type_code_dtype
from ...errors import InvalidDataError, SerializationError
from ...validation import PER_ATOM_CALC
from .._base import MISSING
from ._plan import FORMAT_NAME, FORMAT_VERSION, PRIVATE

__all__ = ["Batch", "encode_batch", "fill", "n_atoms", "storage_dtype"]

_NUMERIC = frozenset("biuf")
_VLEN_BYTES = h5py.vlen_dtype(np.dtype(np.uint8))
_EMPTY_BLOB = np.zeros(0, np.uint8)
_DTYPE, _SHAPE = operator.attrgetter("dtype"), operator.attrgetter("shape")

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
_RESERVED = set(_PLACES.values()) | {("particles", n) for n in ("box", "force", "velocity", "id", "image")}


def n_atoms(row: dict[str, Any]) -> int:
    for key in ("arrays.numbers", "arrays.positions"):
        if key in row:
            return len(row[key])
    return 0


@dataclass
class Batch:
    """One write, checked and encoded, before the file is opened."""

    table: dict[str, Any]  # the column table after the write
    n0: int  # committed length before the write
    counts: np.ndarray  # atom count of every frame after the write
    counted: bool  # the write sets the atom counts of its rows (whole frames)
    columns: dict[str, tuple[np.ndarray, np.ndarray, Any]]  # key -> (rows, present, data)
    new: set[str]  # keys (and "velocity") whose datasets this write creates


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
) -> Batch:
    """Check and encode ``rows`` for the sorted unique rows ``where`` of a store with column
    ``table`` (None: a new store) and atom counts ``stored_counts``.

    ``full``: each row replaces a whole frame (keys it lacks are cleared); else only the given
    keys change. ``drop`` clears keys. New keys get a column inferred from their values.
    """
    table = copy.deepcopy(table) if table is not None else new_table(timestep)
    n0 = table["length"]
    n1 = max(n0, int(where[-1]) + 1)
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
    keys = dict.fromkeys([*(columns if full else ()), *rows[0]])
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
        data = encode(key, spec, values, present, all_counts[at], table, key in new, labels(at, n0))
        batches[key] = (at, present, data)
    for key in drop:
        absent = np.zeros(len(where), bool)
        data = encode(key, columns[key], [MISSING] * len(where), absent, all_counts[where], table, True)
        batches[key] = (where, absent, data)
    return Batch(table, n0, all_counts, counts is not None, batches, new)


def new_table(timestep: float) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
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
    kind, dtype, shape, code = _infer(key, _given(values, present), counts[present])
    cid = f"c{table['next']}"
    table["next"] += 1
    spec: dict[str, Any] = {"id": cid, "kind": kind, "dtype": dtype, "shape": shape, "count": 0}
    if code is not None:
        spec["type"] = code
    if kind == "object":
        spec["path"] = f"{PRIVATE}/{group}/encoded/{cid}"
        return spec
    place = _PLACES.get(key)
    root, name = place or ("particles" if kind == "atom" else "observables", key.partition(".")[2] or key)
    taken = {other["path"] for other in table["columns"].values()}
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


def _infer(key: str, given: list[Any], counts: np.ndarray) -> tuple[str, str, list[int], str | None]:
    """(kind, dtype, per-row shape, scalar type code) of a new column from its values (``counts``:
    atom counts of their frames).

    Values HDF5 cannot hold exactly in a typed dataset go to an encoded (object) column: 0-d
    arrays (a dataset row would read back as a numpy scalar), zero-length axes in a row (HDF5
    chunks cannot be empty) and strings with NUL characters (variable-length HDF5 strings end at
    the first NUL).
    """
    per_atom = key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)
    if given and set(map(type, given)) == {np.ndarray}:
        dtypes = set(map(_DTYPE, given))
        shapes = list(map(_SHAPE, given))
        tails = {shape[1:] if per_atom else shape for shape in shapes}
        if len(dtypes) == 1 and len(tails) == 1 and (dtype := dtypes.pop()).kind in _NUMERIC:
            tail = list(tails.pop())
            if not per_atom and tail and 0 not in tail:
                return "frame", dtype.str, tail, None
            lengths = [shape[0] if shape else -1 for shape in shapes]
            if per_atom and 0 not in tail and lengths == counts.tolist():
                return "atom", dtype.str, tail, None
    if given and not per_atom:
        code = scalar_type_code(given)
        if code is not None and type_code_dtype(code).kind in _NUMERIC:
            return "scalar", type_code_dtype(code).str, [], code
        if set(map(type, given)) == {str} and not any("\x00" in v for v in given):
            return "string", "str", [], None
    return "object", "object", [], None


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
    if kind == "string":
        if not set(map(type, given)) <= {str} or any("\x00" in v for v in given):
            j = next(
                j for j, v in enumerate(values) if v is not MISSING and (type(v) is not str or "\0" in v)
            )
            got = "a string with a NUL character" if type(values[j]) is str else type(values[j]).__name__
            raise _conflict(key, spec, got, label(j))
        return np.array([v if v is not MISSING else "" for v in values], dtype=object)
    dtype = storage_dtype(spec, table)
    if kind == "scalar":
        if given and scalar_type_code(given) != spec["type"]:  # exact types only: never convert
            code = spec["type"]
            j = next(j for j, v in enumerate(values) if v is not MISSING and scalar_type_code([v]) != code)
            raise _conflict(key, spec, f"a value of type {type(values[j]).__name__}", label(j))
        data = np.full(n, fill(dtype), dtype)
        data[present] = given
        return data
    tail = tuple(spec["shape"])
    if not fresh:
        _check_arrays(key, spec, given, counts[present], lambda j: label(int(np.flatnonzero(present)[j])))
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


def _check_arrays(
    key: str, spec: dict[str, Any], given: list[Any], counts: np.ndarray, label: Callable[[int], str]
) -> None:
    """Refuse arrays of another dtype or shape than the column's (whole passes over the values;
    the culprit is looked for only on failure)."""
    stored, tail = np.dtype(spec["dtype"]), tuple(spec["shape"])
    fits = set(map(type, given)) <= {np.ndarray} and set(map(_DTYPE, given)) <= {stored}
    if fits:
        shapes = list(map(_SHAPE, given))
        if spec["kind"] == "atom":
            fits = {s[1:] for s in shapes} <= {tail} and [
                s[0] if s else -1 for s in shapes
            ] == counts.tolist()
        else:
            fits = set(shapes) <= {tail}
    if fits:
        return
    expected = [(c, *tail) for c in counts.tolist()] if spec["kind"] == "atom" else [tail] * len(given)
    j = next(
        j
        for j, (v, shape) in enumerate(zip(given, expected, strict=True))
        if type(v) is not np.ndarray or v.dtype != stored or v.shape != shape
    )
    bad = given[j]
    what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
    raise _conflict(key, spec, what, label(j))


def _conflict(key: str, spec: dict[str, Any], got: str, where: str) -> InvalidDataError:
    stored = {
        "scalar": f"scalars of type code {spec.get('type')!r}",
        "string": "strings",
        "frame": f"arrays of dtype {spec['dtype']} and shape {tuple(spec['shape'])}",
        "atom": f"per-atom arrays of dtype {spec['dtype']} and shape (n_atoms, "
        f"{', '.join(map(str, spec['shape']))})",
    }[spec["kind"]]
    return InvalidDataError(
        f"{where}: column {key!r} stores {stored}, but got {got}; nothing was written. An H5MD column "
        "holds one type: convert the value to the stored type, or use another key"
    )

"""Checks every value passes before it is written: keys, shapes, atom counts, storable types.

Errors name the key (and, through ``where``, the frame or row) and say what is allowed.
:func:`check_rows` applies the same checks to every row of a store (``validate``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends._keys import NAMESPACES, PER_ATOM_CALC, TOP_LEVEL_KEYS, atom_count
from .errors import InvalidDataError, SerializationError, UnknownKeyError

if TYPE_CHECKING:
    from .backends._base import ReadableBackend

__all__ = [
    "check_frame",
    "check_key",
    "check_rows",
    "check_value",
    "unknown_key_message",
    "validate_row",
]

_PREFIXES = tuple(ns + "." for ns in NAMESPACES)
_ALLOWED_DTYPE_KINDS = frozenset("biufcUS")


def unknown_key_message(key: object) -> str:
    return (
        f"key {key!r} is not in the flat namespace; keys are 'arrays.<name>', 'calc.<name>', "
        "'info.<name>', 'cell', 'pbc', 'constraints' or 'celldisp'"
    )


def check_key(key: object) -> str:
    """Return ``key`` if it belongs to the flat namespace, else raise ``UnknownKeyError``."""
    if isinstance(key, str) and (
        key in TOP_LEVEL_KEYS or (key.startswith(_PREFIXES) and key.partition(".")[2])
    ):
        return key
    raise UnknownKeyError(unknown_key_message(key))


_PLAIN_TYPES = frozenset((type(None), bool, float, str, bytes, complex))


def _check_text(key: str, text: str) -> None:
    """Refuse strings UTF-8 cannot encode (lone surrogates), which no backend can store."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"key {key!r}: string {text!r} cannot be encoded as UTF-8 ({exc.reason}); "
                "store valid text, or bytes"
            ) from None


def check_value(key: str, value: Any, _depth: int = 0) -> None:
    """Raise ``SerializationError`` unless ``value`` is made of storable types."""
    kind = type(value)
    if kind is str:
        if not value.isascii():  # the common case costs one C call
            _check_text(key, value)
        return
    if kind in _PLAIN_TYPES:
        return
    if kind is int:
        if not -(2**63) <= value < 2**64:
            raise SerializationError(
                f"key {key!r}: integer {value} does not fit in 64 bits; store it as a string"
            )
        return
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in _ALLOWED_DTYPE_KINDS:
            raise SerializationError(
                f"key {key!r}: numpy dtype {value.dtype} cannot be stored; use numbers, "
                "booleans or fixed-width strings (object arrays are refused because reading "
                "them back would need pickle)"
            )
        return
    if _depth > 64:
        raise SerializationError(f"key {key!r}: value nested more than 64 levels deep")
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(key, item, _depth + 1)
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, (str, int)) or isinstance(name, bool):
                raise SerializationError(
                    f"key {key!r}: dict key {name!r} of type {type(name).__name__} cannot be "
                    "stored; use str or int keys"
                )
            if isinstance(name, str):
                _check_text(key, name)
            check_value(key, item, _depth + 1)
        return
    if isinstance(value, int):  # int subclasses (IntEnum, ...): range-check as int
        check_value(key, int(value), _depth)
        return
    if isinstance(value, str):  # str subclasses
        _check_text(key, value)
        return
    if isinstance(value, (float, bytes, complex)):  # other builtin subclasses
        return
    raise SerializationError(
        f"key {key!r}: value of type {type(value).__name__} cannot be stored; store numbers, "
        "strings, numpy arrays, or lists/dicts/tuples of those"
    )


def validate_row(
    row: Mapping[str, Any], *, n_atoms: int | None = None, where: str = ""
) -> dict[str, Any]:
    """Check a row's keys, shapes and value types before anything is written.

    ``n_atoms`` is the atom count of the stored frame (for partial updates).
    ``where`` (for example ``"row 3"``) is put in front of every message.
    Returns a plain dict with per-atom values as numpy arrays.
    """
    prefix = f"{where}: " if where else ""
    out: dict[str, Any] = {}
    n = atom_count(row, n_atoms)
    for key, value in row.items():
        try:
            check_key(key)
            _check_text(key, key)
        except UnknownKeyError as exc:
            raise UnknownKeyError(prefix + str(exc)) from None
        except SerializationError as exc:
            raise SerializationError(prefix + str(exc)) from None
        if key.startswith("arrays."):
            value = _per_atom(prefix, key, value, n, ((3,),) if key == "arrays.positions" else None)
        elif key.startswith("calc.") and key[5:] in PER_ATOM_CALC:
            value = _per_atom(prefix, key, value, n, PER_ATOM_CALC[key[5:]])
        elif key == "calc.stress":
            value = _shaped(prefix, key, value, ((6,), (3, 3)))
        elif key == "cell":
            value = _shaped(prefix, key, value, ((3, 3),))
        elif key == "celldisp":
            value = _shaped(prefix, key, value, ((3,), (3, 1)))
        elif key == "pbc":
            value = _shaped(prefix, key, value, ((3,),), dtype=bool)
        elif key == "constraints":
            if isinstance(value, (list, tuple)) and all(callable(getattr(c, "todict", None)) for c in value):
                value = [c.todict() for c in value]  # ASE constraint objects, as atoms.constraints holds them
            if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
                got = type(value).__name__
                if isinstance(value, list):
                    got = "a list holding " + ", ".join(sorted({type(c).__name__ for c in value}))
                raise InvalidDataError(
                    f"{prefix}'constraints' must be a list of ASE constraints or their dicts "
                    f"(constraint.todict()), got {got}"
                )
            check_constraints(prefix, value, n)
        try:
            check_value(key, value)
        except SerializationError as exc:
            raise SerializationError(prefix + str(exc)) from None
        out[key] = value
    if n is not None and n_atoms is not None and n != n_atoms:
        raise InvalidDataError(
            f"{prefix}the frame has {n_atoms} atoms but the new values describe {n}; replace the "
            "whole frame (db[i] = atoms) to change the atom count"
        )
    return out


def _shaped(
    prefix: str, key: str, value: Any, shapes: tuple[tuple[int, ...], ...], dtype: Any = None
) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"{prefix}{key!r} is not array-like: {exc}") from exc
    if arr.shape not in shapes:
        allowed = " or ".join(str(s) for s in shapes)
        raise InvalidDataError(f"{prefix}{key!r} has shape {arr.shape}; expected {allowed}")
    if dtype is None and arr.dtype.kind not in "biuf":
        raise InvalidDataError(f"{prefix}{key!r} must be numeric, got dtype {arr.dtype}")
    return arr


def _per_atom(
    prefix: str,
    key: str,
    value: Any,
    n: int | None,
    tails: tuple[tuple[int, ...], ...] | None,
) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.ndim == 0:
        raise InvalidDataError(f"{prefix}{key!r} is per-atom and must have one row per atom")
    if n is not None and arr.shape[0] != n:
        raise InvalidDataError(
            f"{prefix}{key!r} has {arr.shape[0]} rows but the frame has {n} atoms"
        )
    if tails is not None and arr.shape[1:] not in tails:
        allowed = " or ".join(str((n if n is not None else "n_atoms",) + t) for t in tails)
        raise InvalidDataError(f"{prefix}{key!r} has shape {arr.shape}; expected {allowed}")
    return arr


def check_constraints(prefix: str, constraints: list[dict[str, Any]], n: int | None = None) -> None:
    """Refuse constraint dicts ASE cannot rebuild, such as a user-defined ``FixConstraint``
    subclass stored by its ``todict()``: it would be written, then fail on every read. With the
    frame's atom count ``n``, refuse atom indices past it too (ASE accepts ``FixAtoms([7])`` on
    3 atoms and fails only when the constraint is applied)."""
    from ase.constraints import dict2constraint

    for j, constraint in enumerate(constraints):
        try:
            rebuilt = dict2constraint(copy.deepcopy(constraint))
        except Exception as exc:
            raise InvalidDataError(
                f"{prefix}constraint {j} ({constraint.get('name', 'unnamed')}) cannot be rebuilt by "
                f"ase.constraints.dict2constraint ({type(exc).__name__}: {exc}); only constraints ASE "
                "can rebuild are stored: remove it (del atoms.constraints[...]) or use one of ASE's classes"
            ) from None
        if n is not None:
            where = f"{prefix}constraint {j} ({constraint.get('name', 'unnamed')})"
            _check_constraint_atoms(where, rebuilt, n)


def _check_constraint_atoms(where: str, constraint: Any, n: int) -> None:
    """Refuse a constraint naming an atom a frame of ``n`` atoms does not have; constraints
    without atom indices (FixCom) or with their own structure (FixInternals) are not checked."""
    get = getattr(constraint, "get_indices", None)
    try:
        indices = get() if callable(get) else getattr(constraint, "indices", None)
    except (AttributeError, NotImplementedError, TypeError):
        return
    if indices is None:
        return
    try:
        found = np.asarray(indices).reshape(-1)
    except (TypeError, ValueError):
        return
    if found.dtype.kind not in "iu" or not found.size:
        return
    outside = found[(found >= n) | (found < -n)]
    if outside.size:
        raise InvalidDataError(
            f"{where} refers to atom {int(outside[0])} but the frame has {n} atoms; ASE would fail "
            "only when the constraint is applied: fix the indices or the atoms before writing"
        )


def check_frame(row: dict[str, Any], n: int) -> None:
    """Fast checks of a row built by :func:`atoms_to_dict` (messages without a location)."""
    if not "".join(row).isascii():  # one C call for every key of the common all-ASCII row
        for key in row:
            _check_text(key, key)
    for key, value in row.items():
        space = key[:5]
        if space == "array":
            if type(value) is not np.ndarray or value.ndim == 0 or len(value) != n:
                _per_atom("", key, value, n, None)
            if value.dtype.kind not in _ALLOWED_DTYPE_KINDS:
                check_value(key, value)
        elif space == "calc.":
            tails = PER_ATOM_CALC.get(key[5:])
            if tails is not None:
                if type(value) is not np.ndarray or value.shape[:1] != (n,) or value.shape[1:] not in tails:
                    row[key] = value = _per_atom("", key, value, n, tails)
            elif key == "calc.stress":
                if type(value) is not np.ndarray or value.shape not in ((6,), (3, 3)):
                    row[key] = value = _shaped("", key, value, ((6,), (3, 3)))
            check_value(key, value)
        elif space == "info.":
            check_value(key, value)
        elif key == "constraints":
            check_value(key, value)
            check_constraints("", value, n)


_CHECK_BYTES = 8 << 20  # values of one batch of rows checked at once (validate's memory)
_FIRST_CHECK = 256  # rows of the first batch, which measures what a row takes


def check_rows(backend: ReadableBackend) -> list[str]:
    """Problems found by reading every row of ``backend`` and checking it, each naming its row.

    Rows are read in batches of about 8 MB of values (the first of 256 rows measures a row; at
    most ``read_batch_size``): memory stays bounded by the batch, not by the store or its widest
    frames (H5MD, 100,000 frames of 8-128 atoms: 16,384-row batches peaked at 655 MB, these at
    about 136 MB, as fast). A batch that fails is read again row by row to name the rows that
    cannot be read, and a bar shows progress.
    """
    from .progress import progress

    problems: list[str] = []
    n, size = len(backend), min(_FIRST_CHECK, backend.read_batch_size)
    name = os.path.basename((backend.location or "the store").rstrip("/"))
    start = 0
    with progress(n, f"checking {name}") as bar:
        while start < n:
            batch = np.arange(start, min(start + size, n))
            rows = _rows_or_failures(backend, batch, problems)
            held = 0
            for i, row in zip(batch.tolist(), rows, strict=True):
                if row is None:
                    continue
                held += sum(v.nbytes if isinstance(v, np.ndarray) else 64 for v in row.values())
                numbers = row.get("arrays.numbers")
                try:
                    validate_row(row, n_atoms=None if numbers is None else len(numbers), where=f"row {i}")
                except Exception as exc:
                    problems.append(str(exc))
            per_row = max(1, held // len(batch))
            size = max(1, min(backend.read_batch_size, _CHECK_BYTES // per_row))
            start += len(batch)
            bar.update(len(batch))
    return problems


def _rows_or_failures(backend: ReadableBackend, batch: np.ndarray, problems: list[str]) -> list[Any]:
    """Rows ``batch`` in one read; if it fails, row by row, with None (and a problem) for each
    row that cannot be read."""
    try:
        return list(backend.read_rows(batch))
    except Exception:  # find the rows that fail, one by one
        rows: list[Any] = []
        for i in batch.tolist():
            try:
                rows.append(backend.read_row(i))
            except Exception as exc:
                problems.append(f"row {i}: cannot be read ({type(exc).__name__}: {exc})")
                rows.append(None)
        return rows

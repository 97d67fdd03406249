"""The flat data model: ``ase.Atoms`` <-> ``{key: value}`` rows.

This is the only module that builds or takes apart ``ase.Atoms``. A row uses
one flat namespace for every backend:

* ``arrays.<name>``: per-atom arrays (``positions``, ``numbers``, ``momenta``,
  ``masses``, ``tags``, ``initial_charges``, ``initial_magmoms``, custom ones)
* ``calc.<name>``: results of the attached calculator (``energy``, ``forces``, ...)
* ``info.<name>``: frame metadata from ``atoms.info``
* ``cell`` (3x3 float), ``pbc`` (3 bools), ``constraints`` (list of ASE
  constraint dicts, present only when the frame has constraints)

Values are kept exactly: a Python ``int`` stays ``int``, numpy dtypes and shapes
are kept, NaN is a value. A frame without calculator results comes back without
a calculator; results come back on a :class:`~ase.calculators.singlepoint.SinglePointCalculator`.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cell import Cell
from ase.constraints import dict2constraint

from .errors import InvalidDataError, SerializationError, UnknownKeyError

__all__ = [
    "NAMESPACES",
    "TOP_LEVEL_KEYS",
    "atoms_to_dict",
    "check_key",
    "copy_row",
    "dict_to_atoms",
    "validate_row",
]

NAMESPACES = ("arrays", "calc", "info")
TOP_LEVEL_KEYS = ("cell", "pbc", "constraints")
_PREFIXES = tuple(ns + "." for ns in NAMESPACES)
# calc results whose first axis runs over atoms, with their per-atom shapes
_PER_ATOM_CALC = {
    "forces": ((3,),),
    "energies": ((),),
    "free_energies": ((),),
    "stresses": ((6,), (3, 3)),
    "magmoms": ((), (3,)),
    "charges": ((),),
}
_ALLOWED_DTYPE_KINDS = frozenset("biufcUS")


def atoms_to_dict(atoms: Atoms) -> dict[str, Any]:
    """Take an ``Atoms`` apart into a flat row.

    The row holds references to the atoms' own arrays (no copies); backends copy
    or serialise them. Calculator results are kept only while they still belong
    to the atoms (ASE's own rule: results of a changed configuration are dropped).

    >>> from ase.build import molecule
    >>> row = atoms_to_dict(molecule("H2O"))
    >>> sorted(row)
    ['arrays.numbers', 'arrays.positions', 'cell', 'pbc']
    """
    if not isinstance(atoms, Atoms):
        raise InvalidDataError(
            f"expected ase.Atoms, got {type(atoms).__name__}; convert the object to ase.Atoms first"
        )
    row: dict[str, Any] = {"arrays." + name: value for name, value in atoms.arrays.items()}
    row["cell"] = atoms.cell.array
    row["pbc"] = atoms.pbc
    for name, value in atoms.info.items():
        row["info." + str(name)] = value
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", None) or {}
        if results and _calc_matches(calc, atoms):
            for name, value in results.items():
                row["calc." + name] = value
    if atoms.constraints:
        row["constraints"] = [c.todict() for c in atoms.constraints]
    return row


def _calc_matches(calc: Any, atoms: Atoms) -> bool:
    """True if ``calc``'s results were computed for this configuration (fast ASE check_state)."""
    ref = getattr(calc, "atoms", None)
    if ref is None:
        return True
    if ref.arrays.keys() != atoms.arrays.keys():
        return bool(not calc.check_state(atoms))
    for name, arr in atoms.arrays.items():
        other = ref.arrays[name]
        if arr.shape != other.shape or not np.array_equal(arr, other):
            return bool(not calc.check_state(atoms))
    return bool(
        np.array_equal(ref.cell.array, atoms.cell.array) and np.array_equal(ref.pbc, atoms.pbc)
    ) or not calc.check_state(atoms)


_SPC_TEMPLATE: dict[str, Any] | None = None


def _new_calculator(atoms: Atoms, results: dict[str, Any]) -> SinglePointCalculator:
    """A SinglePointCalculator without the cost of its constructor (which copies Atoms)."""
    global _SPC_TEMPLATE
    if _SPC_TEMPLATE is None:
        _SPC_TEMPLATE = vars(SinglePointCalculator(Atoms()))
    calc = SinglePointCalculator.__new__(SinglePointCalculator)
    state = calc.__dict__
    for name, value in _SPC_TEMPLATE.items():
        if hasattr(value, "__self__") and hasattr(value, "__func__"):  # bound method
            state[name] = value.__func__.__get__(calc)
        elif isinstance(value, dict):
            state[name] = {}
        else:
            state[name] = value
    state["results"] = results
    state["atoms"] = _snapshot(atoms)
    return calc


def _snapshot(atoms: Atoms) -> Atoms:
    """A private copy of what ``compare_atoms`` checks, for the calculator's reference."""
    snap = Atoms.__new__(Atoms)
    snap.arrays = {name: arr.copy() for name, arr in atoms.arrays.items()}
    snap._cellobj = Cell(atoms._cellobj.array.copy())
    snap._pbc = atoms._pbc.copy()
    snap._celldisp = atoms._celldisp.copy()
    snap._constraints = []
    snap.info = {}
    snap._calc = None
    return snap


def dict_to_atoms(row: Mapping[str, Any]) -> Atoms:
    """Build ``Atoms`` from a flat row, taking ownership of its arrays (no copies).

    >>> from ase.build import molecule
    >>> dict_to_atoms(atoms_to_dict(molecule("H2O"))).get_chemical_formula()
    'H2O'
    """
    arrays: dict[str, Any] = {}
    info: dict[str, Any] = {}
    results: dict[str, Any] = {}
    cell = pbc = constraints = None
    for key, value in row.items():
        if key.startswith("arrays."):
            arrays[key[7:]] = value
        elif key.startswith("calc."):
            results[key[5:]] = value
        elif key.startswith("info."):
            info[key[5:]] = value
        elif key == "cell":
            cell = value
        elif key == "pbc":
            pbc = value
        elif key == "constraints":
            constraints = value
        else:
            raise UnknownKeyError(_unknown_key_message(key))
    numbers = arrays.pop("numbers", None)
    positions = arrays.pop("positions", None)
    if numbers is None:
        numbers = np.zeros(0 if positions is None else len(positions), dtype=np.int64)
    if positions is None:
        positions = np.zeros((len(numbers), 3))
    atoms = Atoms.__new__(Atoms)
    atoms.arrays = {"numbers": np.asarray(numbers), "positions": np.asarray(positions), **arrays}
    if cell is None:
        atoms._cellobj = Cell(np.zeros((3, 3)))
    else:
        cell = np.asarray(cell, dtype=float)
        atoms._cellobj = Cell(cell) if cell.shape == (3, 3) else Cell.new(cell)
    atoms._pbc = np.zeros(3, bool) if pbc is None else np.array(pbc, dtype=bool).reshape(3)
    atoms._celldisp = np.zeros((3, 1))
    atoms._constraints = [dict2constraint(_copy.deepcopy(c)) for c in constraints or ()]
    atoms.info = info
    atoms._calc = None
    if results:
        atoms._calc = _new_calculator(atoms, results)
    return atoms


def _unknown_key_message(key: object) -> str:
    return (
        f"key {key!r} is not in the flat namespace; keys are 'arrays.<name>', 'calc.<name>', "
        "'info.<name>', 'cell', 'pbc' or 'constraints'"
    )


def check_key(key: object) -> str:
    """Return ``key`` if it belongs to the flat namespace, else raise ``UnknownKeyError``."""
    if isinstance(key, str) and (
        key in TOP_LEVEL_KEYS or (key.startswith(_PREFIXES) and key.partition(".")[2])
    ):
        return key
    raise UnknownKeyError(_unknown_key_message(key))


def check_value(key: str, value: Any, _depth: int = 0) -> None:
    """Raise ``SerializationError`` unless ``value`` is made of storable types."""
    if value is None or type(value) in (bool, int, float, str, bytes, complex):
        if type(value) is int and not -(2**63) <= value < 2**64:
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
            check_value(key, item, _depth + 1)
        return
    if isinstance(value, (bool, int, float, str, bytes, complex)):  # subclasses (IntEnum, ...)
        return
    raise SerializationError(
        f"key {key!r}: value of type {type(value).__name__} cannot be stored; store numbers, "
        "strings, numpy arrays, or lists/dicts/tuples of those"
    )


def _n_atoms(row: Mapping[str, Any], fallback: int | None) -> int | None:
    for name in ("arrays.numbers", "arrays.positions"):
        value = row.get(name)
        if value is not None:
            return len(value)
    return fallback


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
    n = _n_atoms(row, n_atoms)
    for key, value in row.items():
        try:
            check_key(key)
        except UnknownKeyError as exc:
            raise UnknownKeyError(prefix + str(exc)) from None
        if key.startswith("arrays."):
            value = _per_atom(prefix, key, value, n, ((3,),) if key == "arrays.positions" else None)
        elif key.startswith("calc.") and key[5:] in _PER_ATOM_CALC:
            value = _per_atom(prefix, key, value, n, _PER_ATOM_CALC[key[5:]])
        elif key == "calc.stress":
            value = _shaped(prefix, key, value, ((6,), (3, 3)))
        elif key == "cell":
            value = _shaped(prefix, key, value, ((3, 3),))
        elif key == "pbc":
            value = _shaped(prefix, key, value, ((3,),), dtype=bool)
        elif key == "constraints":
            if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
                raise InvalidDataError(
                    f"{prefix}'constraints' must be a list of ASE constraint dicts "
                    f"(constraint.todict()), got {type(value).__name__}"
                )
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


def copy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of a row, fast for numpy arrays (used by in-memory stores and caches)."""
    return {key: _copy_value(value) for key, value in row.items()}


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, dict, tuple)):
        return _copy.deepcopy(value)
    return value


def rows_from_atoms(images: Iterable[Any]) -> list[dict[str, Any]]:
    """Convert and validate every frame before a write; errors name the offending frame."""
    rows = []
    for i, atoms in enumerate(images):
        if not isinstance(atoms, Atoms):
            raise InvalidDataError(
                f"frame {i}: expected ase.Atoms, got {type(atoms).__name__}; nothing was written"
            )
        row = atoms_to_dict(atoms)
        rows.append(validate_row(row, where=f"frame {i}"))
    return rows

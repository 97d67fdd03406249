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
import gc
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
    "atoms_from_rows",
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
    """True if ``calc``'s results were computed for this configuration.

    Byte-identical arrays, cell and pbc are accepted at once; anything else is left
    to ASE's own ``check_state``, so the rule is ASE's.
    """
    ref = getattr(calc, "atoms", None)
    if ref is None:
        return True
    ref_arrays = ref.arrays
    if ref_arrays.keys() == atoms.arrays.keys():
        for name, value in atoms.arrays.items():
            other = ref_arrays[name]
            if value.dtype != other.dtype or value.shape != other.shape:
                break
            if value.tobytes() != other.tobytes():
                break
        else:
            if (
                ref.cell.array.tobytes() == atoms.cell.array.tobytes()
                and ref.pbc.tobytes() == atoms.pbc.tobytes()
            ):
                return True
    return not calc.check_state(atoms)


class _CalculatorFactory:
    """Builds SinglePointCalculators without the cost of their constructor (an Atoms copy).

    The instance state is modelled on one real SinglePointCalculator, so the
    result behaves exactly like one built by ASE.
    """

    def __init__(self) -> None:
        template = vars(SinglePointCalculator(Atoms()))
        self.plain = {
            k: v for k, v in template.items() if not isinstance(v, dict) and not _is_bound(v)
        }
        self.dicts = [k for k, v in template.items() if isinstance(v, dict)]
        self.bound = [(k, v.__func__) for k, v in template.items() if _is_bound(v)]

    def __call__(self, atoms: Atoms, results: dict[str, Any]) -> SinglePointCalculator:
        calc = SinglePointCalculator.__new__(SinglePointCalculator)
        state = dict(self.plain)
        for name in self.dicts:
            state[name] = {}
        for name, func in self.bound:
            state[name] = func.__get__(calc)
        state["results"] = results
        state["atoms"] = _snapshot(atoms)
        calc.__dict__ = state
        return calc


def _is_bound(value: Any) -> bool:
    return hasattr(value, "__self__") and hasattr(value, "__func__")


_new_calculator: _CalculatorFactory | None = None


def _cell(array: np.ndarray) -> Cell:
    """A Cell around a checked (3, 3) float array, without the constructor's re-checks."""
    cell = Cell.__new__(Cell)
    cell.array = array
    return cell


def _snapshot(atoms: Atoms) -> Atoms:
    """A private copy of what ``compare_atoms`` checks, for the calculator's reference."""
    snap = Atoms.__new__(Atoms)
    snap.__dict__ = {
        "_cellobj": _cell(atoms._cellobj.array.copy()),
        "_pbc": atoms._pbc.copy(),
        "arrays": {name: arr.copy() for name, arr in atoms.arrays.items()},
        "_celldisp": atoms._celldisp,
        "_constraints": [],
        "info": {},
        "_calc": None,
    }
    return snap


def dict_to_atoms(row: Mapping[str, Any]) -> Atoms:
    """Build ``Atoms`` from a flat row, taking ownership of its arrays (no copies).

    >>> from ase.build import molecule
    >>> dict_to_atoms(atoms_to_dict(molecule("H2O"))).get_chemical_formula()
    'H2O'
    """
    global _new_calculator
    arrays: dict[str, Any] = {}
    info: dict[str, Any] = {}
    results: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for key, value in row.items():
        first = key[:1]
        if first == "a" and key.startswith("arrays."):
            arrays[key[7:]] = value
        elif first == "c" and key.startswith("calc."):
            results[key[5:]] = value
        elif first == "i" and key.startswith("info."):
            info[key[5:]] = value
        elif key in TOP_LEVEL_KEYS:
            top[key] = value
        else:
            raise UnknownKeyError(_unknown_key_message(key))
    numbers = arrays.pop("numbers", None)
    positions = arrays.pop("positions", None)
    if numbers is None:
        numbers = np.zeros(0 if positions is None else len(positions), dtype=np.int64)
    if positions is None:
        positions = np.zeros((len(numbers), 3))
    cell = top.get("cell")
    if cell is None:
        cellobj = _cell(np.zeros((3, 3)))
    else:
        if type(cell) is not np.ndarray or cell.dtype != np.float64:
            cell = np.asarray(cell, dtype=float)
        cellobj = _cell(cell) if cell.shape == (3, 3) else Cell.new(cell)
    pbc = top.get("pbc")
    if pbc is None:
        pbc = np.zeros(3, bool)
    elif type(pbc) is not np.ndarray or pbc.dtype != bool or pbc.shape != (3,):
        pbc = np.array(pbc, dtype=bool).reshape(3)
    constraints = top.get("constraints")
    atoms = Atoms.__new__(Atoms)
    atoms.__dict__ = {  # the attributes Atoms.__init__ sets, in its order
        "_cellobj": cellobj,
        "_pbc": pbc,
        "arrays": {"numbers": numbers, "positions": positions, **arrays},
        "_celldisp": np.zeros((3, 1)),
        "_constraints": (
            [dict2constraint(_copy.deepcopy(c)) for c in constraints] if constraints else []
        ),
        "info": info,
        "_calc": None,
    }
    if results:
        if _new_calculator is None:
            _new_calculator = _CalculatorFactory()
        atoms._calc = _new_calculator(atoms, results)
    return atoms


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch of frames is built.

    Each frame allocates a dozen containers; with thousands of frames alive, Python's
    collector would re-scan them over and over (it halved read-all throughput at 20,000
    frames). Reference counting still frees everything; the collector resumes after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def atoms_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Atoms]:
    """``dict_to_atoms`` over a batch of rows."""
    with gc_paused():
        return [dict_to_atoms(row) for row in rows]


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


_PLAIN_TYPES = frozenset((type(None), bool, float, str, bytes, complex))


def check_value(key: str, value: Any, _depth: int = 0) -> None:
    """Raise ``SerializationError`` unless ``value`` is made of storable types."""
    kind = type(value)
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
            check_value(key, item, _depth + 1)
        return
    if isinstance(value, int):  # int subclasses (IntEnum, ...): range-check as int
        check_value(key, int(value), _depth)
        return
    if isinstance(value, (float, str, bytes, complex)):  # other builtin subclasses
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
    """Convert and check every frame before a write; errors name the offending frame.

    ASE keeps ``cell`` and ``pbc`` well formed; per-atom arrays, calculator
    results, info values and constraints are checked here.
    """
    rows: list[dict[str, Any]] = []
    frames = iter(images)
    while True:
        with gc_paused():  # per batch, so cyclic garbage from a user's generator is still collected
            start = len(rows)
            batch = list(itertools.islice(frames, 1024))
            rows.extend(_checked_row(start + j, atoms) for j, atoms in enumerate(batch))
        if len(batch) < 1024:
            return rows


def _checked_row(i: int, atoms: Any) -> dict[str, Any]:
    if not isinstance(atoms, Atoms):
        raise InvalidDataError(
            f"frame {i}: expected ase.Atoms, got {type(atoms).__name__}; nothing was written"
        )
    row = atoms_to_dict(atoms)
    try:
        _check_frame(row, len(atoms.arrays["numbers"]))
    except InvalidDataError as exc:
        raise type(exc)(f"frame {i}: {exc}; nothing was written") from None
    return row


def _check_frame(row: dict[str, Any], n: int) -> None:
    """Fast checks of a row built by :func:`atoms_to_dict` (messages without a location)."""
    for key, value in row.items():
        space = key[:5]
        if space == "array":
            if type(value) is not np.ndarray or value.ndim == 0 or len(value) != n:
                _per_atom("", key, value, n, None)
            if value.dtype.kind not in _ALLOWED_DTYPE_KINDS:
                check_value(key, value)
        elif space == "calc.":
            tails = _PER_ATOM_CALC.get(key[5:])
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

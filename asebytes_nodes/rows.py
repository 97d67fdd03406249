"""The flat data model: ``ase.Atoms`` <-> ``{key: value}`` rows.

This is the only module that builds or takes apart ``ase.Atoms``. A row uses
one flat namespace for every backend:

* ``arrays.<name>``: per-atom arrays (``positions``, ``numbers``, ``momenta``,
  ``masses``, ``tags``, ``initial_charges``, ``initial_magmoms``, custom ones)
* ``calc.<name>``: results of the attached calculator (``energy``, ``forces``, ...)
* ``info.<name>``: frame metadata from ``atoms.info``
* ``cell`` (3x3 float), ``pbc`` (3 bools), ``constraints`` (list of ASE
  constraint dicts, present only when the frame has constraints), ``celldisp``
  (ASE's cell displacement, shape (3,) or (3, 1) as ASE holds it, present only when not zero)

Values are kept exactly: a Python ``int`` stays ``int``, numpy dtypes and shapes
are kept, NaN is a value. A frame without calculator results comes back without
a calculator; results come back on a :class:`~ase.calculators.singlepoint.SinglePointCalculator`
(:class:`StoredResults`, whose state check is cheaper).
"""

from __future__ import annotations

import copy as _copy
import gc
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cell import Cell

from .backends._keys import PER_ATOM_CALC, TOP_LEVEL_KEYS
from .errors import InvalidDataError, StoreCorruptedError, UnknownKeyError
from .validation import check_frame, unknown_key_message

__all__ = [
    "StoredResults",
    "atoms_to_dict",
    "dict_to_atoms",
    "gc_paused",
    "rows_from_atoms",
]


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
        if type(name) is not str:  # its str() would come back: another key, or one already there
            raise InvalidDataError(
                f"atoms.info key {name!r} is of type {type(name).__name__}; flat keys are strings: "
                f"rename it (atoms.info[{str(name)!r}] = ...)"
            )
        row["info." + name] = value
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", None) or {}
        if results and _calc_matches(calc, atoms):
            for name, value in results.items():
                row["calc." + name] = value
    if atoms.constraints:
        row["constraints"] = [c.todict() for c in atoms.constraints]
    disp = atoms._celldisp  # the cell's displacement (ASE's celldisp), kept only when set
    if disp.tobytes() != _NO_DISPLACEMENT and disp.any():  # (the bytes test: 30x cheaper than any())
        row["celldisp"] = np.array(disp, dtype=np.float64)  # (3,) or ASE's default (3, 1)
    return row


_NO_DISPLACEMENT = np.zeros((3, 1)).tobytes()  # ASE's default celldisp


def _calc_matches(calc: Any, atoms: Atoms) -> bool:
    """True if ``calc``'s results were computed for this configuration.

    Byte-identical arrays, cell and pbc are accepted at once; anything else is left
    to ASE's own ``check_state``, so the rule is ASE's.
    """
    ref = getattr(calc, "atoms", None)
    return ref is None or _byte_identical(ref, atoms) or not calc.check_state(atoms)


def _byte_identical(ref: Atoms, atoms: Atoms) -> bool:
    """Do ``ref`` and ``atoms`` hold the same arrays (names, dtypes, shapes, bytes), cell and pbc?"""
    ref_arrays = ref.arrays
    if ref_arrays.keys() != atoms.arrays.keys():
        return False
    for name, value in atoms.arrays.items():
        other = ref_arrays[name]
        if value.dtype != other.dtype or value.shape != other.shape or value.tobytes() != other.tobytes():
            return False
    return ref.cell.array.tobytes() == atoms.cell.array.tobytes() and ref.pbc.tobytes() == atoms.pbc.tobytes()


_COMPARED = frozenset(all_changes)  # what ASE's compare_atoms looks at (arrays by these names)


class StoredResults(SinglePointCalculator):
    """The calculator of frames read from a store: ASE's SinglePointCalculator, except that
    its state check (run by every ``get_potential_energy``, ``get_forces``, ...) accepts atoms
    byte-identical to the ones its results belong to at once. ASE compares with ``np.allclose``
    per property: 90-170 us a call here, 5-10 us this way. Anything else, or NaN in what ASE
    compares (which ASE counts as a change), goes to ASE's own check, so the answer is ASE's.
    Pickles and deep-copies as a plain SinglePointCalculator."""

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        ref = self.atoms
        if ref is not None and _byte_identical(ref, atoms) and not _has_nan(ref):
            return []
        return super().check_state(atoms, tol)

    def __reduce__(self) -> tuple[Any, ...]:
        return object.__new__, (SinglePointCalculator,), self.__dict__


def _has_nan(atoms: Atoms) -> bool:
    """NaN in the cell or in a float array ASE's ``compare_atoms`` compares?"""
    arrays = atoms.arrays
    return bool(np.isnan(atoms.cell.array).any()) or any(
        arrays[name].dtype.kind in "fc" and bool(np.isnan(arrays[name]).any())
        for name in _COMPARED.intersection(arrays)
    )


class _CalculatorFactory:
    """Builds :class:`StoredResults` without the cost of their constructor (an Atoms copy).

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

    def __call__(self, atoms: Atoms, results: dict[str, Any]) -> StoredResults:
        calc = StoredResults.__new__(StoredResults)
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


def _rebuild_constraints(constraints: list[dict[str, Any]]) -> list[Any]:
    """ASE constraint objects from stored dicts; one ASE cannot rebuild is a clear error."""
    from ase.constraints import dict2constraint  # imports scipy (about 1 s): only frames with constraints

    out = []
    for constraint in constraints:
        try:
            out.append(dict2constraint(_copy.deepcopy(constraint)))
        except Exception as exc:
            name = constraint.get("name") if isinstance(constraint, dict) else type(constraint).__name__
            raise StoreCorruptedError(
                f"a stored constraint of class {name!r} cannot be rebuilt by ase.constraints.dict2constraint "
                f"({type(exc).__name__}: {exc}); it was written by another tool or another ASE version: "
                "read the row's other keys with a column view (db[i:i+1][keys])"
            ) from exc
    return out


_SPLIT: dict[str, tuple[int, str]] = {}  # key -> (part of the row, name within it); see _split


def _split(key: str) -> tuple[int, str]:
    """Where ``key`` goes in ``dict_to_atoms``: 0 arrays, 1 calculator results, 2 info, 3 the
    Atoms itself; remembered, as a store's rows share a few keys (one lookup per key after)."""
    if key.startswith("arrays."):
        found = (0, key[7:])
    elif key.startswith("calc."):
        found = (1, key[5:])
    elif key.startswith("info."):
        found = (2, key[5:])
    elif key in TOP_LEVEL_KEYS:
        found = (3, key)
    else:
        raise UnknownKeyError(unknown_key_message(key))
    if len(_SPLIT) > 4096:  # keys made from data (info of many names): keep the table bounded
        _SPLIT.clear()
    _SPLIT[key] = found
    return found


def dict_to_atoms(row: Mapping[str, Any]) -> Atoms:
    """Build ``Atoms`` from a flat row, taking ownership of its arrays (no copies).

    >>> from ase.build import molecule
    >>> dict_to_atoms(atoms_to_dict(molecule("H2O"))).get_chemical_formula()
    'H2O'
    """
    global _new_calculator
    arrays: dict[str, Any] = {}
    results: dict[str, Any] = {}
    info: dict[str, Any] = {}
    top: dict[str, Any] = {}
    parts, known = (arrays, results, info, top), _SPLIT.get
    for key, value in row.items():
        part, name = known(key) or _split(key)
        parts[part][name] = value
    numbers = arrays.pop("numbers", None)
    positions = arrays.pop("positions", None)
    if numbers is None:
        numbers = np.zeros(0 if positions is None else len(positions), dtype=np.int64)
    if positions is None:
        positions = np.zeros((len(numbers), 3))
    n = len(numbers)
    if (
        len(positions) != n
        or (arrays and any(len(v) != n for v in arrays.values()))
        or (results and _atom_results_differ(results, n))
    ):
        raise StoreCorruptedError(_lengths_message(numbers, positions, arrays, results))
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
        "_celldisp": np.zeros((3, 1)) if (disp := top.get("celldisp")) is None else np.array(disp, float),
        "_constraints": _rebuild_constraints(constraints) if constraints else [],
        "info": info,
        "_calc": None,
    }
    if results:
        if _new_calculator is None:
            _new_calculator = _CalculatorFactory()
        atoms._calc = _new_calculator(atoms, results)
    return atoms


def _atom_results_differ(results: dict[str, Any], n: int) -> bool:
    """Does a per-atom calculator result have another length than the frame's ``n`` atoms?"""
    for name, value in results.items():
        if name in PER_ATOM_CALC and (np.ndim(value) == 0 or len(value) != n):
            return True
    return False


def _lengths_message(
    numbers: Any, positions: Any, arrays: dict[str, Any], results: dict[str, Any]
) -> str:
    """Which per-atom values of a row disagree on its atom count."""
    lengths: dict[str, int | None] = {"arrays.numbers": len(numbers), "arrays.positions": len(positions)}
    lengths.update({f"arrays.{k}": len(v) for k, v in arrays.items()})
    per_atom = {k: v for k, v in results.items() if k in PER_ATOM_CALC}
    lengths.update({f"calc.{k}": (np.shape(v) or (None,))[0] for k, v in per_atom.items()})
    listed = ", ".join(f"{key!r} {count}" for key, count in lengths.items())
    return f"the row's per-atom values disagree on its atom count ({listed}); it cannot become Atoms"


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


def rows_from_atoms(
    images: Iterable[Any], *, show_progress: bool | None = None, rows: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Convert and check every frame before a write; errors name the offending frame (by the
    store ``rows`` the frames are written to when given, else by position in ``images``).

    ASE keeps ``cell`` and ``pbc`` well formed; per-atom arrays, calculator
    results, info values and constraints are checked here. Many frames show a
    progress bar on a terminal (see :mod:`asebytes_nodes.progress`).
    """
    from .progress import progress

    out: list[dict[str, Any]] = []
    frames = iter(images)
    total = len(images) if isinstance(images, Sized) else None
    with progress(total, "preparing frames", enabled=show_progress) as bar:
        while True:
            with gc_paused():  # per batch, so cyclic garbage from a user's generator is still collected
                start = len(out)
                batch = list(itertools.islice(frames, 1024))
                for j, atoms in enumerate(batch, start):
                    out.append(_checked_row(f"frame {j}" if rows is None else f"row {rows[j]}", atoms))
            bar.update(len(batch))
            if len(batch) < 1024:
                return out


def _checked_row(where: str, atoms: Any) -> dict[str, Any]:
    if not isinstance(atoms, Atoms):
        got = type(atoms).__name__
        raise InvalidDataError(f"{where}: expected ase.Atoms, got {got}; nothing was written")
    try:
        row = atoms_to_dict(atoms)
        check_frame(row, len(atoms.arrays["numbers"]))
    except InvalidDataError as exc:
        raise type(exc)(f"{where}: {exc}; nothing was written") from None
    return row



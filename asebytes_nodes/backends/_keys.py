"""The key model every backend shares: the flat namespace, which keys run over atoms, atom counts
and the marker of an absent value.

A row's keys are ``arrays.<name>`` (per-atom arrays), ``calc.<name>`` (calculator results),
``info.<name>`` (frame metadata) and the top-level keys ``cell``, ``pbc``, ``constraints`` and
``celldisp``. A key runs over atoms by ASE's own rule, never by the shape of a value:
every ``arrays.*`` key, and the calculator results ASE declares with a leading ``natoms`` axis
(``ase.outputs``: forces, energies, stresses, magmoms, charges, ...). Any other ``calc.*`` or
``info.*`` value is per frame, even when its first axis happens to equal the atom count
(``calc.dipole`` of a 3-atom frame is a (3,) vector, not one number per atom).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np

__all__ = [
    "ATOM_COUNT_KEYS",
    "MISSING",
    "NAMESPACES",
    "PER_ATOM_CALC",
    "TOP_LEVEL_KEYS",
    "atom_count",
    "atom_counts",
    "is_per_atom",
]

NAMESPACES = ("arrays", "calc", "info")
TOP_LEVEL_KEYS = ("cell", "pbc", "constraints", "celldisp")
#: The keys whose length is a frame's atom count, in the order they are asked.
ATOM_COUNT_KEYS = ("arrays.numbers", "arrays.positions")
# calc results whose first axis runs over atoms, with their per-atom shapes: every ASE output
# whose shape starts with ``natoms`` (``ase.outputs``; a test keeps the two in step)
PER_ATOM_CALC: dict[str, tuple[tuple[int, ...], ...]] = {
    "forces": ((3,),),
    "energies": ((),),
    "free_energies": ((),),
    "stresses": ((6,), (3, 3)),
    "magmoms": ((), (3,)),
    "charges": ((),),
    "born_effective_charges": ((3, 3),),
}


class _Missing:
    """Marks a row that does not carry the requested key."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def is_per_atom(key: str) -> bool:
    """Does ``key`` run over atoms (``arrays.*`` and ASE's per-atom calculator results)?"""
    return key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)


@overload
def atom_count(row: Mapping[str, Any], default: int = 0) -> int: ...
@overload
def atom_count(row: Mapping[str, Any], default: int | None) -> int | None: ...
def atom_count(row: Mapping[str, Any], default: int | None = 0) -> int | None:
    """The atom count a row states (length of ``arrays.numbers`` or ``arrays.positions``),
    else ``default``."""
    for key in ATOM_COUNT_KEYS:
        value = row.get(key)
        if value is not None:
            return len(value)
    return default


def atom_counts(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The atom count of every row (0 where a row states none), as int64."""
    return np.fromiter((atom_count(row) for row in rows), np.int64, len(rows))

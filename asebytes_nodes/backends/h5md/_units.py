"""Units of H5MD elements: the labels written on our files, and conversion of other programs'
unit strings (``kJ mol-1 nm-1``, ``eV/Angstrom^3``, ``kJ/(mol*nm)``) to ASE units."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from ase import units as ase_units
from ase.data import atomic_masses

from .._keys import MISSING

__all__ = ["QUANTITY", "UNITS", "VELOCITY_UNIT", "ase_unit", "momenta", "unit_factor"]

#: Unit labels written on our files (MDAnalysis' spelling where it has one).
UNITS = {
    "arrays.positions": "Angstrom",
    "cell": "Angstrom",
    "arrays.masses": "amu",
    "arrays.initial_charges": "e",
    "calc.forces": "eV Angstrom-1",
    "calc.energy": "eV",
    "calc.free_energy": "eV",
    "calc.energies": "eV",
    "calc.stress": "eV Angstrom-3",
    "calc.stresses": "eV Angstrom-3",
    "calc.dipole": "e Angstrom",
    "calc.charges": "e",
}
#: The derived velocity element: its label, and the factor from ASE's velocity unit.
VELOCITY_UNIT = ("Angstrom ps-1", 1000 * ase_units.fs)
#: Which quantity a key of another program's file holds, for converting its unit.
QUANTITY = {
    "arrays.positions": "length",
    "cell": "length",
    "arrays.masses": "mass",
    "arrays.initial_charges": "charge",
    "calc.charges": "charge",
    "calc.forces": "force",
    "calc.energy": "energy",
    "calc.stress": "pressure",
}

# Factor to ASE units and dimension (length, mass, time, charge) of each symbol.
_L, _M, _T, _Q = (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)
_E = (2, 1, -2, 0)
_SYMBOLS: dict[str, tuple[float, tuple[int, ...]]] = {
    **dict.fromkeys(("Angstrom", "angstrom", "A", "Å"), (1.0, _L)),
    "nm": (10.0, _L),
    "pm": (0.01, _L),
    "fm": (1e-5, _L),
    "m": (ase_units.m, _L),
    **dict.fromkeys(("Bohr", "bohr"), (ase_units.Bohr, _L)),
    "fs": (ase_units.fs, _T),
    "ps": (1e3 * ase_units.fs, _T),
    "ns": (1e6 * ase_units.fs, _T),
    "s": (ase_units.s, _T),
    **dict.fromkeys(("amu", "u", "Da"), (1.0, _M)),
    "g": (ase_units.kg / 1000, _M),
    "kg": (ase_units.kg, _M),
    "eV": (1.0, _E),
    "meV": (1e-3, _E),
    "J": (ase_units.J, _E),
    "kJ": (ase_units.kJ, _E),
    "kcal": (ase_units.kcal, _E),
    **dict.fromkeys(("Hartree", "Ha"), (ase_units.Hartree, _E)),
    "mol": (ase_units.mol, (0, 0, 0, 0)),
    "e": (1.0, _Q),
    "C": (ase_units.C, _Q),
    **dict.fromkeys(("N", "Newton"), (ase_units.J / ase_units.m, (1, 1, -2, 0))),
    "Pa": (ase_units.Pascal, (-1, 1, -2, 0)),
    "GPa": (ase_units.GPa, (-1, 1, -2, 0)),
    "bar": (ase_units.bar, (-1, 1, -2, 0)),
}
_DIMENSIONS = {
    "length": _L,
    "velocity": (1, 0, -1, 0),
    "force": (1, 1, -2, 0),
    "energy": _E,
    "pressure": (-1, 1, -2, 0),
    "mass": _M,
    "charge": _Q,
    "time": _T,
}
_DIMENSIONLESS = frozenset({"", "1", "none", "dimensionless"})
_SYMBOL = re.compile(r"^([A-Za-zÅ]+)(?:\^?(-?\d+))?$")


def unit_factor(unit: str, quantity: str) -> float:
    """Factor from ``unit`` to ASE units for a ``quantity`` ("time": to fs).

    Understands H5MD's ``kJ mol-1 nm-1`` and the ``eV/Angstrom^3`` or ``kJ/(mol*nm)`` spellings.

    >>> round(unit_factor("kJ mol-1 Angstrom-1", "force"), 6)
    0.010364
    >>> unit_factor("nm", "length")
    10.0
    """
    factor, dims = _parse(unit)
    if dims != _DIMENSIONS[quantity]:
        raise ValueError(f"{unit!r} is not a unit of {quantity}")
    return factor / ase_units.fs if quantity == "time" else factor


def ase_unit(unit: str) -> bool:
    """Are values in ``unit`` already in ASE units (eV, Angstrom, amu, e and their products), or
    dimensionless? Values of keys without a known quantity are read as stored: no news then.

    >>> ase_unit("eV Angstrom-1"), ase_unit("kJ mol-1"), ase_unit("K")
    (True, False, False)
    """
    if unit.strip() in _DIMENSIONLESS:
        return True
    try:
        return _parse(unit)[0] == 1.0
    except ValueError:
        return False


def _parse(unit: str) -> tuple[float, tuple[int, ...]]:
    """The factor to ASE units and the dimension of ``unit`` (ValueError: a symbol not known)."""
    factor, dims, sign = 1.0, np.zeros(4, int), 1
    for token in unit.replace("/", " / ").replace("(", " ").replace(")", " ").replace("*", " ").split():
        if token == "/":
            sign = -1
            continue
        match = _SYMBOL.match(token)
        if match is None or match.group(1) not in _SYMBOLS:
            raise ValueError(f"unknown unit symbol {token!r}")
        scale, dim = _SYMBOLS[match.group(1)]
        power = sign * int(match.group(2) or 1)
        factor *= scale**power
        dims += power * np.array(dim)
    return factor, tuple(int(d) for d in dims)


def momenta(velocities: list[Any], masses: list[Any] | None, numbers: list[Any] | None) -> list[Any]:
    """Each frame's velocities times its masses (ASE keeps momenta): the file's masses, else the
    standard masses of its species, else 1 (MISSING where a frame lacks the masses or species)."""
    out = []
    for j, v in enumerate(velocities):
        m = MISSING if masses is None else masses[j]
        if m is MISSING:
            z = MISSING if numbers is None else numbers[j]
            m = np.ones(len(v)) if z is MISSING else atomic_masses[z]
        out.append(v * m[:, None])
    return out

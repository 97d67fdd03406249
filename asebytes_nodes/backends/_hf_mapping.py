"""Column mappings: which columns of a tabular dataset make up a frame.

Pure Python (no pyarrow, no datasets), so ``from asebytes_nodes import ColumnMapping``
works without the ``hf`` extra.

Stress conventions
------------------
``calc.stress`` always comes back in ASE's convention: Voigt order
(xx, yy, zz, yz, xz, xy), eV/Å³, and ASE's sign (the sign of ``atoms.get_stress()``,
the physical Cauchy stress: negative diagonal under compression). A 3x3 column is
symmetrised like ASE's ``full_3x3_to_voigt_6_stress`` and multiplied by
``stress_factor``; where the ``stress_volume_normalized`` column (booleans) is true, the
value was stored multiplied by the cell volume and is divided by it (a row without a cell, or
with a cell of no volume, is refused with ``InvalidDataError``).

* ColabFit ``cauchy_stress`` is already eV/Å³ with ASE's sign: colabfit-tools fills it
  from ``atoms.get_stress(voigt=False)`` (``colabfit/tools/vast/property.py``), and its
  property definition says ``volume-normalized`` means "multiplied by the cell volume".
  Factor 1, with the ``cauchy_stress_volume_normalized`` column honoured.
* LeMaterial's OPTIMADE ``stress_tensor`` is the VASP stress as Materials Project and
  Alexandria report it (``lematerial-fetcher`` copies ``output.stress`` of the MP task):
  kBar with VASP's sign (positive under compression). ASE's own VASP readers convert it
  with ``-0.1 * GPa``; so does :data:`OPTIMADE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["COLABFIT", "FLAT", "OPTIMADE", "ColumnMapping", "detect_mapping"]

_GPA = 1.0 / 160.21766208  # eV/Å³ per GPa (ase.units.GPa, CODATA 2014)


def _frozen(value: Mapping[str, str] | None, what: str) -> Mapping[str, str]:
    items = dict(value or {})
    for name, column in items.items():
        if not isinstance(name, str) or not isinstance(column, str) or not name or not column:
            raise TypeError(f"ColumnMapping.{what} maps names to column names (both non-empty str)")
    return MappingProxyType(items)


@dataclass(frozen=True)
class ColumnMapping:
    """Which dataset column holds each part of a frame.

    >>> m = ColumnMapping(positions="pos", numbers="z", calc={"energy": "e"})
    >>> ColumnMapping.from_dict(m.to_dict()) == m
    True

    ``numbers`` may hold atomic numbers or chemical symbols; ``cell`` a 3x3 matrix or 9 values
    (rows are the lattice vectors; a vector of nulls, OPTIMADE's for a non-periodic direction,
    is a zero vector), ``pbc`` three booleans, OPTIMADE-style ``dimension_types`` (0/1), or one
    boolean per row for all three directions (as ASE's ``pbc=True``). Per-atom ``calc`` results
    must have the shape ASE gives them (forces (n_atoms, 3) ...). ``calc``, ``info`` and
    ``arrays`` map a result, info or per-atom array name to a column. Columns not mapped and not
    in ``exclude`` land in ``info.<column>``. ``cell`` and ``pbc`` may be None (molecules).
    ``required`` lists the flat keys whose column must exist (default: every ``calc``, ``info``
    and ``arrays`` entry); positions and numbers are always required, and a missing required
    column is an error listing the available ones. Other mapped columns (by default ``cell`` and
    ``pbc``) are read where the dataset has them. With ``flat=True`` the columns are named by
    flat keys (``arrays.positions``, ``calc.energy`` ...): the layout
    :func:`~asebytes_nodes.backends._arrow.write_parquet` writes, read back exactly.
    """

    positions: str = "positions"
    numbers: str = "numbers"
    cell: str | None = "cell"
    pbc: str | None = "pbc"
    calc: Mapping[str, str] = field(default_factory=dict)
    info: Mapping[str, str] = field(default_factory=dict)
    arrays: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] | None = None
    stress_factor: float = 1.0
    stress_volume_normalized: str | None = None
    flat: bool = False

    def __post_init__(self) -> None:
        for name in ("calc", "info", "arrays"):
            object.__setattr__(self, name, _frozen(getattr(self, name), name))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.required is not None:
            object.__setattr__(self, "required", tuple(self.required))
        object.__setattr__(self, "stress_factor", float(self.stress_factor))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:  # mappingproxy fields do not pickle themselves
        return (ColumnMapping.from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (recorded by caches to tell mappings apart)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnMapping:
        """The mapping :meth:`to_dict` described."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown ColumnMapping fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def mapped(self) -> dict[str, str]:
        """``{flat key: column}`` for every mapped part (not for flat mappings)."""
        out = {"arrays.positions": self.positions, "arrays.numbers": self.numbers}
        if self.cell is not None:
            out["cell"] = self.cell
        if self.pbc is not None:
            out["pbc"] = self.pbc
        for prefix, names in (("calc.", self.calc), ("info.", self.info), ("arrays.", self.arrays)):
            for name, column in names.items():
                out[prefix + name] = column
        return out

    def consumed(self) -> set[str]:
        """Columns that never land in ``info.*``: mapped, excluded or used as modifiers."""
        used = set(self.mapped().values()) | set(self.exclude)
        if self.stress_volume_normalized is not None:
            used.add(self.stress_volume_normalized)
        return used


FLAT = ColumnMapping(positions="arrays.positions", numbers="arrays.numbers", flat=True)
"""Columns named by flat keys: what :func:`write_parquet` writes."""

COLABFIT = ColumnMapping(
    positions="positions",
    numbers="atomic_numbers",
    cell="cell",
    pbc="pbc",
    calc={"energy": "energy", "forces": "atomic_forces", "stress": "cauchy_stress"},
    info={"configuration_id": "configuration_id"},
    required=(),
    stress_volume_normalized="cauchy_stress_volume_normalized",
)
"""ColabFit's configuration/property parquet schema (eV, eV/Å, eV/Å³)."""

OPTIMADE = ColumnMapping(
    positions="cartesian_site_positions",
    numbers="species_at_sites",
    cell="lattice_vectors",
    pbc="dimension_types",
    calc={"energy": "energy", "forces": "forces", "stress": "stress_tensor"},
    required=(),
    stress_factor=-0.1 * _GPA,
)
"""LeMaterial's OPTIMADE sets (LeMat-Bulk): symbols, lattice vectors, kBar VASP stress."""


def detect_mapping(columns: Iterable[str]) -> ColumnMapping | None:
    """The built-in mapping whose signature columns are all present, or None.

    Flat-key columns win, then ColabFit, then OPTIMADE.
    """
    present = set(columns)
    if {"arrays.positions", "arrays.numbers", "_asebytes_nodes_layout"} & present:
        return FLAT
    if {"atomic_numbers", "positions"} <= present:
        return COLABFIT
    if {"cartesian_site_positions", "species_at_sites"} <= present:
        return OPTIMADE
    return None

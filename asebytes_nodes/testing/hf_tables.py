"""Frames as tables in the column schemas of public datasets, for offline tests and benchmarks.

:func:`colabfit_table` follows ColabFit's parquet exports on the Hub (``colabfit/*``):
``positions``, ``atomic_numbers``, ``cell``, ``pbc``, ``energy`` (eV), ``atomic_forces``
(eV/Å), ``cauchy_stress`` (3x3, eV/Å³, ASE's sign, as colabfit-tools stores
``atoms.get_stress(voigt=False)``), ``cauchy_stress_volume_normalized`` and ids.
:func:`optimade_table` follows LeMaterial's OPTIMADE sets (``LeMaterial/LeMat-Bulk``):
``cartesian_site_positions``, ``species_at_sites`` (symbols), ``lattice_vectors``,
``dimension_types``, ``energy``, ``forces`` and ``stress_tensor`` (3x3, kBar, VASP's
sign). Nested columns are variable-size lists, as in those files. Results are taken from
``atoms.calc.results``; frames without a result get a null in its column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import GPa

__all__ = ["colabfit_table", "optimade_table"]


def _lists(arrays: Sequence[np.ndarray | None], width: int, leaf: pa.DataType) -> pa.Array:
    """``list<list<leaf>>`` (width > 0) or ``list<leaf>`` (width 0) from per-row arrays; None -> null."""
    present = np.array([a is not None for a in arrays])
    given = [np.asarray(a) for a in arrays if a is not None]
    flat = np.concatenate([a.reshape(-1) for a in given]) if given else np.zeros(0)
    values: pa.Array = pa.array(flat, type=leaf)
    lengths = np.zeros(len(arrays), dtype=np.int32)
    lengths[present] = [a.size // max(width, 1) for a in given]
    if width:
        inner = np.arange(0, len(flat) + 1, width, dtype=np.int32)
        values = pa.ListArray.from_arrays(pa.array(inner), values)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~present))


def _result(atoms: Atoms, name: str) -> Any:
    results = atoms.calc.results if atoms.calc is not None else {}
    return results.get(name)


def _stress_3x3(atoms: Atoms) -> np.ndarray | None:
    stress = _result(atoms, "stress")
    if stress is None:
        return None
    stress = np.asarray(stress)
    return voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress


def colabfit_table(frames: Sequence[Atoms], volume_normalized: Sequence[bool] | None = None) -> pa.Table:
    """Frames in ColabFit's schema; ``volume_normalized[i]`` stores frame i's stress times its volume."""
    n = len(frames)
    flags = list(volume_normalized) if volume_normalized is not None else [False] * n
    stress = [_stress_3x3(a) for a in frames]
    stress = [s * a.get_volume() if s is not None and f else s
              for s, a, f in zip(stress, frames, flags, strict=True)]
    return pa.table({
        "property_id": [f"PO_{i}" for i in range(n)],
        "dataset_id": ["DS_test_0"] * n,
        "configuration_id": [f"CO_{i}" for i in range(n)],
        "software": ["ASE"] * n,
        "energy": pa.array([_result(a, "energy") for a in frames], pa.float64()),
        "atomic_forces": _lists([_result(a, "forces") for a in frames], 3, pa.float64()),
        "cauchy_stress": _lists(stress, 3, pa.float64()),
        "cauchy_stress_volume_normalized": pa.array(flags, pa.bool_()),
        "cell": _lists([a.cell.array for a in frames], 3, pa.float64()),
        "positions": _lists([a.positions for a in frames], 3, pa.float64()),
        "pbc": _lists([a.pbc for a in frames], 0, pa.bool_()),
        "atomic_numbers": _lists([a.numbers for a in frames], 0, pa.int32()),
        "nsites": pa.array([len(a) for a in frames], pa.int32()),
        "chemical_formula_hill": [a.get_chemical_formula(mode="hill") for a in frames],
        "names": pa.array([[f"frame {i}", "test"] for i in range(n)], pa.list_(pa.string())),
        "last_modified": pa.array(np.full(n, np.datetime64("2025-04-16T16:54:34", "us"))),
    })


def optimade_table(frames: Sequence[Atoms]) -> pa.Table:
    """Frames in LeMaterial's OPTIMADE schema (stress in kBar with VASP's sign)."""
    kbar = 0.1 * GPa  # eV/Å³ per kBar
    stress = [_stress_3x3(a) for a in frames]
    return pa.table({
        "immutable_id": [f"agm{i:06d}" for i in range(len(frames))],
        "cartesian_site_positions": _lists([a.positions for a in frames], 3, pa.float64()),
        "species_at_sites": pa.array([a.get_chemical_symbols() for a in frames], pa.list_(pa.string())),
        "lattice_vectors": _lists([a.cell.array for a in frames], 3, pa.float64()),
        "dimension_types": _lists([a.pbc.astype(np.int8) for a in frames], 0, pa.int8()),
        "nsites": pa.array([len(a) for a in frames], pa.int32()),
        "energy": pa.array([_result(a, "energy") for a in frames], pa.float64()),
        "forces": _lists([_result(a, "forces") for a in frames], 3, pa.float64()),
        "stress_tensor": _lists([None if s is None else -s / kbar for s in stress], 3, pa.float64()),
        "functional": ["pbe"] * len(frames),
    })

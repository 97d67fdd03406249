"""Deterministic benchmark datasets: lists of ``ase.Atoms`` with single-point results."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

__all__ = ["ethanol", "periodic", "tiny", "random_indices"]

SEED = 42

# (symbol, crystal structure, lattice constant in Å): primitive cells of 1 or 2 atoms.
_CRYSTALS: tuple[tuple[str, str, float], ...] = (
    ("Cu", "fcc", 3.61),
    ("Al", "fcc", 4.05),
    ("Fe", "bcc", 2.87),
    ("Si", "diamond", 5.43),
    ("NaCl", "rocksalt", 5.64),
    ("MgO", "rocksalt", 4.21),
)


def _attach_results(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Attach a SinglePointCalculator with random energy, forces and stress."""
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(rng.normal(-4.0 * len(atoms), 1.0)),
        forces=rng.normal(0.0, 0.5, (len(atoms), 3)),
        stress=rng.normal(0.0, 0.01, 6),
    )
    return atoms


def _displaced(name: str, n: int, sigma: float, rng: np.random.Generator) -> list[Atoms]:
    """``n`` copies of molecule ``name`` with Gaussian displacements of width ``sigma`` Å."""
    base = molecule(name)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        frames.append(atoms)
    return frames


def ethanol(n: int, seed: int = SEED) -> list[Atoms]:
    """``n`` ethanol conformers displaced by ~0.05 Å, with energy, forces, stress and info."""
    rng = np.random.default_rng(seed)
    frames = _displaced("CH3CH2OH", n, 0.05, rng)
    for i, atoms in enumerate(frames):
        atoms.info = {"smiles": "CCO", "index": i, "temperature": float(rng.uniform(250, 350))}
        _attach_results(atoms, rng)
    return frames


def _periodic_frame(rng: np.random.Generator) -> Atoms:
    """One rattled, sheared bulk crystal trimmed to 2..200 atoms."""
    symbol, structure, a = _CRYSTALS[rng.integers(len(_CRYSTALS))]
    target = int(rng.integers(2, 201))
    prim = bulk(symbol, structure, a=a)
    reps = int(np.ceil((target / len(prim)) ** (1 / 3)))
    atoms = prim.repeat((reps, reps, reps))
    del atoms[target:]
    shear = np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))
    atoms.set_cell(atoms.cell[:] @ shear, scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    atoms.pbc = True
    return _attach_results(atoms, rng)


def periodic(n: int, seed: int = SEED) -> list[Atoms]:
    """``n`` periodic structures of 2 to 200 atoms with non-orthogonal cells."""
    rng = np.random.default_rng(seed)
    return [_periodic_frame(rng) for _ in range(n)]


def tiny(n: int, seed: int = SEED) -> list[Atoms]:
    """``n`` two-atom molecules (H2) with an energy: small rows for lookup scaling."""
    rng = np.random.default_rng(seed)
    frames = _displaced("H2", n, 0.01, rng)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()))
    return frames


def random_indices(n_rows: int, count: int, seed: int = SEED) -> np.ndarray:
    """``count`` random row indices in ``range(n_rows)``, distinct when ``count <= n_rows``."""
    rng = np.random.default_rng(seed)
    return rng.choice(n_rows, size=count, replace=count > n_rows)

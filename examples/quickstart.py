"""Quickstart: simulate a small EMT trajectory, store it in LMDB, read it back lazily.

Run: python examples/quickstart.py [output.lmdb]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from asebytes_nodes import ASEIO


def simulate(n_frames: int = 200, seed: int = 0) -> list[Atoms]:
    """Frames of a copper crystal under velocity-Verlet MD with ASE's EMT calculator."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
    frames = []
    for step in range(n_frames):
        dyn.run(1)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(
            frame,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        frame.info["step"] = step
        frames.append(frame)
    return frames


def main(path: Path) -> None:
    frames = simulate()
    with ASEIO(path) as db:
        db.extend(frames)
    with ASEIO(path, readonly=True) as db:
        energies = db["calc.energy"].to_numpy()
        forces = db["calc.forces"].to_numpy()
        print(f"{path}: {len(db)} frames, keys: {', '.join(db.columns)}")
        print(f"energy: mean {energies.mean():.4f} eV, spread {np.ptp(energies):.4f} eV")
        print(f"max force norm: {np.linalg.norm(forces, axis=-1).max():.3f} eV/A")
        print(f"last frame: {db[-1]}, step {db[-1].info['step']}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp) / "quickstart.lmdb")

"""Make the example pipeline's default dataset: EMT molecular dynamics of five small metal systems.

    python workflows/make_dataset.py [output.extxyz]

Writes ``workflows/data/emt-md.extxyz`` (about 2 MB, committed to git so that ``dvc repro``
works on a fresh clone without network). Each system runs Langevin dynamics with ASE's EMT
calculator from a seeded start; every 5th step is kept with its energy, forces, stress
(periodic systems), momenta and ``info`` labels. The systems differ in size, composition and
periodicity, so the Subset filters (atom count, elements, energy per atom, force) have
something to choose from. The same command always writes the same frames on one machine;
last digits may differ between machines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

OUTPUT = Path(__file__).parent / "data" / "emt-md.extxyz"
FRAMES_PER_SYSTEM = 100
STEPS_PER_FRAME = 5


def systems() -> list[tuple[str, Atoms, float]]:
    """(label, starting structure, temperature in K) of every trajectory."""
    rng = np.random.default_rng(7)
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    vacancy = copper.copy()
    del vacancy[0]
    alloy = copper.copy()
    alloy.symbols[rng.choice(len(alloy), 8, replace=False)] = "Au"
    slab = fcc111("Ag", size=(3, 3, 3), vacuum=6.0)
    slab.info.clear()  # fcc111 records adsorption sites, which extxyz cannot write
    cluster = Icosahedron("Pt", noshells=2)
    cluster.center(vacuum=5.0)
    return [
        ("Cu bulk", copper, 300.0),
        ("Cu vacancy", vacancy, 600.0),
        ("CuAu alloy", alloy, 500.0),
        ("Ag(111) slab", slab, 400.0),
        ("Pt13 cluster", cluster, 700.0),
    ]


def trajectory(label: str, atoms: Atoms, temperature: float, seed: int) -> list[Atoms]:
    """FRAMES_PER_SYSTEM snapshots of a Langevin run, each with a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    frames = []
    for frame in range(FRAMES_PER_SYSTEM):
        dynamics.run(STEPS_PER_FRAME)
        snapshot = atoms.copy()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        snapshot.calc = SinglePointCalculator(snapshot, **results)
        snapshot.info.update(system=label, step=(frame + 1) * STEPS_PER_FRAME, temperature_K=temperature)
        frames.append(snapshot)
    return frames


def main(output: Path = OUTPUT) -> None:
    frames = [
        frame
        for seed, (label, atoms, temperature) in enumerate(systems())
        for frame in trajectory(label, atoms, temperature, seed)
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    write(output, frames, format="extxyz")
    print(f"{len(frames)} frames -> {output} ({output.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)

"""``asebytes-nodes bench``: the backends side by side on a user's frames or a built-in dataset.

The measurement is the one the :class:`~asebytes_nodes.nodes.Benchmark` node runs
(:func:`asebytes_nodes.nodes._bench.benchmark`); this module only picks the frames and
prints the table. The built-in datasets are made here, with random but seeded values.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

__all__ = ["builtin_frames", "print_bench"]

_CRYSTALS = (("Cu", "fcc", 3.61), ("Si", "diamond", 5.43), ("NaCl", "rocksalt", 5.64))
_BACKENDS = ("lmdb", "zarr", "h5md")


def builtin_frames(name: str, n: int, seed: int = 0) -> list[Any]:
    """``n`` seeded frames with energy, forces and stress: ``ethanol`` (9 atoms, no cell)
    or ``periodic`` (rattled bulk crystals of 2 to 108 atoms)."""
    from ase.build import bulk, molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        if name == "ethanol":
            atoms = molecule("CH3CH2OH")
        elif name == "periodic":
            symbol, kind, a = _CRYSTALS[i % len(_CRYSTALS)]
            reps = rng.integers(1, 4, 3)
            atoms = bulk(symbol, kind, a=a, cubic=True).repeat(tuple(int(r) for r in reps))
        else:
            raise ValueError(f"unknown built-in dataset {name!r}; use 'ethanol' or 'periodic'")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info["index"] = i
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal(-4.0 * len(atoms), 1.0)),
            forces=rng.normal(0.0, 0.5, (len(atoms), 3)),
            stress=rng.normal(0.0, 0.01, 6),
        )
        frames.append(atoms)
    return frames


def print_bench(args: argparse.Namespace) -> None:
    """Run the benchmark the command line asked for and print a Markdown table (or JSON)."""
    from .io import ASEIO
    from .nodes._bench import benchmark, markdown_table
    from .nodes._config import BenchmarkConfig, StoreSpec

    if args.path:
        frames = ASEIO(args.path, readonly=True)
    else:
        frames = ASEIO("memory://")
        frames.extend(builtin_frames(args.dataset, args.frames))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in _BACKENDS]
    if unknown or not backends:
        raise ValueError(f"--backends takes a comma-separated list of {', '.join(_BACKENDS)}; got {unknown}")
    config = BenchmarkConfig(
        backends={b: StoreSpec(backend=b) for b in backends},
        max_frames=args.frames,
        n_random=min(200, args.frames),
    )
    results = benchmark(frames, config)
    print(json.dumps(results, indent=2) if args.json else markdown_table(results))

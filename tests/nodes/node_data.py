"""Test data for the node tests: mixed frames, and a skip mark for the H5MD backend."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes.testing.frames import make_frames


def _h5md_writable() -> bool:
    try:
        from asebytes_nodes.backends.h5md import H5MDBackend
    except ImportError:
        return False
    return not inspect.isabstract(H5MDBackend)


needs_h5md = pytest.mark.skipif(not _h5md_writable(), reason="no writable H5MD backend in this checkout")


def mixed_frames() -> list[Atoms]:
    """Frames that every filter can tell apart: sizes 0-16 atoms, H/C/N/O/Cu/Au/Ar, some
    without energy or forces, energies and forces spread over a known range."""
    rng = np.random.default_rng(3)
    frames: list[Atoms] = []
    for i in range(24):
        atoms = (
            bulk("Cu", cubic=True).repeat((1, 1, 1 + i % 4))
            if i % 3
            else molecule(("H2O", "CH4", "NH3")[i % 3])
        )
        if i % 5 == 0:
            atoms.symbols[0] = "Au"
        n = len(atoms)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(rng.uniform(-3, 1) * n), forces=rng.normal(0, 0.5 + i % 6, (n, 3))
        )
        atoms.info["i"] = i
        frames.append(atoms)
    frames += (
        make_frames("no_calculator") + make_frames("empty_and_single") + make_frames("keys_on_some_frames")
    )
    return frames

"""The batch contract (``to_batch``, ``batches``, ``atoms=``) on every writable backend and MDTraj.

Stores are built the way the backends' own contract tests build them. MDTraj holds one atom
count and float32 values, so it runs on frames that survive float32 exactly and skips the
ragged and sparse tests by its hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO, MemoryBackend
from asebytes_nodes.backends._base import ReadableBackend
from asebytes_nodes.testing.batches import BatchContract
from asebytes_nodes.testing.contract import StoreFactory


class PathStore(StoreFactory):
    """A store at a path, written through ``ASEIO`` and reopened with the backend's class."""

    def __init__(self, path: Path, backend: str, **options: Any) -> None:
        self.path, self.backend, self.options = path, backend, options

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path, backend=self.backend, **self.options) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> ReadableBackend:
        return ASEIO(self.path, backend=self.backend, readonly=readonly, **self.options).backend


class MemoryStore(StoreFactory):
    def __init__(self) -> None:
        self.backend = MemoryBackend()

    def seed(self, frames: list[Atoms]) -> None:
        ASEIO(self.backend).extend(frames)

    def open(self, readonly: bool = False) -> MemoryBackend:
        handle = MemoryBackend(readonly=readonly)
        handle._rows = self.backend._rows
        return handle


class TestMemoryBatches(BatchContract):
    @pytest.fixture
    def store(self) -> StoreFactory:
        return MemoryStore()


class TestLMDBBatches(BatchContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return PathStore(tmp_path / "frames.lmdb", "lmdb")


class TestZarrBatches(BatchContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        pytest.importorskip("zarr")
        return PathStore(tmp_path / "frames.zarr", "zarr")


class TestZarrUncachedBatches(BatchContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        pytest.importorskip("zarr")
        return PathStore(tmp_path / "frames.zarr", "zarr", cache_bytes=0, compressor="gzip")


class TestH5MDBatches(BatchContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        pytest.importorskip("h5py")
        return PathStore(tmp_path / "frames.h5", "h5md")


def mdtraj_frames(n: int = 5) -> list[Atoms]:
    """Ethanol frames whose values survive MDTraj's float32 nm/ps/kJ-mol storage exactly."""
    out = []
    for i in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions = np.round(atoms.positions / 0.15625) * 0.15625 + 0.625 * i
        atoms.cell, atoms.pbc = np.diag([10.0, 12.5, 15.0 + 2.5 * i]), True
        atoms.info.update({"time": 0.5 * i})
        atoms.calc = SinglePointCalculator(atoms, energy=(i - 2) * 0.75 * units.kJ / units.mol)
        out.append(atoms)
    return out


class TestMDTrajBatches(BatchContract):
    """Fixed topology only: no variable atom counts, no keys on some frames."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        pytest.importorskip("h5py")
        return PathStore(tmp_path / "traj.h5", "mdtraj")

    def fixed_frames(self) -> list[Atoms]:
        return mdtraj_frames()

    def ragged_frames(self) -> list[Atoms] | None:
        return None

    def sparse_frames(self) -> list[Atoms] | None:
        return None

    def typed_frames(self) -> list[Atoms] | None:
        return None

"""The contract suite on the H5MD backend, plus its layout promises (H5MD 1.1 elements, padding,
name clashes, options, failed writes, handles across pickling and forks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

h5py = pytest.importorskip("h5py")

from asebytes_nodes import ASEIO  # noqa: E402
from asebytes_nodes.backends._h5md import H5MDBackend  # noqa: E402
from asebytes_nodes.testing.contract import StoreFactory, WritableContract  # noqa: E402


class H5MDStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> H5MDBackend:
        return H5MDBackend(self.path, readonly=readonly)


class TestH5MDContract(WritableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return H5MDStore(tmp_path / "frames.h5")

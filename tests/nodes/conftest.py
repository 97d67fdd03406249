"""Fixtures of the node tests: the mixed frames of :mod:`node_data`, stored in LMDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms
from node_data import mixed_frames

from asebytes_nodes import ASEIO


@pytest.fixture
def frames() -> list[Atoms]:
    return mixed_frames()


@pytest.fixture
def store(tmp_path: Path, frames: list[Atoms]) -> ASEIO:
    db = ASEIO(tmp_path / "mixed.lmdb")
    db.extend(frames)
    return db

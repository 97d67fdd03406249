"""The contract suite on the in-memory backend, plus its isolation guarantee."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ase import Atoms
from ase.build import molecule

from asebytes_nodes import ASEIO, MemoryBackend
from asebytes_nodes.testing.contract import StoreFactory, WritableContract
from asebytes_nodes.testing.properties import PropertyContract
from asebytes_nodes.testing.stateful import StatefulContract


class MemoryStore(StoreFactory):
    """One MemoryBackend; 'reopening' hands out the same rows through a new handle."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()

    def seed(self, frames: list[Atoms]) -> None:
        ASEIO(self.backend).extend(frames)

    def open(self, readonly: bool = False) -> MemoryBackend:
        handle = MemoryBackend(readonly=readonly)
        handle._rows = self.backend._rows  # same rows, own read-only flag
        return handle


class TestMemoryContract(WritableContract):
    @pytest.fixture
    def store(self) -> StoreFactory:
        return MemoryStore()


class TestMemoryProperties(PropertyContract, StatefulContract):
    refuses_storable_values = False

    @pytest.fixture
    def make_store(self) -> Callable[[], StoreFactory]:
        return MemoryStore


def test_instances_are_isolated() -> None:
    a, b = ASEIO("memory://"), ASEIO("memory://")
    a.append(molecule("H2O"))
    assert (len(a), len(b)) == (1, 0)
    assert len(ASEIO(MemoryBackend())) == 0

"""A user backend written as the README says: ``read_rows`` gets checked, in-range row numbers.

A view made before a delete holds row numbers past the end; views check them for a backend that
deletes rows without declaring ``checks_rows``, so the user's ``rows[i]`` never meets them and the
shipped ``WritableContract`` (``test_delete``) passes.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from asebytes_nodes import (
    ASEIO,
    ReadableBackend,
    ReadOnlyError,
    RowIndexError,
    WritableBackend,
    atoms_to_dict,
    list_backends,
    register_backend,
    registry,
)
from asebytes_nodes.backends import LMDBBackend, MemoryBackend
from asebytes_nodes.testing.contract import StoreFactory, WritableContract

_STORES: dict[str, list[dict[str, Any]]] = {}


class PlainRows(WritableBackend):
    """Rows in a shared dict of lists; reads index the list without any check."""

    supports_delete = True

    def __init__(self, target: str, *, readonly: bool = False) -> None:
        self.readonly = readonly
        self.rows = _STORES.setdefault(target, [])

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        picked = [self.rows[int(i)] for i in indices]  # a row past the end: a bare IndexError
        return [copy.deepcopy({k: v for k, v in r.items() if keys is None or k in keys}) for r in picked]

    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        self.rows.extend(copy.deepcopy(dict(r)) for r in rows)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        for i, row in zip(indices, rows, strict=True):
            self.rows[int(i)] = copy.deepcopy(dict(row))

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        for i, update in zip(indices, updates, strict=True):
            self.rows[int(i)] = {**self.rows[int(i)], **copy.deepcopy(dict(update))}

    def delete_rows(self, indices: Sequence[int] | np.ndarray) -> None:
        self._check_writable()
        drop = {int(i) for i in indices}
        self.rows[:] = [r for j, r in enumerate(self.rows) if j not in drop]


class PlainStore(StoreFactory):
    def __init__(self, name: str) -> None:
        self.name = name

    def seed(self, frames: list[Atoms]) -> None:
        _STORES[self.name] = []
        ASEIO(PlainRows(self.name)).extend(frames)

    def open(self, readonly: bool = False) -> PlainRows:
        return PlainRows(self.name, readonly=readonly)


class TestPlainRowsContract(WritableContract):
    @pytest.fixture
    def store(self, request: pytest.FixtureRequest) -> StoreFactory:
        return PlainStore(request.node.name)


def test_stale_views_raise_row_index_error_on_every_read() -> None:
    _STORES["stale"] = []
    db = ASEIO(PlainRows("stale"))
    db.extend([molecule("H2O"), molecule("CH4"), molecule("NH3")])
    tail, column, pair = db[1:], db["arrays.numbers"][1:], db[["arrays.numbers", "cell"]][1:]
    del db[0]
    reads = (
        tail.to_list,
        lambda: tail[1],
        lambda: tail.to_batch(["arrays.positions"]),
        lambda: next(tail.batches(2)),
        column.to_list,
        column.to_numpy,
        lambda: column[-1],
        pair.to_list,
    )
    for read in reads:
        with pytest.raises(RowIndexError, match=r"^row 2 is out of range for 2 rows \(were rows deleted"):
            read()
    assert [a.get_chemical_formula() for a in tail[:1]] == ["H3N"]  # row 1 (now NH3) is still there


def test_builtin_deleting_backends_check_rows_themselves() -> None:
    assert MemoryBackend.checks_rows and LMDBBackend.checks_rows and not PlainRows.checks_rows


class ReadOnlyRows(ReadableBackend):
    """A backend that can never write: always read-only, like the hf backend, whatever it is asked."""

    name = "readonlyrows"

    def __init__(self, target: str, *, readonly: bool = False) -> None:
        self.readonly = True
        self.rows = [atoms_to_dict(molecule("H2O"))]

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return [{k: v for k, v in self.rows[int(i)].items() if keys is None or k in keys} for i in indices]


def test_a_backend_that_cannot_write_says_so_whatever_readonly_says() -> None:
    db = ASEIO(ReadOnlyRows("x", readonly=False))
    with pytest.raises(
        ReadOnlyError, match=r"^the readonlyrows backend reads stores but does not write them"
    ):
        db.append(molecule("H2O"))


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved, loaded = dict(registry._TABLE), registry._plugins_loaded
    yield
    registry._TABLE.clear()
    registry._TABLE.update(saved)
    registry._plugins_loaded = loaded


def test_a_class_without_its_own_name_takes_the_registered_one(
    tmp_path: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It reported its parent's name ("custom", "memory") in backend.name, info and cache records."""

    class Mine(MemoryBackend):
        extensions = (".mine65",)
        schemes = ()

    assert register_backend(Mine).name == "Mine" and Mine().name == "Mine"
    assert MemoryBackend.name == "memory"
    (tmp_path / "plug65.py").write_text(
        "from asebytes_nodes import ReadableBackend\n"
        "class Nameless(ReadableBackend):\n"
        "    schemes = ('nameless65',)\n"
        "    def __init__(self, target, *, readonly=False):\n"
        "        self.readonly = True\n"
        "    def __len__(self):\n"
        "        return 0\n"
        "    def read_rows(self, indices, keys=None):\n"
        "        return []\n"
    )
    dist = tmp_path / "plug65-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug65\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[asebytes_nodes.backends]\nepname65 = plug65:Nameless\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugins_loaded = False
    try:
        db = ASEIO("nameless65://x")
        assert db.backend.name == "epname65" and list_backends()["epname65"].schemes == ("nameless65",)
        assert ReadableBackend.name == "custom"
    finally:
        sys.modules.pop("plug65", None)


def test_a_subclass_of_a_class_the_registry_named_registers_under_its_own_name(clean_registry: None) -> None:
    """The name given to a registered class without one was inherited by its subclasses (ca8db2b)."""

    class Base(MemoryBackend):
        extensions = (".base67",)
        schemes = ()

    class Child(Base):
        extensions = (".child67",)

    register_backend(Base)
    assert register_backend(Child).name == "Child"
    assert (Base().name, Child().name, MemoryBackend.name) == ("Base", "Child", "memory")

"""Several isolated datasets in one store: ``ASEIO(path, group=...)`` and ``ASEIO.list_groups``.

The file-backed tests run on every registered backend whose ``supports_groups`` is True.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import write

from asebytes_nodes import (
    ASEIO,
    BackendEntry,
    InvalidDataError,
    MemoryBackend,
    MissingExtraError,
    StoreNotFoundError,
    UnsupportedOperationError,
    register_backend,
    registry,
)
from asebytes_nodes.cli import info


def _grouped_backends() -> list[Any]:
    found = []
    for entry in registry._BUILTIN:
        try:
            cls = entry.load()
        except MissingExtraError:
            continue
        if cls.supports_groups:
            found.append(pytest.param(entry, id=entry.name))
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no backend supports groups yet"))]


class GroupedMemory(MemoryBackend):
    """Records what the registry passes to a backend with groups."""

    name = "grouped"
    supports_groups = True

    def __init__(self, target: str | None = None, *, readonly: bool = False, **options: Any) -> None:
        super().__init__(target, readonly=readonly)
        self.options = options


@pytest.fixture
def grouped_scheme() -> Iterator[str]:
    saved = dict(registry._TABLE)
    register_backend(BackendEntry(name="grouped", target=GroupedMemory, schemes=("grouped",)))
    yield "grouped://"
    registry._TABLE.clear()
    registry._TABLE.update(saved)


def test_group_reaches_the_constructor_only_when_given(grouped_scheme: str) -> None:
    assert ASEIO(grouped_scheme, group="train").backend.options == {"group": "train"}  # type: ignore[attr-defined]
    assert ASEIO(grouped_scheme).backend.options == {}  # type: ignore[attr-defined]
    assert ASEIO(grouped_scheme, group=None).backend.options == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "tr ain", "ü", "a\x00", 3])
def test_invalid_group_names_are_refused(grouped_scheme: str, name: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"grouped://: invalid group name"):
        ASEIO(grouped_scheme, group=name)


def test_backends_without_groups_refuse_group(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperationError, match=r"memory://: the memory backend .* group 'train'"):
        ASEIO("memory://", group="train")
    path = tmp_path / "frames.xyz"
    write(path, molecule("H2O"))
    with pytest.raises(UnsupportedOperationError, match="the ase backend"):
        ASEIO(path, group="train")
    with pytest.raises(TypeError, match="backend instance"):
        ASEIO(MemoryBackend(), group="train")
    assert ASEIO.list_groups("memory://") == []
    assert ASEIO.list_groups(path) == []


def _frames(n: int, *, tag: str) -> list[Atoms]:
    frames = []
    for i in range(n):
        atoms = molecule("CH4" if i % 2 else "H2O")
        atoms.info[tag] = i
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("entry", _grouped_backends())
def test_groups_are_isolated(entry: BackendEntry, tmp_path: Path) -> None:
    path = tmp_path / f"store{entry.extensions[0]}"
    with ASEIO(path, backend=entry.name) as db:
        db.extend(_frames(2, tag="plain"))
    with ASEIO(path, backend=entry.name, group="train") as db:
        db.extend(_frames(3, tag="train_tag"))
    with ASEIO(path, backend=entry.name, group="test-1.b") as db:
        db.extend([Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 3.6, pbc=True)])

    assert ASEIO.list_groups(path, backend=entry.name) == ["test-1.b", "train"]
    assert ASEIO.list_groups(path) == ["test-1.b", "train"]
    plain = ASEIO(path, backend=entry.name, readonly=True)
    train = ASEIO(path, backend=entry.name, group="train", readonly=True)
    test = ASEIO(path, backend=entry.name, group="test-1.b", readonly=True)
    assert (len(plain), len(train), len(test)) == (2, 3, 1)
    assert "info.plain" in plain.columns and "info.train_tag" not in plain.columns
    assert "info.train_tag" in train.columns and "info.plain" not in train.columns
    assert "info.train_tag" not in test.columns
    assert [a.info["train_tag"] for a in train] == [0, 1, 2]
    assert test[0].get_chemical_formula() == "Cu"
    assert set(test.schema) == set(test.columns)
    assert pickle.loads(pickle.dumps(train)).columns == train.columns
    assert len(pickle.loads(pickle.dumps(train))) == 3
    assert info(str(path), entry.name)["groups"] == ["test-1.b", "train"]
    for db in (plain, train, test):
        db.close()


@pytest.mark.parametrize("entry", _grouped_backends())
def test_unknown_group_read_only_names_store_and_group(entry: BackendEntry, tmp_path: Path) -> None:
    path = tmp_path / f"store{entry.extensions[0]}"
    with ASEIO(path, backend=entry.name, group="train") as db:
        db.extend(_frames(1, tag="t"))
    with pytest.raises(StoreNotFoundError, match=r"(?s)(store.*nope|nope.*store)"):
        ASEIO(path, backend=entry.name, group="nope", readonly=True)
    with pytest.raises(InvalidDataError, match="invalid group name"):
        ASEIO(path, backend=entry.name, group="../x")

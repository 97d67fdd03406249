"""A frame range or slice that picks no row of a non-empty source is refused, naming it: Load with
``frames: {start: 100}`` on 10 frames wrote an empty store and the stages after it ran on nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO
from asebytes_nodes.errors import RowIndexError
from asebytes_nodes.nodes import LoadConfig, SubsetConfig
from asebytes_nodes.nodes._select import select_rows
from asebytes_nodes.nodes.load import load_frames


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "ten.lmdb"
    ASEIO(path).extend([molecule("H2O") for _ in range(10)])
    return path


def test_load_refuses_a_range_past_the_end(source: Path, tmp_path: Path) -> None:
    config = LoadConfig.model_validate({"frames": {"start": 100}})
    with pytest.raises(RowIndexError, match="the slice 100: picks none of the 10 upstream frames"):
        load_frames(str(source), config, tmp_path / "out.lmdb")
    assert not (tmp_path / "out.lmdb").exists()
    ok = LoadConfig.model_validate({"frames": {"start": 8}})
    assert load_frames(str(source), ok, tmp_path / "two.lmdb") == 2


def test_subset_refuses_a_slice_that_picks_nothing(source: Path) -> None:
    frames = ASEIO(source, readonly=True)
    with pytest.raises(RowIndexError, match="the slice 50:60 picks none of the 10"):
        select_rows(frames, SubsetConfig.model_validate({"slice": {"start": 50, "stop": 60}}))
    assert select_rows(frames, SubsetConfig.model_validate({"slice": {"start": 8}})).tolist() == [8, 9]
    empty = ASEIO(source.parent / "empty.lmdb")
    empty.extend([])
    assert len(select_rows(empty, SubsetConfig.model_validate({"slice": {"start": 5}}))) == 0

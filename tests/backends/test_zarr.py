"""The contract suite on the Zarr backend, plus its layout promises (ragged, few files, versions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

zarr = pytest.importorskip("zarr")

from asebytes_nodes import ASEIO, FormatVersionError, InvalidDataError, ZarrBackend  # noqa: E402
from asebytes_nodes.testing.contract import StoreFactory, WritableContract  # noqa: E402
from asebytes_nodes.testing.frames import make_frames  # noqa: E402


class ZarrStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> ZarrBackend:
        return ZarrBackend(self.path, readonly=readonly)


class TestZarrContract(WritableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ZarrStore(tmp_path / "frames.zarr")


def test_ragged_without_padding(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    db = ASEIO(tmp_path / "r.zarr")
    db.extend(frames)
    group = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    spec = group.attrs["asebytes_nodes"]["columns"]["arrays.positions"]
    assert group[spec["id"] + "/values"].shape == (sum(len(a) for a in frames), 3)
    np.testing.assert_array_equal(group["n_atoms"][:], [len(a) for a in frames])


def test_conflicting_column_is_refused_before_writing(tmp_path: Path) -> None:
    frames = make_frames("ethanol")
    db = ASEIO(tmp_path / "c.zarr")
    db.extend(frames[:2])
    bad = make_frames("ethanol")[2]
    bad.info["index"] = "two"  # stored as int
    with pytest.raises(InvalidDataError, match=r"'info.index'.*str"):
        db.extend([frames[3], bad])
    assert len(ASEIO(tmp_path / "c.zarr", readonly=True)) == 2


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.zarr"
    ASEIO(path).extend(make_frames("ethanol")[:1])
    group = zarr.open_group(str(path), mode="a")
    meta = dict(group.attrs["asebytes_nodes"])
    group.attrs["asebytes_nodes"] = {**meta, "version": 99}
    with pytest.raises(FormatVersionError, match="version 99"):
        ASEIO(path)

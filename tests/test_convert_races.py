"""A conversion's copy and destination meet other processes: the copy removed or replaced while it
is written (a cleanup in another PID namespace, a user) fails the conversion instead of handing
over fewer frames; a destination another conversion made meanwhile is not replaced without
``overwrite=True``."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, convert
from asebytes_nodes.backends import MemoryBackend
from asebytes_nodes.errors import DestinationExistsError, StoreCorruptedError


class _Meddling(MemoryBackend):
    """Frames in memory; after the first chunk is read, ``act()`` runs once (another process)."""

    def __init__(self, rows: list[Any], act: Callable[[], None]) -> None:
        super().__init__()
        self.extend(rows)
        self._act, self._reads = act, 0

    def read_rows(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None) -> list[Any]:
        self._reads += 1
        if self._reads == 2:
            self._act()
        return super().read_rows(indices, keys)


def _source(act: Callable[[], None]) -> ASEIO:
    frames = ASEIO("memory://")
    frames.extend([molecule("H2O") for _ in range(300)])
    return ASEIO(_Meddling(frames.backend.read_rows(range(300)), act))


def _copies(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_a_copy_removed_while_written_fails_the_conversion(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("h5py" if suffix == ".h5" else "lmdb" if suffix == ".lmdb" else "zarr")

    def remove_copy() -> None:
        for copy in _copies(tmp_path):
            shutil.rmtree(copy) if copy.is_dir() else copy.unlink()

    out = tmp_path / f"out{suffix}"
    with pytest.raises((StoreCorruptedError, OSError)) as caught:
        convert(_source(remove_copy), out, chunk_size=100, show_progress=False)
    assert not out.exists(), f"a store with fewer frames was handed over: {caught.value}"


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_a_destination_made_meanwhile_is_not_replaced(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("h5py" if suffix == ".h5" else "lmdb" if suffix == ".lmdb" else "zarr")
    out = tmp_path / f"out{suffix}"

    def other_conversion() -> None:
        ASEIO(out).extend([molecule("CH4")])  # finished first, into the same destination

    with pytest.raises(DestinationExistsError, match="another conversion made it meanwhile"):
        convert(_source(other_conversion), out, chunk_size=100, show_progress=False)
    assert [a.get_chemical_formula() for a in ASEIO(out, readonly=True)] == ["CH4"]
    assert _copies(tmp_path) == []


@pytest.mark.parametrize("suffix", [".lmdb", ".h5"])
def test_overwrite_replaces_an_empty_folder_and_a_dangling_link(tmp_path: Path, suffix: str) -> None:
    """After 3ccd546 both were refused as "another conversion made it meanwhile"."""
    pytest.importorskip("h5py" if suffix == ".h5" else "lmdb")
    source = tmp_path / "src.lmdb"
    ASEIO(source).extend([molecule("H2O")] * 3)
    empty = tmp_path / f"empty{suffix}"
    empty.mkdir()
    assert convert(source, empty, overwrite=True, show_progress=False) == 3
    assert len(ASEIO(empty, readonly=True)) == 3
    link = tmp_path / f"link{suffix}"
    link.symlink_to(tmp_path / "scratch" / f"out{suffix}")  # made before its target, as on clusters
    assert convert(source, link, show_progress=False) == 3
    assert len(ASEIO(link, readonly=True)) == 3


def test_with_overwrite_the_last_conversion_replaces_one_made_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "out.lmdb"

    def other_conversion() -> None:
        ASEIO(out).extend([molecule("CH4")])

    assert convert(_source(other_conversion), out, chunk_size=100, overwrite=True, show_progress=False) == 300
    assert len(ASEIO(out, readonly=True)) == 300


def test_a_copy_whose_files_vanish_while_looked_at_is_not_idle(tmp_path: Path) -> None:
    """Looking at another conversion's live Zarr copy raised FileNotFoundError (its temporary files
    are renamed away between the listing and the stat)."""
    from asebytes_nodes.transfer import _idle

    copy = tmp_path / ".a.partial-1-host.zarr"
    copy.mkdir()
    (copy / ".0.partial").symlink_to(tmp_path / "gone")  # listed, but gone once looked at
    assert _idle(copy) == 0.0
    assert _idle(tmp_path / "never-made.zarr") == 0.0

"""H5MD stores: a chunk HDF5's index no longer finds is an error, never fill values (issue 12).

HDF5 reads a chunk its index does not find as the fill value, without an error and without
reading a checksum. Matrix: a damaged key of the v1 B-tree of ``forces`` (the seed-1 case of
``hdf5kit.damage``: one bit of a key's last coordinate) read through the mirrors and with
``cache_bytes=0``, by row and by batch, and listed by ``check()``; stores whose chunks are
legitimately unwritten (the atom axis grew, a key added late, sparse updates) read exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import hdf5kit  # noqa: E402
from faultkit import flip_bit, versioned_frame  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402

FORCES = "/particles/atoms/forces/value"


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = hdf5kit.build(tmp_path_factory.mktemp("index") / "bad.h5", "h5md", 300)
    offset, row = hdf5kit.btree_key(path, FORCES, 6)
    flip_bit(path, offset + 4, 4)
    with h5py.File(path, "r") as f:  # what HDF5 alone gives: fill values, no error
        assert np.isnan(f[FORCES][row]).all()
    return path, row


@pytest.mark.parametrize("cache_bytes", [64 << 20, 0])
def test_damaged_index_key_is_an_error(damaged: tuple[Path, int], cache_bytes: int) -> None:
    path, row = damaged
    with ASEIO(path, backend="h5md", readonly=True, cache_bytes=cache_bytes) as db:
        assert db[row - 1].info["frame"] == row - 1  # chunks the index finds still read
        with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-"):
            db[row]
        with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-"):
            db.backend.read_batch([0, row], ["calc.forces"])
        assert db.backend.read_batch([row], ["calc.energy"])["calc.energy"].tolist() == [float(row)]
        problems = db.backend.check()
    assert problems and all(FORCES in p and f"rows {row}-" in p for p in problems), problems


def _frames() -> list:
    """Frames whose stores leave chunks unwritten: atom axis grows, keys come late or sparse."""
    frames = [versioned_frame(i) for i in range(600)]
    for i, atoms in enumerate(frames):
        if i < 300:
            atoms.calc = None  # forces, energy and their chunks start at row 300
        if i % 250 == 7:
            atoms.info["rare"] = float(i)
    return frames


@pytest.mark.parametrize("cache_bytes", [64 << 20, 0])
def test_unwritten_chunks_read_exactly(tmp_path: Path, cache_bytes: int) -> None:
    frames = _frames()
    path = tmp_path / "sparse.h5"
    with ASEIO(path, backend="h5md") as db:
        db.extend([a for a in frames[:300] if len(a) <= 3])  # narrow first: the atom axis grows later
        small = len(db)
        db.extend([a for a in frames[:300] if len(a) > 3] + frames[300:])
        db.backend.update_rows([5, len(db) - 1], [{"info.late": 1.0}, {"info.late": 2.0}])
    with h5py.File(path, "r") as f:  # the layouts this test is about
        forces = f[FORCES]
        assert forces.id.get_num_chunks() < np.prod(
            [-(-n // c) for n, c in zip(forces.shape, forces.chunks, strict=True)]
        )
    with ASEIO(path, backend="h5md", readonly=True, cache_bytes=cache_bytes) as db:
        got = list(db)
        assert db.backend.check() == []
        batch = db.backend.read_batch(np.arange(len(db))[::-1], ["arrays.positions"])
    assert len(got) == len(frames) and got[5].info["late"] == 1.0 and got[-1].info["late"] == 2.0
    assert sum("rare" in a.info for a in got) == sum("rare" in a.info for a in frames)
    assert sum(a.calc is not None for a in got) == 300
    assert len(batch["arrays.positions"]) == sum(len(a) for a in got)
    assert small < len(got)


def test_unwritten_presence_flags_read_as_absent(tmp_path: Path) -> None:
    """A key added to two rows 70,000 apart: the presence flags' middle chunk is never written
    (their True ones, counted, match the column table)."""
    row = {"arrays.numbers": np.array([1]), "arrays.positions": np.zeros((1, 3))}
    path = tmp_path / "flags.h5"
    with ASEIO(path, backend="h5md") as db:
        db.backend.extend([row] * 70000)
        db.backend.update_rows([0, 69999], [{"info.late": 1.0}, {"info.late": 2.0}])
    for cache_bytes in (64 << 20, 0):
        with ASEIO(path, backend="h5md", readonly=True, cache_bytes=cache_bytes) as db:
            late = db.backend.read_column("info.late", [0, 40000, 69999])
            assert [late[0], "info.late" in db.backend.read_row(40000), late[2]] == [1.0, False, 2.0]
    with ASEIO(path, backend="h5md", readonly=True) as db:
        assert db.backend.check() == []


N_ATOMS = "/parameters/asebytes_nodes/atoms/n_atoms"


def test_a_lost_chunk_of_a_small_dataset_is_asked_of_hdf5_and_an_error(tmp_path: Path) -> None:
    """A first frame confirms the one chunk of the atom counts through HDF5's own lookup (no
    chunk index of ours opened for it: 0.8 ms of a cold read); a key naming another chunk is
    still StoreCorruptedError, as HDF5 alone reads zeros."""
    path = hdf5kit.build(tmp_path / "s.h5", "h5md", 300)
    with ASEIO(path, readonly=True) as db:
        assert db[7].info["frame"] == 7
        assert db.backend._shared.found[N_ATOMS.lstrip("/")].index is True  # not opened
    offset, _ = hdf5kit.btree_key(path, N_ATOMS, 0)
    with open(path, "r+b") as f:  # the key's first coordinate: the chunk holding rows 4096-
        f.seek(offset - 8)
        assert int.from_bytes(f.read(8), "little") == 0
        f.seek(offset - 8)
        f.write((4096).to_bytes(8, "little"))
    with h5py.File(path, "r") as f:
        assert not f[N_ATOMS][:].any()
    for cache_bytes in (64 << 20, 0):
        with pytest.raises(StoreCorruptedError, match=f"{N_ATOMS} rows 0-299 is damaged"):
            with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
                db[7]


def test_a_large_dataset_opens_its_index_after_a_few_single_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single rows of a dataset counted as large (here: 8 chunks or more) are looked up by HDF5
    until it has looked up a few chunks, then through the index; every row reads as written."""
    from asebytes_nodes.backends._hdf5_btree import ChunkIndex
    from asebytes_nodes.backends.h5md import _direct

    monkeypatch.setattr(_direct, "_INDEX_CHUNKS", 8)
    path = hdf5kit.build(tmp_path / "s.h5", "h5md", 300)
    frames = [hdf5kit.frame("h5md", i) for i in range(300)]
    forces = FORCES.lstrip("/")
    with ASEIO(path, readonly=True, cache_bytes=0) as db:
        grids = db.backend._shared.found
        step = h5py.File(path, "r")[FORCES].chunks[0]
        rows = [k * step for k in range(_direct._LOOKUPS_FIRST + 2)]  # one row in each of 6 chunks
        for j, row in enumerate(rows):
            np.testing.assert_array_equal(db[row].get_forces(), frames[row].get_forces())
            opened = grids[forces].index
            if j < _direct._LOOKUPS_FIRST:
                assert opened is True, (j, opened)
            else:
                assert isinstance(opened, ChunkIndex), (j, opened)
        assert grids[forces].lookups == _direct._LOOKUPS_FIRST

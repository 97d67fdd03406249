"""Faults on the H5MD backend (issue 12): kills, full disks, concurrent writers, damaged files.

Matrix (helpers in ``tests/hdf5kit.py``, shared with the MDTraj tests):

* kill -9 at exact moments: before and after a spread of the operation's write calls to the
  file, and between the final fsync and the journal's deletion; operations extend, ``db[i] =``
  (new atom count), slice assignment, update, drop; a gzip store of 800 frames written in
  several commits (5 kills per operation). ``-m slow``: 30 call positions per operation and
  10 random kill moments (``kill_during``) per operation on a 3,000-frame store.
* full disk: an 8 MiB tmpfs, extend until it overflows (DiskFullError, last commit intact,
  no journal left, a write works after space is freed); ENOSPC in the middle of HDF5's writes.
* two writer processes and a reader process on one store; a writer locked out by the timeout.
* damage: a flipped bit in a data chunk (error names dataset and rows, ``check()`` lists it);
  bit flips and truncations at random offsets (never wrong data, never a raw error).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

BACKEND = "h5md"


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hdf5kit.build(tmp_path_factory.mktemp("h5md-seed") / "seed.h5", BACKEND, 800)


@pytest.mark.parametrize("name", hdf5kit.OPS[BACKEND])
def test_kill_at_write_calls(tmp_path: Path, seed: Path, name: str) -> None:
    hdf5kit.kill_at_io(seed, tmp_path, BACKEND, name, trials=2)


def test_kill_at_random_moments_of_extend(tmp_path: Path, seed: Path) -> None:
    landed = hdf5kit.kill_at_random(seed, tmp_path, BACKEND, "extend", 3, random.Random(1))
    assert landed > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", hdf5kit.OPS[BACKEND])
def test_kill_many(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, name: str) -> None:
    big = hdf5kit.build(tmp_path_factory.mktemp("big") / "big.h5", BACKEND, 3000)
    hdf5kit.kill_at_io(big, tmp_path, BACKEND, name, trials=30)
    assert hdf5kit.kill_at_random(big, tmp_path, BACKEND, name, 10, random.Random(name)) > 0


def test_full_disk(tmp_path: Path) -> None:
    hdf5kit.full_disk(tmp_path, BACKEND)


def test_two_writers_and_a_reader(tmp_path: Path) -> None:
    hdf5kit.writers_and_reader(tmp_path, BACKEND)


def test_writer_waits_then_store_locked_error(tmp_path: Path) -> None:
    hdf5kit.locked_out(tmp_path, BACKEND)


def test_flipped_bit_in_a_chunk(tmp_path: Path) -> None:
    hdf5kit.flipped_chunk(tmp_path, BACKEND, "/particles/atoms/position/value")


def test_damaged_files(tmp_path: Path) -> None:
    counts = hdf5kit.damage(tmp_path, BACKEND, flips=25, cuts=5)
    print("H5MD damage outcomes:", counts)


@pytest.mark.slow
def test_damaged_files_many(tmp_path: Path) -> None:
    counts = hdf5kit.damage(tmp_path, BACKEND, flips=300, cuts=60, seed=1)
    print("H5MD damage outcomes:", counts)


def test_layout_1_store_opens_and_takes_writes(tmp_path: Path) -> None:
    """``tests/data/h5md_v1.h5``: 6 frames written by layout 1 (commit e04f21f), no checksums."""
    import h5py
    from faultkit import frame_version, versioned_frame

    from asebytes_nodes import ASEIO

    path = hdf5kit.copy_store(Path(__file__).parents[1] / "data" / "h5md_v1.h5", tmp_path / "v1.h5")
    with ASEIO(path) as db:
        assert db.backend.format_info()["version"] == 1
        assert [frame_version(a) for a in db] == [(i, 0) for i in range(6)]
        assert db.backend.check() == []
        db.extend([versioned_frame(i) for i in range(6, 9)])
    with ASEIO(path, readonly=True) as db:
        assert [frame_version(a) for a in db] == [(i, 0) for i in range(9)]
        assert db.backend.format_info()["version"] == 1 and db.backend.check() == []
    with h5py.File(path, "r") as f:
        assert not f["particles/atoms/position/value"].fletcher32


def test_damaged_table_is_refused(tmp_path: Path) -> None:
    """The column table is JSON in an attribute (unchecksummed heap storage when large): a change
    that still parses, here one more frame, fails its CRC-32 instead of reading wrong rows."""
    import h5py

    from asebytes_nodes import StoreCorruptedError

    path = hdf5kit.build(tmp_path / "t.h5", BACKEND, 20)
    with h5py.File(path, "a") as f:
        attrs = f["parameters/asebytes_nodes/atoms"].attrs
        attrs["asebytes_nodes"] = attrs["asebytes_nodes"].replace('"length": 20', '"length": 21')
    with pytest.raises(StoreCorruptedError, match="CRC-32"):
        hdf5kit.open_store(path, BACKEND, readonly=True)

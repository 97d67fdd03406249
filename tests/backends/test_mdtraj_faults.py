"""Faults on the MDTraj HDF5 backend (issue 12): kills, full disks, concurrent writers, damage.

The same matrix as ``test_h5md_faults.py`` (helpers in ``tests/hdf5kit.py``) on MDTraj files
(one atom count, periodic, float32): kill -9 before and after a spread of each operation's
write calls and before the commit point (extend, ``db[i] =``, slice assignment, update) on a
gzip store of 800 frames; random kill moments of extend; an 8 MiB tmpfs filled by extends;
two writer processes and a reader; a writer locked out; a flipped bit in a coordinates chunk;
bit flips and truncations at random offsets. ``-m slow`` runs many more of each.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

BACKEND = "mdtraj"


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hdf5kit.build(tmp_path_factory.mktemp("mdtraj-seed") / "seed.h5", BACKEND, 800)


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
    hdf5kit.flipped_chunk(tmp_path, BACKEND, "/coordinates")


def test_damaged_files(tmp_path: Path) -> None:
    counts = hdf5kit.damage(tmp_path, BACKEND, flips=25, cuts=5)
    print("MDTraj damage outcomes:", counts)


@pytest.mark.slow
def test_damaged_files_many(tmp_path: Path) -> None:
    counts = hdf5kit.damage(tmp_path, BACKEND, flips=300, cuts=60, seed=1)
    print("MDTraj damage outcomes:", counts)


def test_threads_reading_release_the_lock(tmp_path: Path) -> None:
    """Read calls of several threads overlap; when the last ends, a writer elsewhere gets in."""
    import threading

    path = hdf5kit.build(tmp_path / "threads.h5", BACKEND, 200, compression=None)
    db = hdf5kit.open_store(path, BACKEND, readonly=True)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(8):
                assert len(list(db)) == 200
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    code = hdf5kit.run_in_child(hdf5kit.writer, (str(path), BACKEND, 9000, 1, 10))
    assert code == 0 and len(db) == 210
    db.close()

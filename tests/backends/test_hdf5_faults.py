"""Faults on the HDF5 backends, H5MD and MDTraj (issue 12): kills, full disks, writers, damage.

Matrix (helpers in ``tests/hdf5kit.py``) over both backends (MDTraj files: one atom count,
periodic, float32):

* kill -9 at exact moments: before and after a spread of the operation's write calls to the
  file, and between the final fsync and the journal's deletion; operations extend, ``db[i] =``
  (new atom count), slice assignment, update, drop (where the backend has them); a gzip store of
  800 frames written in several commits. Random kill moments of extend. ``-m slow``: 30 call
  positions per operation and 10 random kill moments (``kill_during``) on a 3,000-frame store.
* full disk: an 8 MiB tmpfs, extend until it overflows (DiskFullError, last commit intact,
  no journal left, a write works after space is freed); ENOSPC in the middle of HDF5's writes.
* two writer processes and a reader process on one store; a writer locked out by the timeout.
* damage: a flipped bit in a data chunk (error names dataset and rows, ``check()`` lists it);
  bit flips and truncations at random offsets (never wrong data, never a raw error).
* fork: a child of a parent that opened and read the store (while another thread of the parent
  held the handle's lock) reads through its own handle and leaves the parent's open.

Backend-specific tests (H5MD's layout-1 fixture and column table, MDTraj's threads) are in
``test_h5md_faults.py`` and ``test_mdtraj_faults.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

BACKENDS = ("h5md", "mdtraj")
#: A dataset of data chunks per backend, where a flipped bit must be found.
CHUNKED = {"h5md": "/particles/atoms/position/value", "mdtraj": "/coordinates"}
CASES = [(backend, name) for backend in BACKENDS for name in hdf5kit.OPS[backend]]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {b: hdf5kit.build(tmp_path_factory.mktemp(f"{b}-seed") / "seed.h5", b, 800) for b in BACKENDS}


@pytest.mark.parametrize(("backend", "name"), CASES)
def test_kill_at_write_calls(tmp_path: Path, seeds: dict[str, Path], backend: str, name: str) -> None:
    hdf5kit.kill_at_io(seeds[backend], tmp_path, backend, name, trials=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_at_random_moments_of_extend(tmp_path: Path, seeds: dict[str, Path], backend: str) -> None:
    landed = hdf5kit.kill_at_random(seeds[backend], tmp_path, backend, "extend", 3, random.Random(1))
    assert landed > 0


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "name"), CASES)
def test_kill_many(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, backend: str, name: str) -> None:
    big = hdf5kit.build(tmp_path_factory.mktemp("big") / "big.h5", backend, 3000)
    hdf5kit.kill_at_io(big, tmp_path, backend, name, trials=30)
    assert hdf5kit.kill_at_random(big, tmp_path, backend, name, 10, random.Random(name)) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disk(tmp_path: Path, backend: str) -> None:
    hdf5kit.full_disk(tmp_path, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_writers_and_a_reader(tmp_path: Path, backend: str) -> None:
    hdf5kit.writers_and_reader(tmp_path, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_waits_then_store_locked_error(tmp_path: Path, backend: str) -> None:
    hdf5kit.locked_out(tmp_path, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flipped_bit_in_a_chunk(tmp_path: Path, backend: str) -> None:
    hdf5kit.flipped_chunk(tmp_path, backend, CHUNKED[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_files(tmp_path: Path, backend: str) -> None:
    counts = hdf5kit.damage(tmp_path, backend, flips=25, cuts=5)
    print(f"{backend} damage outcomes:", counts)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_files_many(tmp_path: Path, backend: str) -> None:
    counts = hdf5kit.damage(tmp_path, backend, flips=300, cuts=60, seed=1)
    print(f"{backend} damage outcomes:", counts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forked_child_opens_its_own_handle(tmp_path: Path, backend: str) -> None:
    """The shared handle policy (``backends/_hdf5_files.py``): after fork the child reopens the
    file lazily and never uses or closes the parent's h5py handle."""
    path = hdf5kit.build(tmp_path / "f.h5", backend, 40)
    db = hdf5kit.open_store(path, backend, readonly=True)
    expected = hdf5kit.signature(db[7])
    shared = db.backend._shared  # type: ignore[attr-defined]
    inherited = shared.file
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:  # another thread of the parent is inside a read when the child forks
        with shared.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(30)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(db, inherited, results), daemon=True)
    child.start()
    release.set()
    holder.join(30)
    found = results.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert found == {"row": expected, "own handle": True, "pid": child.pid, "inherited open": True}
    assert shared.file is inherited and inherited.id.valid  # the parent's handle is untouched
    assert hdf5kit.signature(db[7]) == expected
    db.close()


def _read_in_child(db: Any, inherited: Any, results: Any) -> None:
    shared = db.backend._shared
    row = hdf5kit.signature(db[7])
    results.put(
        {
            "row": row,
            "own handle": shared.file is not inherited,
            "pid": shared.pid if shared.pid == os.getpid() else None,
            "inherited open": bool(inherited.id.valid),
        }
    )

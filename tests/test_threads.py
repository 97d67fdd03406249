"""One handle shared by threads: its writes take turns on every writable backend.

``flock`` locks belong to an open file, not a thread, so a store's lock alone lets every thread
of a process that shares the handle through; a Zarr handle used by two extending threads lost
committed rows and mixed columns of different frames before its lock also serialised threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO, StoreLockedError
from asebytes_nodes.backends._safety import StoreLock


def frame(step: int) -> Atoms:
    rng = np.random.default_rng(step)
    atoms = bulk("Cu", cubic=True).repeat((1 + step % 3, 1, 1))
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.info["step"] = step
    forces = np.full((len(atoms), 3), float(step))
    atoms.calc = SinglePointCalculator(atoms, energy=float(step), forces=forces)
    return atoms


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_threads_sharing_a_handle_write_in_turn(tmp_path: Path, suffix: str) -> None:
    db = ASEIO(tmp_path / f"s{suffix}")
    db.extend([frame(s) for s in range(10)])
    errors: list[BaseException] = []

    def extend(start: int) -> None:
        try:
            for c in range(6):
                db.extend([frame(start + 10 * c + i) for i in range(10)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def replace() -> None:
        try:
            for k in range(12):
                db[k % 10] = frame(k % 10)  # the same frame again: rows stay checkable
                db.update(k % 10, info={"step": k % 10})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=extend, args=(s,)) for s in (1000, 2000)]
    threads.append(threading.Thread(target=replace))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    again = ASEIO(tmp_path / f"s{suffix}", readonly=True)
    steps = [a.info["step"] for a in again]
    assert len(again) == 130 and sorted(steps) == [*range(10), *range(1000, 1060), *range(2000, 2060)]
    for atoms in again:  # every row whole: all its columns from one frame
        expected = frame(atoms.info["step"])
        assert len(atoms) == len(expected)
        np.testing.assert_array_equal(atoms.positions, expected.positions)
        assert atoms.get_potential_energy() == expected.get_potential_energy()
        np.testing.assert_array_equal(atoms.get_forces(), expected.get_forces())


def test_store_lock_serialises_threads_and_times_out(tmp_path: Path) -> None:
    lock = StoreLock(tmp_path / "lock", store="s", timeout=0.3)
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with lock.exclusive():
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    start = time.monotonic()
    with pytest.raises(StoreLockedError, match="another thread of this process"):
        with lock.exclusive():
            pass
    assert time.monotonic() - start >= 0.29
    leave.set()
    holder.join()
    with lock.exclusive(), lock.exclusive():  # free again, and re-entrant in its thread
        pass

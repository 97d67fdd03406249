"""MDTraj-specific faults (issue 12): read calls of several threads and the writer lock.

The fault matrix shared with H5MD (kills, full disks, writers, damage) is in
``test_hdf5_faults.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

BACKEND = "mdtraj"


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

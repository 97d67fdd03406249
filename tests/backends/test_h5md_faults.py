"""H5MD-specific faults (issue 12): a layout-1 store, and a damaged column table.

The fault matrix shared with MDTraj (kills, full disks, writers, damage) is in
``test_hdf5_faults.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

BACKEND = "h5md"


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


@pytest.mark.parametrize("counts", [(2, 3, 4), (4, 4, 4)], ids=["ragged", "fixed"])
def test_an_atom_count_beyond_the_particles_is_refused_in_batches(
    tmp_path: Path, counts: tuple[int, ...]
) -> None:
    """A damaged ``n_atoms`` larger than the per-atom datasets' particle axis would gather
    another frame's atoms (ragged) or cut atoms off (fixed): batches name the dataset instead."""
    import h5py
    import numpy as np
    from ase import Atoms

    from asebytes_nodes import ASEIO, StoreCorruptedError

    path = tmp_path / "c.h5"
    with ASEIO(path) as db:
        db.extend([Atoms("H" * n, positions=np.full((n, 3), float(i))) for i, n in enumerate(counts)])
        assert db[[2, 0]].to_batch(["arrays.positions"])["n_atoms"].tolist() == [counts[2], counts[0]]
    with h5py.File(path, "r+") as f:
        f["parameters/asebytes_nodes/atoms/n_atoms"][2] = 7
    with ASEIO(path) as db, pytest.raises(StoreCorruptedError, match="position/value holds 4 per frame"):
        db[[0, 2]].to_batch(["arrays.positions"])


@pytest.mark.parametrize("backend", ["h5md", "mdtraj"])
def test_a_cut_h5_file_is_reported_damaged_not_unrecognised(tmp_path: Path, backend: str) -> None:
    """``.h5`` is chosen by content: a file HDF5 cannot open but that carries its signature
    (ours or MDTraj's, cut short) is reported damaged by the default backend, not as one that no
    backend recognises; a file without the signature stays unrecognised, an empty one is named."""
    from faultkit import truncate

    from asebytes_nodes import ASEIO, BackendNotFoundError, StoreCorruptedError, StoreNotFoundError

    path = hdf5kit.build(tmp_path / "cut.h5", backend, 20)
    truncate(path, path.stat().st_size - 100)
    for readonly in (True, False):
        with pytest.raises(StoreCorruptedError, match="cut.h5: HDF5 cannot read the file.*truncated"):
            ASEIO(path, readonly=readonly)
    other = tmp_path / "other.h5"
    other.write_bytes(b"not HDF5 at all\n" * 40)
    with pytest.raises(BackendNotFoundError, match="other.h5: not an HDF5 file"):
        ASEIO(other, readonly=True)
    empty = tmp_path / "empty.h5"
    empty.touch()
    with pytest.raises(StoreNotFoundError, match="empty.h5: an empty file, no H5MD store"):
        ASEIO(empty, readonly=True)


@pytest.mark.parametrize("backend", ["h5md", "mdtraj"])
def test_a_write_held_past_lock_timeout_is_named(tmp_path: Path, backend: str) -> None:
    """Another process's write (its lock on ``<file>.lock``) held past ``lock_timeout=``: opening
    raises StoreLockedError, also through the ``.h5`` content sniffer (which said no backend
    recognised the file, after waiting twice)."""
    import subprocess
    import sys
    import time

    from asebytes_nodes import ASEIO, StoreLockedError

    path = hdf5kit.build(tmp_path / "held.h5", backend, 5)
    hold = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, f"{path}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(StoreLockedError, match="held.h5.*locked"):
            ASEIO(path, backend=backend, lock_timeout=0.5)
        with pytest.raises(StoreLockedError, match="held.h5.*locked"):
            ASEIO(path, readonly=True)  # sniffed: the lock, not the content, is what stops it
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait()
    assert len(ASEIO(path, readonly=True)) == 5
